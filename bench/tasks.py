"""Issue 3 benchmarks (a) and (c) and issue 16's RunTask cost, side by
side in one run.

(a) RunTask -> RUNNING latency through `berth up`, against two peers on
    the same engine, interleaved, N runs each; p50, p99 and the ratios:
    - the Engine API's own create + start (one HTTP connection to the
      engine's socket, as the agent has), of the same image with the same
      container configuration and limits: Berth's first container is
      inspected and its Config and HostConfig replayed, so the engine does
      the same work in both;
    - `docker run -d`, which also pays the docker CLI's start-up.
    Berth's time is from the RunTask call until DescribeTasks says RUNNING
    (polled every POLL_MS, see Poller); each Berth run is split into phases by the
    timestamps Berth itself records (createdAt by the server, the pull
    and start times by the agent). Polling costs CPU that the engine's
    container start, CPU-bound on two cores, then lacks: with boto3
    signing every poll (about 350 us of CPU a poll, client and server),
    2 ms polls made Berth's create + start 14 ms slower than the peer's
    and 10 ms polls about 4 ms. The poller now costs about 90 us a poll
    (see Poller), and the default is 5 ms: about 2.5 ms of wait on
    average, counted against Berth.
(c) Resident memory of a `berth agent` process with 50 running tasks.

Prints markdown tables; raw numbers go to bench/results/tasks-*.json.
"""

import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import boto3
import botocore.config

BERTH = os.environ.get("BERTH_BIN", "target/release/berth")
IMAGE = "berth-test/busybox:latest"
RUNS = int(os.environ.get("RUNS", "50"))
POLL_MS = float(os.environ.get("POLL_MS", "5"))
SETTLE = float(os.environ.get("SETTLE", "0.5"))


class Engine:
    """The Engine API over its unix socket, one kept-alive connection."""

    def __init__(self, path="/var/run/docker.sock"):
        import http.client

        class Conn(http.client.HTTPConnection):
            def connect(self):
                self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self.sock.connect(path)

        self.conn = Conn("localhost")

    def call(self, method, path, body=None):
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"} if data is not None else {}
        self.conn.request(method, path, body=data, headers=headers)
        r = self.conn.getresponse()
        out = r.read()
        if r.status >= 300:
            raise RuntimeError(f"{method} {path}: {r.status} {out[:200]!r}")
        return json.loads(out) if out else None

    def create_start(self, body, name):
        cid = self.call("POST", f"/containers/create?name={name}", body)["Id"]
        self.call("POST", f"/containers/{cid}/start")
        return cid


class Poller:
    """DescribeTasks for one task, signed as boto3 signs it, over one kept-
    alive connection. The benchmark's client runs on the same two cores as
    the engine, and whatever CPU it spends between RunTask and RUNNING the
    engine's container start lacks: boto3 spends about 250 us per call
    (mostly signing) and http.client about 100 us more. So the request is
    signed once per task (SigV4 lets the same signed request be sent again
    for five minutes) and its bytes are written to the socket as they are;
    the answer is read by its Content-Length and decoded as JSON. Same
    request on the wire, same answer read, at a fraction of the CPU."""

    def __init__(self, url, arn):
        import urllib.parse
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest
        from botocore.credentials import Credentials
        u = urllib.parse.urlsplit(url)
        body = json.dumps({"cluster": "default", "tasks": [arn]}).encode()
        req = AWSRequest("POST", url + "/", data=body, headers={
            "Content-Type": "application/x-amz-json-1.1",
            "X-Amz-Target": "AmazonEC2ContainerServiceV20141113.DescribeTasks"})
        SigV4Auth(Credentials(os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"]), "ecs", "us-east-1").add_auth(req)
        head = [f"POST / HTTP/1.1", f"Host: {u.netloc}", f"Content-Length: {len(body)}"]
        head += [f"{k}: {v}" for k, v in req.headers.items()]
        self.request = ("\r\n".join(head) + "\r\n\r\n").encode() + body
        self.sock = socket.create_connection((u.hostname, u.port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def status(self):
        self.sock.sendall(self.request)
        while b"\r\n\r\n" not in self.buf:
            self.buf += self.recv()
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode().split("\r\n")
        length = next(int(v) for k, _, v in (x.partition(":") for x in lines[1:]) if k.lower() == "content-length")
        while len(self.buf) < length:
            self.buf += self.recv()
        out, self.buf = json.loads(self.buf[:length]), self.buf[length:]
        if lines[0].split()[1] != "200":
            raise RuntimeError(f"DescribeTasks: {lines[0]} {out}")
        return out["tasks"][0]["lastStatus"]

    def recv(self):
        data = self.sock.recv(65536)
        if not data:
            raise RuntimeError("DescribeTasks: connection closed")
        return data


def replay_body(info):
    """Create body that makes the engine build the container Berth made."""
    cfg, host = info["Config"], dict(info["HostConfig"])
    labels = {"berth-bench": "engine"}
    return {"Image": cfg["Image"], "Cmd": cfg["Cmd"], "Env": cfg.get("Env"), "Labels": labels,
            "Entrypoint": cfg.get("Entrypoint"), "WorkingDir": cfg.get("WorkingDir"), "User": cfg.get("User"),
            "StopTimeout": cfg.get("StopTimeout"), "HostConfig": host}


def ts(t, key):
    v = t.get(key)
    return v.timestamp() if v is not None else None


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def client(url, service="ecs"):
    return boto3.client(service, endpoint_url=url, region_name="us-east-1", aws_access_key_id=os.environ["AWS_ACCESS_KEY_ID"],
                        aws_secret_access_key=os.environ["AWS_SECRET_ACCESS_KEY"], config=botocore.config.Config(retries={"max_attempts": 1}))


def wait_health(url, proc):
    import urllib.request
    for _ in range(600):
        if proc.poll() is not None:
            sys.exit(f"berth exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url + "/health", timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    sys.exit("berth did not come up")


def join_token(url, *target):
    """A join token for `berth agent --token` (`--cluster NAME` or `--capacity fargate`), signed with the
    credentials bench/credentials.sh exported."""
    p = subprocess.run([BERTH, "token", "create", "--server", url, *target], capture_output=True, text=True,
                       stdin=subprocess.DEVNULL, check=True)
    return p.stdout.strip()


def wait_agent(ecs):
    """Until the default cluster's first instance has its agent connected."""
    for _ in range(200):
        arns = ecs.list_container_instances()["containerInstanceArns"]
        if arns and ecs.describe_container_instances(containerInstances=arns)["containerInstances"][0]["agentConnected"]:
            return
        time.sleep(0.05)


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def rss_kib(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def cleanup(label):
    ids = subprocess.run(["docker", "ps", "-aq", "--filter", f"label={label}"], capture_output=True, text=True).stdout.split()
    if ids:
        subprocess.run(["docker", "rm", "-f", *ids], capture_output=True)


def latency(tmp):
    os.makedirs(tmp, exist_ok=True)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([BERTH, "up", "--listen", f"127.0.0.1:{port}", "--data-dir", tmp, "--log", "warn",
                             "--image-pull-behavior", "prefer-cached"], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=open(os.path.join(tmp, "up.log"), "ab"))
    try:
        wait_health(url, proc)
        ecs = client(url)
        wait_agent(ecs)
        ecs.register_task_definition(family="bench", containerDefinitions=[
            {"name": "c", "image": IMAGE, "memory": 16, "command": ["sleep", "600"], "stopTimeout": 1}])
        engine = Engine()
        body = None
        berth, api, docker, phases = [], [], [], []

        def run_berth():
            nonlocal body
            w0, t0 = time.time(), time.perf_counter()
            arn = ecs.run_task(taskDefinition="bench")["tasks"][0]["taskArn"]
            w1 = time.time()
            poller = Poller(url, arn)
            while poller.status() != "RUNNING":
                time.sleep(POLL_MS / 1000)
            took = time.perf_counter() - t0
            w2 = time.time()
            t = ecs.describe_tasks(tasks=[arn])["tasks"][0]
            if body is None:
                body = replay_body(engine.call("GET", f"/containers/{t['containers'][0]['runtimeId']}/json"))
            created, pull0, pull1, started = (ts(t, k) for k in ("createdAt", "pullStartedAt", "pullStoppedAt",
                                                                 "startedAt"))
            split = {"request_to_created": created - w0, "created_to_response": w1 - created,
                     "created_to_agent": pull0 - created, "image_check": pull1 - pull0,
                     "create_start_inspect": started - pull1, "report_and_poll": w2 - started}
            return took, (arn, split)

        def run_engine(i):
            t0 = time.perf_counter()
            engine.create_start(body, f"berth-bench-engine-{i}")
            return time.perf_counter() - t0, None

        def run_docker():
            t0 = time.perf_counter()
            subprocess.run(["docker", "run", "-d", "--label", "berth-bench=raw", IMAGE, "sleep", "600"],
                           check=True, capture_output=True)
            return time.perf_counter() - t0, None

        for i in range(RUNS + 3):
            # The three take turns going first, and each starts on an idle
            # engine: what one leaves behind (a stopping container, its
            # network teardown) must not land on the next one's clock.
            runs = [("berth", run_berth), ("engine", lambda: run_engine(i)), ("docker", run_docker)]
            took = {}
            for name, f in runs[i % 3:] + runs[:i % 3]:
                time.sleep(SETTLE)
                took[name] = f()
            arn, split = took["berth"][1]
            if i >= 3:  # warm-up runs are not counted
                berth.append(took["berth"][0])
                api.append(took["engine"][0])
                docker.append(took["docker"][0])
                phases.append(split)
            ecs.stop_task(task=arn)
            cleanup("berth-bench=raw")
            cleanup("berth-bench=engine")
            while ecs.describe_tasks(tasks=[arn])["tasks"][0]["lastStatus"] != "STOPPED":
                time.sleep(0.02)
        return berth, api, docker, phases
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        cleanup("com.amazonaws.ecs.task-definition-family=bench")
        # The Fargate host of `berth up` keeps warm namespaces for its next
        # start; this data directory has none.
        cleanup("berth.warm-address")


def agent_memory(tmp):
    os.makedirs(tmp, exist_ok=True)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([BERTH, "server", "--listen", f"127.0.0.1:{port}", "--data-dir", os.path.join(tmp, "s"),
                               "--log", "warn"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=open(os.path.join(tmp, "server.log"), "ab"))
    agent = None
    try:
        wait_health(url, server)
        ecs = client(url)
        ecs.create_cluster(clusterName="mem")
        agent = subprocess.Popen([BERTH, "agent", "--server", url, "--cluster", "mem", "--data-dir", os.path.join(tmp, "a"),
                                  "--token", join_token(url, "--cluster", "mem"),
                                  "--log", "warn", "--image-pull-behavior", "prefer-cached"], stdin=subprocess.DEVNULL,
                                 stdout=subprocess.DEVNULL, stderr=open(os.path.join(tmp, "agent.log"), "ab"))
        for _ in range(200):
            if ecs.list_container_instances(cluster="mem")["containerInstanceArns"]:
                break
            time.sleep(0.05)
        time.sleep(0.5)
        idle = rss_kib(agent.pid)
        ecs.register_task_definition(family="mem", containerDefinitions=[
            {"name": "c", "image": IMAGE, "memory": 8, "command": ["sleep", "600"], "stopTimeout": 1}])
        arns = []
        for _ in range(5):
            arns += [t["taskArn"] for t in ecs.run_task(cluster="mem", taskDefinition="mem", count=10)["tasks"]]
        deadline = time.time() + 300
        while time.time() < deadline:
            running = [t for t in ecs.describe_tasks(cluster="mem", tasks=arns)["tasks"] if t["lastStatus"] == "RUNNING"]
            if len(running) == 50:
                break
            time.sleep(0.5)
        time.sleep(2)
        samples = []
        for _ in range(10):
            samples.append(rss_kib(agent.pid))
            time.sleep(0.5)
        return idle, samples, len(running)
    finally:
        if agent:
            agent.terminate()
            agent.wait(timeout=30)
        server.terminate()
        server.wait(timeout=30)
        cleanup("com.amazonaws.ecs.cluster=mem")


def main():
    with tempfile.TemporaryDirectory() as tmp:
        berth, api, docker, phases = latency(os.path.join(tmp, "lat"))
        # MEMORY=0 leaves (c) out, for quick runs of (a) alone.
        idle, samples, running = (agent_memory(os.path.join(tmp, "mem")) if os.environ.get("MEMORY", "1") != "0"
                                  else (0, [0], 0))
    out = {"runs": RUNS, "poll_ms": POLL_MS, "berth_s": berth, "engine_api_s": api, "docker_s": docker,
           "berth_phases_s": phases, "agent_idle_kib": idle,
           "agent_50_tasks_kib": samples, "running": running}
    os.makedirs("bench/results", exist_ok=True)
    with open(time.strftime("bench/results/tasks-%Y%m%d-%H%M%S.json"), "w") as f:
        json.dump(out, f)
    bp50, bp99 = pct(berth, 50), pct(berth, 99)
    print(f"\n(a) RunTask -> RUNNING against the Engine API and docker run -d, {RUNS} runs each, interleaved\n")
    print("| | p50 ms | p99 ms | mean ms | Berth p50 ratio |")
    print("|---|---|---|---|---|")
    print(f"| Berth RunTask -> RUNNING (polled every {POLL_MS:g} ms) | {bp50*1000:.1f} | {bp99*1000:.1f} "
          f"| {statistics.mean(berth)*1000:.1f} | |")
    for name, xs in (("Engine API create + start", api), ("docker run -d", docker)):
        print(f"| {name} | {pct(xs, 50)*1000:.1f} | {pct(xs, 99)*1000:.1f} | {statistics.mean(xs)*1000:.1f} "
              f"| {bp50/pct(xs, 50):.2f}x |")
    print("\nWhere Berth's time goes (from its own timestamps; medians, ms)\n")
    print("| phase | p50 ms | mean ms |")
    print("|---|---|---|")
    for k in phases[0]:
        xs = [p[k] for p in phases]
        print(f"| {k} | {pct(xs, 50)*1000:.1f} | {statistics.mean(xs)*1000:.1f} |")
    mib = max(samples) / 1024
    print(f"\n(c) berth agent resident memory: idle {idle/1024:.1f} MiB; with {running} running tasks "
          f"max {mib:.1f} MiB, median {statistics.median(samples)/1024:.1f} MiB (target <= 15 MiB)")


if __name__ == "__main__":
    main()

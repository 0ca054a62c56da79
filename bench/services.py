"""Issue 4 benchmarks: services, Berth against Docker Swarm, same image,
same engine, same run.

(a) create a 20-replica service until all 20 tasks are RUNNING;
(b) `docker kill` of one task's container until a replacement is RUNNING;
(c) host loss (an agent and its containers killed) until the lost tasks'
    replacements RUNNING elsewhere; Swarm's second node is a second
    dockerd in its own network namespace, joined over a veth pair, whose
    processes (engine, containerd, containers) are all killed;
(d) rolling update of 20 tasks to a new task definition (new arguments),
    until the update is complete.

Berth is `berth server` with two `berth agent`s on the local engine (two
"hosts"); Swarm is a single-node swarm on the same engine. Both sides are
driven through their APIs and polled every 10 ms: Berth with boto3, Swarm
with the Engine API over its unix socket. Prints markdown tables; raw
numbers go to bench/results/services-*.json.
"""

import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

import boto3
import botocore.config

BERTH = os.environ.get("BERTH_BIN", "target/release/berth")
IMAGE = "berth-test/busybox:latest"
RUNS = int(os.environ.get("RUNS", "5"))
KILLS = int(os.environ.get("KILLS", "15"))
POLL = 0.01


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


class Engine(http.client.HTTPConnection):
    """The Docker Engine API on its unix socket."""

    def __init__(self):
        super().__init__("localhost")

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect("/var/run/docker.sock")

    def call(self, method, path, body=None):
        self.request(method, path, body=json.dumps(body) if body is not None else None,
                     headers={"Content-Type": "application/json"})
        r = self.getresponse()
        data = r.read()
        if r.status >= 300:
            raise RuntimeError(f"{method} {path}: {r.status} {data[:300]!r}")
        return json.loads(data) if data else None


def running_swarm_tasks(engine, service, spec_version=None):
    f = json.dumps({"service": [service], "desired-state": ["running"]})
    tasks = engine.call("GET", f"/tasks?filters={urlquote(f)}")
    return [t for t in tasks if t["Status"]["State"] == "running"
            and (spec_version is None or t.get("Spec", {}).get("ContainerSpec", {}).get("Args") == spec_version)]


def urlquote(s):
    import urllib.parse
    return urllib.parse.quote(s)


def swarm_spec(name, replicas, args):
    # StopGracePeriod matches the Berth task definition's stopTimeout (1 s):
    # `sleep` as PID 1 ignores SIGTERM, so both sides wait the full period.
    return {"Name": name, "TaskTemplate": {"ContainerSpec": {"Image": IMAGE, "Args": args, "Command": None,
                                                             "StopGracePeriod": 1_000_000_000},
                                           "RestartPolicy": {"Condition": "any"}},
            "Mode": {"Replicated": {"Replicas": replicas}}, "Labels": {"berth-bench": "swarm"}}


LINK = {"ns": "berth-swarm2", "host": "10.232.7.1", "node": "10.232.7.2", "veth": "bsw2h", "peer": "bsw2n"}
SOCK2 = "/run/berth-swarm2/docker.sock"


def sh(*args, check=True):
    return subprocess.run(args, capture_output=True, text=True, check=check, stdin=subprocess.DEVNULL)


class SecondNode:
    """A second Docker Engine in its own network namespace, for Swarm's
    two-node host-loss run."""

    def __init__(self):
        ns = LINK["ns"]
        sh("ip", "netns", "add", ns)
        sh("ip", "link", "add", LINK["veth"], "type", "veth", "peer", "name", LINK["peer"])
        sh("ip", "link", "set", LINK["peer"], "netns", ns)
        sh("ip", "addr", "add", f"{LINK['host']}/30", "dev", LINK["veth"])
        sh("ip", "link", "set", LINK["veth"], "up")
        sh("ip", "netns", "exec", ns, "ip", "addr", "add", f"{LINK['node']}/30", "dev", LINK["peer"])
        sh("ip", "netns", "exec", ns, "ip", "link", "set", LINK["peer"], "up")
        sh("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")
        self.root = tempfile.mkdtemp(prefix="berth-swarm2-")
        os.makedirs("/run/berth-swarm2", exist_ok=True)
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen(
            ["nsenter", f"--net=/run/netns/{LINK['ns']}", "dockerd", "--data-root", os.path.join(self.root, "data"),
             "--exec-root", "/run/berth-swarm2/exec", "-H", f"unix://{SOCK2}", "--pidfile",
             "/run/berth-swarm2/docker.pid", "--bridge=none", "--iptables=false", "--ip-masq=false"],
            stdout=subprocess.DEVNULL, stderr=open(os.path.join(self.root, "dockerd.log"), "ab"),
            stdin=subprocess.DEVNULL)
        for _ in range(300):
            if sh("docker", "-H", f"unix://{SOCK2}", "info", check=False).returncode == 0:
                return
            time.sleep(0.1)
        raise RuntimeError("the second dockerd did not start")

    def kill_everything(self):
        """The host is gone: its engine, containerd and containers."""
        pids = sh("ip", "netns", "pids", LINK["ns"], check=False).stdout.split()
        if pids:
            sh("kill", "-9", *pids, check=False)
        if self.proc:
            self.proc.wait()

    def close(self):
        self.kill_everything()
        time.sleep(0.5)
        sh("ip", "netns", "del", LINK["ns"], check=False)
        sh("ip", "link", "del", LINK["veth"], check=False)
        for m in sorted((line.split()[1] for line in open("/proc/mounts")
                         if "berth-swarm2" in line.split()[1]), reverse=True):
            sh("umount", m, check=False)
        import shutil
        shutil.rmtree(self.root, ignore_errors=True)
        shutil.rmtree("/run/berth-swarm2", ignore_errors=True)


class Swarm:
    def __init__(self, advertise="127.0.0.1"):
        self.engine = Engine()
        info = self.engine.call("GET", "/info")
        self.joined_here = info["Swarm"]["LocalNodeState"] != "active"
        self.advertise = info["Swarm"].get("NodeAddr", advertise)
        if self.joined_here:
            subprocess.run(["docker", "swarm", "init", "--advertise-addr", advertise], check=True,
                           capture_output=True)
            self.advertise = advertise

    def create(self, name, replicas, args):
        spec = swarm_spec(name, replicas, ["sleep", "600"] if args is None else args)
        sid = self.engine.call("POST", "/services/create", spec)["ID"]
        return sid

    def remove(self, name):
        try:
            self.engine.call("DELETE", f"/services/{name}")
        except RuntimeError:
            return
        deadline = time.time() + 60
        while time.time() < deadline:
            if not subprocess.run(["docker", "ps", "-aq", "--filter", f"label=com.docker.swarm.service.name={name}"],
                                  capture_output=True, text=True).stdout.split():
                return
            time.sleep(0.2)

    def wait_running(self, name, n, args=None, exclude=()):
        while True:
            tasks = [t for t in running_swarm_tasks(self.engine, name, args) if t["ID"] not in exclude]
            if len(tasks) >= n:
                return tasks
            time.sleep(POLL)

    def close(self):
        if self.joined_here:
            subprocess.run(["docker", "swarm", "leave", "--force"], capture_output=True)


class Berth:
    def __init__(self, tmp):
        self.tmp = tmp
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = subprocess.Popen(
            [BERTH, "server", "--listen", f"127.0.0.1:{self.port}", "--data-dir", os.path.join(tmp, "s"), "--log",
             "warn"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=open(os.path.join(tmp, "server.log"), "ab"))
        self.ecs = boto3.client("ecs", endpoint_url=self.url, region_name="us-east-1", aws_access_key_id=os.environ["AWS_ACCESS_KEY_ID"],
                                aws_secret_access_key=os.environ["AWS_SECRET_ACCESS_KEY"],
                                config=botocore.config.Config(retries={"max_attempts": 1}))
        for _ in range(600):
            try:
                self.ecs.list_clusters()
                break
            except Exception:
                time.sleep(0.05)
        self.ecs.create_cluster(clusterName="bench")
        self.token = subprocess.run([BERTH, "token", "create", "--server", self.url, "--cluster", "bench"],
                                    capture_output=True, text=True, stdin=subprocess.DEVNULL, check=True).stdout.strip()
        self.agents = {}
        for i in range(2):
            self.start_agent(f"i-bench{i}", f"local-1{'ab'[i]}")
        self.wait_agents(2)

    def start_agent(self, iid, zone):
        d = os.path.join(self.tmp, iid)
        os.makedirs(d, exist_ok=True)
        self.agents[iid] = subprocess.Popen(
            [BERTH, "agent", "--server", self.url, "--cluster", "bench", "--data-dir", d, "--instance-id", iid,
             "--token", self.token,
             "--availability-zone", zone, "--log", "warn", "--image-pull-behavior", "prefer-cached"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=open(os.path.join(d, "agent.log"), "ab"))

    def wait_agents(self, n):
        while True:
            arns = self.ecs.list_container_instances(cluster="bench")["containerInstanceArns"]
            if len(arns) >= n:
                d = self.ecs.describe_container_instances(cluster="bench", containerInstances=arns)
                up = [c for c in d["containerInstances"] if c["agentConnected"]]
                if len(up) >= n:
                    return {c["ec2InstanceId"]: c["containerInstanceArn"] for c in d["containerInstances"]}
            time.sleep(0.05)

    def register(self, args):
        return self.ecs.register_task_definition(family="bench", containerDefinitions=[
            {"name": "c", "image": IMAGE, "memory": 8, "command": args, "stopTimeout": 1}])["taskDefinition"]["taskDefinitionArn"]

    def running(self, name, taskdef=None):
        arns = []
        token = None
        while True:
            kw = {"nextToken": token} if token else {}
            page = self.ecs.list_tasks(cluster="bench", serviceName=name, **kw)
            arns += page["taskArns"]
            token = page.get("nextToken")
            if not token:
                break
        out = []
        for i in range(0, len(arns), 100):
            out += [t for t in self.ecs.describe_tasks(cluster="bench", tasks=arns[i:i + 100])["tasks"]
                    if t["lastStatus"] == "RUNNING" and (taskdef is None or t["taskDefinitionArn"] == taskdef)]
        return out

    def wait_running(self, name, n, taskdef=None, exclude=()):
        while True:
            tasks = [t for t in self.running(name, taskdef) if t["taskArn"] not in exclude]
            if len(tasks) >= n:
                return tasks
            time.sleep(POLL)

    def remove(self, name):
        try:
            self.ecs.delete_service(cluster="bench", service=name, force=True)
        except Exception:
            return
        while True:
            s = self.ecs.describe_services(cluster="bench", services=[name])["services"]
            if not s or s[0]["status"] == "INACTIVE":
                return
            time.sleep(0.1)

    def close(self):
        for a in self.agents.values():
            a.terminate()
        for a in self.agents.values():
            a.wait(timeout=30)
        self.server.terminate()
        self.server.wait(timeout=30)
        cleanup("com.amazonaws.ecs.cluster=bench")


def cleanup(label):
    ids = subprocess.run(["docker", "ps", "-aq", "--filter", f"label={label}"], capture_output=True,
                         text=True).stdout.split()
    if ids:
        subprocess.run(["docker", "rm", "-f", *ids], capture_output=True)


def kill(engine, container):
    engine.call("POST", f"/containers/{container}/kill")


def bench_create(b, sw, td):
    berth, swarm = [], []
    for i in range(RUNS):
        name = f"create{i}"
        t0 = time.perf_counter()
        b.ecs.create_service(cluster="bench", serviceName=name, taskDefinition=td, desiredCount=20)
        b.wait_running(name, 20)
        berth.append(time.perf_counter() - t0)
        b.remove(name)
        t0 = time.perf_counter()
        sw.create(name, 20, None)
        sw.wait_running(name, 20)
        swarm.append(time.perf_counter() - t0)
        sw.remove(name)
    return berth, swarm


def bench_kill(b, sw, td):
    engine = Engine()
    b.ecs.create_service(cluster="bench", serviceName="heal", taskDefinition=td, desiredCount=5)
    b.wait_running("heal", 5)
    sw.create("heal", 5, None)
    sw.wait_running("heal", 5)
    time.sleep(1)
    berth, swarm = [], []
    for _ in range(KILLS):
        # The longest-running task: a task that dies within seconds of
        # starting counts towards launch throttling, a kill here should not.
        victim = min(b.running("heal"), key=lambda t: t["startedAt"])
        t0 = time.perf_counter()
        kill(engine, victim["containers"][0]["runtimeId"])
        b.wait_running("heal", 5, exclude={victim["taskArn"]})
        berth.append(time.perf_counter() - t0)
        tasks = sw.wait_running("heal", 5)
        victim = tasks[0]
        t0 = time.perf_counter()
        kill(engine, victim["Status"]["ContainerStatus"]["ContainerID"])
        sw.wait_running("heal", 5, exclude={victim["ID"]})
        swarm.append(time.perf_counter() - t0)
        time.sleep(0.5)
    b.remove("heal")
    sw.remove("heal")
    return berth, swarm


def bench_host_loss(b, td):
    engine = Engine()
    out = []
    for i in range(RUNS):
        name = f"loss{i}"
        b.ecs.create_service(cluster="bench", serviceName=name, taskDefinition=td, desiredCount=4)
        tasks = b.wait_running(name, 4)
        instances = b.wait_agents(2)
        victim_iid = f"i-bench{i % 2}"
        victim = instances[victim_iid]
        lost = [t for t in tasks if t["containerInstanceArn"] == victim]
        t0 = time.perf_counter()
        b.agents[victim_iid].kill()
        for t in lost:
            try:
                kill(engine, t["containers"][0]["runtimeId"])
            except RuntimeError:
                pass
        b.wait_running(name, 4, exclude={t["taskArn"] for t in lost})
        out.append(time.perf_counter() - t0)
        b.agents[victim_iid].wait()
        b.start_agent(victim_iid, f"local-1{'ab'[i % 2]}")
        b.wait_agents(2)
        b.remove(name)
    return out


def bench_host_loss_swarm(sw, node):
    """Swarm's side of (c): a service of 4 spread over two nodes; the
    second node's every process is killed; until 4 run on the first."""
    if sw.advertise != LINK["host"]:
        print(f"(c) Swarm skipped: the engine's swarm advertises {sw.advertise}, which the second node "
              "cannot reach; run with the engine out of swarm mode", file=sys.stderr)
        return []
    out = []
    try:
        node.start()
        token = sw.engine.call("GET", "/swarm")["JoinTokens"]["Worker"]
        image = subprocess.Popen(["docker", "save", IMAGE], stdout=subprocess.PIPE)
        subprocess.run(["docker", "-H", f"unix://{SOCK2}", "load"], stdin=image.stdout, check=True,
                       capture_output=True)
        image.wait()
        sh("docker", "-H", f"unix://{SOCK2}", "swarm", "join", "--token", token, "--advertise-addr", LINK["node"],
           f"{LINK['host']}:2377")
        for i in range(RUNS):
            name = f"sloss{i}"
            spec = swarm_spec(name, 4, ["sleep", "600"])
            # Host networking: the second engine runs without a bridge.
            spec["TaskTemplate"]["Networks"] = [{"Target": "host"}]
            sw.engine.call("POST", "/services/create", spec)
            # Swarm spreads a service's tasks over its nodes: 2 and 2.
            tasks = sw.wait_running(name, 4)
            me = sw.engine.call("GET", "/info")["Swarm"]["NodeID"]
            lost = [t["ID"] for t in tasks if t["NodeID"] != me]
            t0 = time.perf_counter()
            node.kill_everything()
            deadline = time.time() + 120
            while time.time() < deadline:
                here = [t for t in running_swarm_tasks(sw.engine, name)
                        if t["NodeID"] == me and t["ID"] not in lost]
                if len(here) >= 4:
                    break
                time.sleep(POLL)
            out.append(time.perf_counter() - t0)
            if len(lost) != 2:
                print(f"(c) Swarm run {i}: {len(lost)} of 4 tasks were on the second node", file=sys.stderr)
            sw.remove(name)
            node.start()
            for _ in range(600):
                ready = [n for n in sw.engine.call("GET", "/nodes") if n["Status"]["State"] == "ready"]
                if len(ready) >= 2:
                    break
                time.sleep(0.1)
    finally:
        sh("docker", "-H", f"unix://{SOCK2}", "swarm", "leave", "--force", check=False)
        for n in sw.engine.call("GET", "/nodes"):
            if n["Status"]["State"] != "ready":
                sh("docker", "node", "rm", "--force", n["ID"], check=False)
    return out


def swarm_update(sw, name, new_args, matched):
    """Swarm's rolling update: its defaults (one task at a time, stop
    first), or `matched` to Berth's default bounds (all 20 at once, new
    ones started before old ones stop, as minimumHealthyPercent 100 and
    maximumPercent 200 do). Seconds until Swarm says it completed."""
    sw.create(name, 20, None)
    sw.wait_running(name, 20)
    svc = sw.engine.call("GET", f"/services/{name}")
    spec = svc["Spec"]
    spec["TaskTemplate"]["ContainerSpec"]["Args"] = new_args
    if matched:
        spec["UpdateConfig"] = {"Parallelism": 20, "Order": "start-first", "FailureAction": "pause",
                                "Monitor": 5_000_000_000}
    t0 = time.perf_counter()
    sw.engine.call("POST", f"/services/{name}/update?version={svc['Version']['Index']}", spec)
    while True:
        s = sw.engine.call("GET", f"/services/{name}")
        if s.get("UpdateStatus", {}).get("State") == "completed":
            break
        time.sleep(POLL)
    took = time.perf_counter() - t0
    sw.remove(name)
    return took


def bench_rolling(b, sw, td):
    berth, swarm, matched = [], [], []
    for i in range(RUNS):
        name = f"roll{i}"
        b.ecs.create_service(cluster="bench", serviceName=name, taskDefinition=td, desiredCount=20)
        b.wait_running(name, 20)
        new_args = ["sleep", str(700 + i)]
        td2 = b.register(new_args)
        t0 = time.perf_counter()
        b.ecs.update_service(cluster="bench", service=name, taskDefinition=td2)
        while True:
            s = b.ecs.describe_services(cluster="bench", services=[name])["services"][0]
            if (len(s["deployments"]) == 1 and s["deployments"][0]["rolloutState"] == "COMPLETED"
                    and s["runningCount"] == 20):
                break
            time.sleep(POLL)
        berth.append(time.perf_counter() - t0)
        b.remove(name)

        swarm.append(swarm_update(sw, name, new_args, False))
        matched.append(swarm_update(sw, name, new_args, True))
    return berth, swarm, matched


def row(label, berth, swarm):
    bp50, bp99 = pct(berth, 50), pct(berth, 99)
    if swarm:
        sp50, sp99 = pct(swarm, 50), pct(swarm, 99)
        return (f"| {label} | {bp50:.2f} | {bp99:.2f} | {sp50:.2f} | {sp99:.2f} | {bp50/sp50:.2f}x |")
    return f"| {label} | {bp50:.2f} | {bp99:.2f} | - | - | - |"


def main():
    only = set(sys.argv[1:]) or {"a", "b", "c", "d"}
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        b = Berth(tmp)
        # The swarm advertises the host end of the second node's link, so
        # that (c) can join a second node to it.
        node = SecondNode() if "c" in only else None
        sw = Swarm(LINK["host"] if node else "127.0.0.1")
        try:
            td = b.register(["sleep", "600"])
            if "a" in only:
                results["a"] = bench_create(b, sw, td)
            if "b" in only:
                results["b"] = bench_kill(b, sw, td)
            if "c" in only:
                results["c"] = (bench_host_loss(b, td), bench_host_loss_swarm(sw, node))
            if "d" in only:
                results["d"] = bench_rolling(b, sw, td)
        finally:
            b.close()
            for name in [s["Spec"]["Name"] for s in sw.engine.call("GET", "/services")
                         if s["Spec"].get("Labels", {}).get("berth-bench") == "swarm"]:
                sw.remove(name)
            sw.close()
            if node:
                node.close()
    os.makedirs("bench/results", exist_ok=True)
    with open(time.strftime("bench/results/services-%Y%m%d-%H%M%S.json"), "w") as f:
        json.dump({"runs": RUNS, "kills": KILLS, "results": results}, f)
    labels = {"a": f"(a) create 20 replicas -> all RUNNING, {RUNS} runs",
              "b": f"(b) docker kill -> replacement RUNNING, {KILLS} kills",
              "c": f"(c) host loss -> replacements RUNNING elsewhere, {RUNS} runs",
              "d": f"(d) rolling update of 20 tasks -> complete, {RUNS} runs"}
    print("\n| benchmark | Berth p50 s | Berth p99 s | Swarm p50 s | Swarm p99 s | ratio (p50) |")
    print("|---|---|---|---|---|---|")
    for k in sorted(results):
        print(row(labels[k], results[k][0], results[k][1]))
        if k == "d":
            print(row("(d) same, Swarm matched to Berth's bounds (parallelism 20, start-first)",
                      results[k][0], results[k][2]))
    for k in sorted(results):
        for side, xs in zip(("berth", "swarm", "swarm matched"), results[k]):
            if xs:
                print(f"{k}: {side} {[round(x, 3) for x in xs]}")


if __name__ == "__main__":
    main()

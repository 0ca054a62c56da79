"""Issue 18, benchmark 9: task credentials and awslogs, on the real path.

One `berth server` and one `berth agent` (release builds) on this machine's
Docker Engine; every figure goes through what a task really uses.

(1) Credentials endpoint latency. A bridge task with a task role runs
    `sleep`; `hey` runs inside the task's network namespace (nsenter), so
    its requests to 169.254.170.2/v2/credentials/ID take the task's own
    path: the per-task DNAT rule, the agent's loopback listener, its
    source-address check. Peer, side by side: a static-file server
    (busybox httpd on the host's loopback) serving a JSON body of the same
    size through an identical DNAT rule for the same task address (port 81
    instead of 80), which is the floor of that path without Berth.
(2) Log shipping. A task with awslogs writes N lines of 100 bytes as fast
    as it can (`yes | head`); Berth's rate is N over the time from the
    container's start to the last line being stored by the Logs API
    (DescribeLogStreams storedBytes). Peer: the engine's own capture of the
    same output (json-file, the container's run time), an upper bound,
    since Berth's copy reads from it.
(3) Write-to-search latency. A task with awslogs writes a line every 50 ms
    carrying the kernel's uptime (10 ms resolution; the host reads the
    same clock); FilterLogEvents is polled every 50 ms and each line's
    latency is when it was first returned minus when it was written. Peer:
    the engine's own `docker logs --follow` of the same container, read in
    the same run.

Prints markdown; raw numbers go to bench/results/logs-*.json.
"""

import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import boto3
import botocore.config

BERTH = os.environ.get("BERTH_BIN", "target/release/berth")
IMAGE = "berth-test/busybox:latest"
LINES = int(os.environ.get("LINES", "1000000"))
HEY_SECONDS = os.environ.get("HEY_SECONDS", "10s")
SEARCH_SECONDS = float(os.environ.get("SEARCH_SECONDS", "20"))
ROOT_KEY = os.environ["AWS_ACCESS_KEY_ID"]
ROOT_SECRET = os.environ["AWS_SECRET_ACCESS_KEY"]


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def client(url, service):
    return boto3.client(service, endpoint_url=url, region_name="us-east-1",
                        config=botocore.config.Config(retries={"max_attempts": 3}))


def wait(what, check, timeout=120, interval=0.05):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = check()
        if v:
            return v
        time.sleep(interval)
    raise RuntimeError(f"timed out waiting for {what}")


def uptime():
    with open("/proc/uptime") as f:
        return float(f.read().split()[0])


def percentile(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def hey(pid, url):
    """hey in the namespace of process `pid`: its p50 and p99 (ms) and rate."""
    out = subprocess.run(["nsenter", "-t", str(pid), "-n", "hey", "-z", HEY_SECONDS, "-c", "1", url],
                         capture_output=True, text=True, check=True).stdout
    p = {m.group(1): float(m.group(2)) * 1000
         for m in re.finditer(r"(\d+)%% in ([0-9.]+) secs".replace("%%", "%"), out)}
    rate = float(re.search(r"Requests/sec:\s+([0-9.]+)", out).group(1))
    codes = re.findall(r"\[(\d{3})\]\s+(\d+) responses", out)
    return {"p50_ms": p["50"], "p99_ms": p["99"], "rps": rate, "codes": dict(codes)}


def main():
    tmp = tempfile.mkdtemp(prefix="berth-bench-logs-")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = dict(os.environ, BERTH_ROOT_ACCESS_KEY_ID=ROOT_KEY, BERTH_ROOT_SECRET_ACCESS_KEY=ROOT_SECRET)
    server = subprocess.Popen([BERTH, "server", "--listen", f"127.0.0.1:{port}", "--data-dir", f"{tmp}/server",
                               "--log", "warn", "--root-access-key-id", ROOT_KEY,
                               "--root-secret-access-key", ROOT_SECRET],
                              env=env, stdout=subprocess.DEVNULL, stderr=open(f"{tmp}/server.log", "w"))
    agent = None
    httpd = None
    results = {"lines": LINES}
    try:
        ecs = client(url, "ecs")
        wait("the server", lambda: _answers(ecs))
        ecs.create_cluster(clusterName="bench")
        token = subprocess.run([BERTH, "token", "create", "--server", url, "--cluster", "bench"],
                               capture_output=True, text=True, stdin=subprocess.DEVNULL, check=True).stdout.strip()
        agent = subprocess.Popen([BERTH, "agent", "--server", url, "--cluster", "bench", "--token", token,
                                  "--data-dir", f"{tmp}/agent", "--log", "warn"],
                                 env=env, stdout=subprocess.DEVNULL, stderr=open(f"{tmp}/agent.log", "w"))
        wait("the agent", lambda: ecs.list_container_instances(cluster="bench")["containerInstanceArns"])
        iam, logs = client(url, "iam"), client(url, "logs")
        trust = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole",
                                                         "Principal": {"Service": "ecs-tasks.amazonaws.com"}}]}
        role = iam.create_role(RoleName="bench-app", AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"]

        def run(family, container, **kw):
            ecs.register_task_definition(family=family, containerDefinitions=[container], **kw)
            def placed():
                r = ecs.run_task(cluster="bench", taskDefinition=family)
                if r["failures"]:
                    print("placement:", r["failures"], file=sys.stderr)
                return r["tasks"] and r["tasks"][0]["taskArn"]

            # The agent's connection may not be recorded yet.
            arn = wait(f"{family} to be placed", placed, timeout=30, interval=0.5)
            return wait(f"{family} to run", lambda: _running(ecs, arn))

        # (1) credentials
        t = run("creds", {"name": "c", "image": IMAGE, "memory": 16, "command": ["sleep", "3600"]},
                taskRoleArn=role)
        cid = t["containers"][0]["runtimeId"]
        info = json.loads(subprocess.run(["docker", "inspect", cid], capture_output=True, text=True).stdout)[0]
        pid, ip = info["State"]["Pid"], info["NetworkSettings"]["IPAddress"]
        env_vars = dict(e.split("=", 1) for e in info["Config"]["Env"])
        path = env_vars["AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"]
        body = subprocess.run(["nsenter", "-t", str(pid), "-n", "wget", "-qO-", f"http://169.254.170.2{path}"],
                              capture_output=True, text=True).stdout
        if not body:
            body = subprocess.run(["docker", "exec", cid, "wget", "-qO-", f"http://169.254.170.2{path}"],
                                  capture_output=True, text=True, check=True).stdout
        www = f"{tmp}/www"
        os.makedirs(www + "/v2/credentials")
        with open(f"{www}/v2/credentials/static", "w") as f:
            f.write(body)
        peer_port = free_port()
        httpd = subprocess.Popen(["busybox", "httpd", "-f", "-p", f"127.0.0.1:{peer_port}", "-h", www])
        rule = ["-s", f"{ip}/32", "-d", "169.254.170.2/32", "-p", "tcp", "--dport", "81",
                "-j", "DNAT", "--to-destination", f"127.0.0.1:{peer_port}"]
        subprocess.run(["iptables", "-w", "-t", "nat", "-I", "PREROUTING", *rule], check=True)
        try:
            rounds = []
            for _ in range(3):
                b = hey(pid, f"http://169.254.170.2{path}")
                p = hey(pid, "http://169.254.170.2:81/v2/credentials/static")
                rounds.append({"berth": b, "static": p})
        finally:
            subprocess.run(["iptables", "-w", "-t", "nat", "-D", "PREROUTING", *rule])
        results["credentials"] = rounds
        ecs.stop_task(cluster="bench", task=t["taskArn"])

        # (2) shipping throughput
        logs.create_log_group(logGroupName="/bench/ship")
        line = "x" * 99
        t = run("ship", {"name": "w", "image": IMAGE, "memory": 64,
                         "command": ["sh", "-c", f"yes {line} | head -n {LINES}"],
                         "logConfiguration": {"logDriver": "awslogs", "options": {
                             "awslogs-group": "/bench/ship", "awslogs-stream-prefix": "b"}}})
        stream = f"b/w/{t['taskArn'].rsplit('/', 1)[1]}"
        want = LINES * (20 + 99)

        def stored():
            s = logs.describe_log_streams(logGroupName="/bench/ship")["logStreams"]
            return s and s[0].get("storedBytes", 0) >= want and time.time()

        cid = t["containers"][0]["runtimeId"]

        def exited():
            # Read before the agent removes the container (after STOPPED).
            out = subprocess.run(["docker", "inspect", cid], capture_output=True, text=True).stdout
            state = json.loads(out)[0]["State"] if out.strip() else None
            if state is None:
                raise RuntimeError("the container was removed before it was seen exited")
            return state if state["Status"] == "exited" else None

        st = wait("the writer to exit", exited, timeout=600, interval=0.02)
        done = wait("every line in the Logs API", stored, timeout=600, interval=0.05)
        started = _epoch(st["StartedAt"])
        finished = _epoch(st["FinishedAt"])
        got = logs.get_log_events(logGroupName="/bench/ship", logStreamName=stream, limit=1)["events"]
        results["shipping"] = {
            "lines": LINES, "berth_seconds": done - started, "engine_seconds": finished - started,
            "berth_lines_per_s": LINES / (done - started), "engine_lines_per_s": LINES / (finished - started),
            "last_line_ok": bool(got) and got[0]["message"] == line,
        }

        # (3) write-to-search latency
        logs.create_log_group(logGroupName="/bench/search")
        t = run("search", {"name": "s", "image": IMAGE, "memory": 16,
                           "command": ["sh", "-c", "while true; do cut -d' ' -f1 /proc/uptime; sleep 0.05; done"],
                           "logConfiguration": {"logDriver": "awslogs", "options": {
                               "awslogs-group": "/bench/search", "awslogs-stream-prefix": "b"}}})
        cid = t["containers"][0]["runtimeId"]
        seen_docker = {}

        def follow_docker():
            p = subprocess.Popen(["docker", "logs", "-f", "--since", "0s", cid], stdout=subprocess.PIPE, text=True)
            end = time.time() + SEARCH_SECONDS
            for l in p.stdout:
                seen_docker.setdefault(l.strip(), uptime())
                if time.time() > end:
                    break
            p.kill()

        th = threading.Thread(target=follow_docker, daemon=True)
        th.start()
        seen = {}
        start_ms = int(time.time() * 1000) - 1000
        end = time.time() + SEARCH_SECONDS
        while time.time() < end:
            token = None
            while True:
                kw = {"nextToken": token} if token else {}
                r = logs.filter_log_events(logGroupName="/bench/search", startTime=start_ms, **kw)
                now = uptime()
                for e in r["events"]:
                    seen.setdefault(e["message"], now)
                token = r.get("nextToken")
                if not token:
                    break
            time.sleep(0.05)
        th.join(timeout=SEARCH_SECONDS + 5)
        lat = [(v - float(k)) * 1000 for k, v in seen.items() if _num(k)]
        dlat = [(v - float(k)) * 1000 for k, v in seen_docker.items() if _num(k)]
        results["search"] = {"samples": len(lat), "p50_ms": percentile(lat, 50), "p99_ms": percentile(lat, 99),
                             "docker_samples": len(dlat), "docker_p50_ms": percentile(dlat, 50),
                             "docker_p99_ms": percentile(dlat, 99)}
        ecs.stop_task(cluster="bench", task=t["taskArn"])
    finally:
        for p in (httpd, agent, server):
            if p:
                p.terminate()
                try:
                    p.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    p.kill()
        subprocess.run("docker ps -aq --filter label=com.amazonaws.ecs.cluster=bench | xargs -r docker rm -f",
                       shell=True, capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)

    stamp = time.strftime("%Y%m%d-%H%M%S")
    os.makedirs("bench/results", exist_ok=True)
    out = f"bench/results/logs-{stamp}.json"
    with open(out, "w") as f:
        json.dump(results, f, indent=1)
    c = results["credentials"]
    print(f"raw: {out}\n")
    print("| credentials endpoint, 1 client | p50 ms | p99 ms | req/s |")
    print("|---|---|---|---|")
    for i, r in enumerate(c, 1):
        for who in ("berth", "static"):
            x = r[who]
            print(f"| round {i}: {who} | {x['p50_ms']:.3f} | {x['p99_ms']:.3f} | {x['rps']:.0f} |")
    ratio = statistics.median(r["berth"]["p99_ms"] / r["static"]["p99_ms"] for r in c)
    print(f"\np99 ratio berth/static (median of rounds): {ratio:.2f}x; "
          f"berth p99 median {statistics.median(r['berth']['p99_ms'] for r in c):.3f} ms (target <= 2 ms)\n")
    s = results["shipping"]
    print(f"| shipping {s['lines']} lines of 100 bytes | seconds | lines/s |")
    print("|---|---|---|")
    print(f"| berth (container start to all stored in the Logs API) | {s['berth_seconds']:.2f} | {s['berth_lines_per_s']:.0f} |")
    print(f"| engine json-file capture (container run time) | {s['engine_seconds']:.2f} | {s['engine_lines_per_s']:.0f} |")
    print(f"\nratio berth/engine: {s['berth_lines_per_s'] / s['engine_lines_per_s']:.2f}x (target >= 100000 lines/s); "
          f"last line intact: {s['last_line_ok']}\n")
    q = results["search"]
    print("| written -> returned | samples | p50 ms | p99 ms |")
    print("|---|---|---|---|")
    print(f"| FilterLogEvents (berth) | {q['samples']} | {q['p50_ms']:.0f} | {q['p99_ms']:.0f} |")
    print(f"| docker logs --follow (engine) | {q['docker_samples']} | {q['docker_p50_ms']:.0f} | {q['docker_p99_ms']:.0f} |")
    print(f"\np99 ratio berth/engine: {q['p99_ms'] / max(q['docker_p99_ms'], 1):.2f}x (target p99 <= 1000 ms)")


def _num(s):
    try:
        float(s)
        return True
    except ValueError:
        return False


def _epoch(docker_time):
    # 2026-12-06T23:59:59.123456789Z
    base, frac = docker_time.rstrip("Z").split(".")
    import calendar
    return calendar.timegm(time.strptime(base, "%Y-%m-%dT%H:%M:%S")) + float("0." + frac)


def _answers(ecs):
    try:
        ecs.list_clusters()
        return True
    except Exception:
        return False


def _running(ecs, arn):
    t = ecs.describe_tasks(cluster="bench", tasks=[arn])["tasks"][0]
    if t["lastStatus"] == "STOPPED":
        raise RuntimeError(f"task stopped: {t.get('stoppedReason')} {t['containers']}")
    return t if t["lastStatus"] == "RUNNING" else None


if __name__ == "__main__":
    sys.exit(main())

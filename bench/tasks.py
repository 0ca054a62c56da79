"""Issue 3 benchmarks (a) and (c), side by side in one run.

(a) RunTask -> RUNNING latency through `berth up`, against `docker run -d`
    of the same image on the same engine, interleaved, N runs each; p50,
    p99 and the ratio. Berth's time is from the RunTask call until
    DescribeTasks says RUNNING (polled every 5 ms); docker's is the wall
    time of `docker run -d`, which returns once the container has started.
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


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def client(url):
    return boto3.client("ecs", endpoint_url=url, region_name="us-east-1", aws_access_key_id="x",
                        aws_secret_access_key="x", config=botocore.config.Config(retries={"max_attempts": 1}))


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
        berth, docker = [], []
        for i in range(RUNS + 3):
            t0 = time.perf_counter()
            arn = ecs.run_task(taskDefinition="bench")["tasks"][0]["taskArn"]
            while ecs.describe_tasks(tasks=[arn])["tasks"][0]["lastStatus"] != "RUNNING":
                time.sleep(0.005)
            b = time.perf_counter() - t0
            t0 = time.perf_counter()
            subprocess.run(["docker", "run", "-d", "--label", "berth-bench=raw", IMAGE, "sleep", "600"],
                           check=True, capture_output=True)
            d = time.perf_counter() - t0
            if i >= 3:  # warm-up runs are not counted
                berth.append(b)
                docker.append(d)
            ecs.stop_task(task=arn)
            cleanup("berth-bench=raw")
            while ecs.describe_tasks(tasks=[arn])["tasks"][0]["lastStatus"] != "STOPPED":
                time.sleep(0.02)
        return berth, docker
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        cleanup("com.amazonaws.ecs.task-definition-family=bench")


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
        berth, docker = latency(os.path.join(tmp, "lat"))
        idle, samples, running = agent_memory(os.path.join(tmp, "mem"))
    out = {"runs": RUNS, "berth_s": berth, "docker_s": docker, "agent_idle_kib": idle,
           "agent_50_tasks_kib": samples, "running": running}
    os.makedirs("bench/results", exist_ok=True)
    with open(time.strftime("bench/results/tasks-%Y%m%d-%H%M%S.json"), "w") as f:
        json.dump(out, f)
    bp50, bp99, dp50, dp99 = pct(berth, 50), pct(berth, 99), pct(docker, 50), pct(docker, 99)
    print(f"\n(a) RunTask -> RUNNING vs docker run -d, {RUNS} runs each, interleaved\n")
    print("| | p50 ms | p99 ms | mean ms |")
    print("|---|---|---|---|")
    print(f"| Berth RunTask -> RUNNING | {bp50*1000:.0f} | {bp99*1000:.0f} | {statistics.mean(berth)*1000:.0f} |")
    print(f"| docker run -d | {dp50*1000:.0f} | {dp99*1000:.0f} | {statistics.mean(docker)*1000:.0f} |")
    print(f"| ratio (target p50 <= 1.15x; Berth p99 <= 1000 ms) | {bp50/dp50:.2f}x | {bp99/dp99:.2f}x | |")
    mib = max(samples) / 1024
    print(f"\n(c) berth agent resident memory: idle {idle/1024:.1f} MiB; with {running} running tasks "
          f"max {mib:.1f} MiB, median {statistics.median(samples)/1024:.1f} MiB (target <= 15 MiB)")


if __name__ == "__main__":
    main()

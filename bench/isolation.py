"""Issue 20 benchmarks for Fargate's own kernel (gVisor), side by side in
one run on one engine:

(a) RunTask -> RUNNING, N runs each, interleaved, on one `berth up`: a
    FARGATE task on a gVisor host (the `berth up` host, local-1a), a
    FARGATE task on a host with `--isolation container` (a second Fargate
    agent, local-1b: hardened containers on the host's kernel), and an EC2
    bridge-mode task. Time from the RunTask call until DescribeTasks says
    RUNNING (polled every 5 ms). Target: gVisor p50 at most 1.5x the
    hardened container's.
(b) Workloads inside a sandbox against the same in a plain container, on
    Berth's runtime (`berth-runsc`, as the agent registers it) against
    runc, the same image, interleaved: a syscall-heavy one (busybox `dd`
    copying 1-byte blocks: 2 syscalls per byte) and a network-heavy one
    (512 MiB over loopback TCP, busybox httpd to wget). Wall time of the
    workload inside one running container (`docker exec`), so container
    start-up is not in it. No target: the ratios say what to expect.

Prints markdown tables; raw numbers go to bench/results/isolation-*.json.
"""

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))
from tasks import BERTH, IMAGE, client, cleanup, free_port, join_token, pct, wait_agent, wait_health  # noqa: E402

RUNS = int(os.environ.get("RUNS", "30"))
# WORK_ONLY=1: only the workloads (b), not RunTask (a).
WORK_ONLY = os.environ.get("WORK_ONLY") == "1"
WORK_RUNS = int(os.environ.get("WORK_RUNS", "5"))


def net(subnet):
    return {"awsvpcConfiguration": {"subnets": [subnet], "securityGroups": ["sg-default"]}}


KINDS = {
    "FARGATE (gVisor)": dict(taskDefinition="bench-fargate", launchType="FARGATE",
                             networkConfiguration=net("subnet-local-1a")),
    "FARGATE (container)": dict(taskDefinition="bench-fargate", launchType="FARGATE",
                                networkConfiguration=net("subnet-local-1b")),
    "EC2 (bridge)": dict(taskDefinition="bench-ec2", launchType="EC2"),
}


def register(ecs):
    c = {"name": "c", "image": IMAGE, "command": ["sleep", "600"], "stopTimeout": 1}
    ecs.register_task_definition(family="bench-fargate", requiresCompatibilities=["FARGATE"], networkMode="awsvpc",
                                 cpu="256", memory="512", containerDefinitions=[c])
    ecs.register_task_definition(family="bench-ec2", containerDefinitions=[dict(c, memory=512, cpu=256)])


def wait_all(ecs, arns, status, poll=0.005):
    while True:
        ts = ecs.describe_tasks(tasks=arns)["tasks"]
        if all(t["lastStatus"] == status for t in ts):
            return ts
        if status == "RUNNING" and any(t["lastStatus"] == "STOPPED" for t in ts):
            sys.exit(f"a task stopped: {[t.get('stoppedReason') for t in ts if t['lastStatus'] == 'STOPPED']}")
        time.sleep(poll)


def isolation(task):
    return {a["name"]: a.get("value") for a in task.get("attributes", [])}.get("berth.isolation")


def run_task_latency(ecs):
    times = {k: [] for k in KINDS}
    for i in range(RUNS + 3):
        for kind, args in KINDS.items():
            t0 = time.perf_counter()
            arn = ecs.run_task(**args)["tasks"][0]["taskArn"]
            task = wait_all(ecs, [arn], "RUNNING")[0]
            took = time.perf_counter() - t0
            want = {"FARGATE (gVisor)": "gvisor"}.get(kind, "container")
            if isolation(task) != want:
                sys.exit(f"{kind} ran with {isolation(task)}")
            if i >= 3:  # warm-up runs are not counted
                times[kind].append(took)
            ecs.stop_task(task=arn)
            wait_all(ecs, [arn], "STOPPED", poll=0.02)
        print(f"run {i}: " + ", ".join(f"{k} {v[-1]*1000:.0f} ms" for k, v in times.items() if v),
              file=sys.stderr, flush=True)
    return times


WORKLOADS = {
    "syscalls: dd 1-byte blocks, 200,000 (400,000 syscalls)":
        "dd if=/dev/zero of=/dev/null bs=1 count=200000 2>/dev/null",
    "network: 512 MiB over loopback TCP (httpd to wget)":
        "wget -q -O /dev/null http://127.0.0.1:8081/big",
}

# Run once in each container before any workload is timed: the file and
# the server the network workload fetches from.
SETUP = "mkdir -p /w && dd if=/dev/zero of=/w/big bs=1048576 count=512 2>/dev/null && httpd -p 8081 -h /w"


def workloads():
    """Each workload WORK_RUNS times in a running gVisor container and in a
    running runc container, interleaved; wall seconds of the `docker exec`
    (whose own cost is measured with `true` and taken off)."""
    ids = {}
    try:
        for name, runtime, env in (("runc", "runc", []), ("gVisor", "berth-runsc", ["-e", "BERTH_SANDBOX=root"])):
            ids[name] = subprocess.run(
                ["docker", "run", "-d", "--rm", "--runtime", runtime, *env, "--label", "berth-bench=isolation",
                 IMAGE, "sleep", "3600"], capture_output=True, text=True, check=True).stdout.strip()

        def timed(cid, script):
            t0 = time.perf_counter()
            subprocess.run(["docker", "exec", cid, "sh", "-c", script], check=True, capture_output=True)
            return time.perf_counter() - t0
        for cid in ids.values():
            subprocess.run(["docker", "exec", cid, "sh", "-c", SETUP], check=True, capture_output=True)
        out = {w: {k: [] for k in ids} for w in WORKLOADS}
        base = {k: statistics.median(timed(c, "true") for _ in range(5)) for k, c in ids.items()}
        for i in range(WORK_RUNS):
            for w, script in WORKLOADS.items():
                for k, cid in ids.items():
                    out[w][k].append(max(timed(cid, script) - base[k], 0.0))
            print(f"workload run {i}: " + ", ".join(f"{k} {v[-1]:.2f} s" for w in out for k, v in out[w].items()),
                  file=sys.stderr, flush=True)
        return out, base
    finally:
        cleanup("berth-bench=isolation")


def main():
    if WORK_ONLY:
        work, exec_cost = workloads()
        report_workloads(work)
        os.makedirs("bench/results", exist_ok=True)
        with open(time.strftime("bench/results/isolation-work-%Y%m%d-%H%M%S.json"), "w") as f:
            json.dump({"work_runs": WORK_RUNS, "workload_s": work, "exec_cost_s": exec_cost}, f)
        return
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        proc = subprocess.Popen([BERTH, "up", "--listen", f"127.0.0.1:{port}", "--data-dir", tmp, "--log", "warn",
                                 "--image-pull-behavior", "prefer-cached", "--stopped-task-retention", "60"],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=open(os.path.join(tmp, "up.log"), "ab"))
        agent = None
        try:
            wait_health(url, proc)
            ecs = client(url)
            wait_agent(ecs)
            agent = subprocess.Popen(
                [BERTH, "agent", "--server", url, "--capacity", "fargate", "--isolation", "container",
                 "--availability-zone", "local-1b", "--data-dir", os.path.join(tmp, "fg-container"),
                 "--token", join_token(url, "--capacity", "fargate"), "--log", "warn",
                 "--image-pull-behavior", "prefer-cached"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=open(os.path.join(tmp, "fg-container.log"), "ab"))
            time.sleep(3)
            register(ecs)
            tasks = run_task_latency(ecs)
        finally:
            if agent:
                agent.terminate()
                agent.wait(timeout=30)
            proc.terminate()
            proc.wait(timeout=60)
            cleanup("com.amazonaws.ecs.cluster=default")
            cleanup("com.amazonaws.ecs.cluster=berth.fargate")
    work, exec_cost = workloads()
    out = {"runs": RUNS, "work_runs": WORK_RUNS, "run_task_s": tasks, "workload_s": work, "exec_cost_s": exec_cost}
    os.makedirs("bench/results", exist_ok=True)
    with open(time.strftime("bench/results/isolation-%Y%m%d-%H%M%S.json"), "w") as f:
        json.dump(out, f)
    base = tasks["FARGATE (container)"]
    print(f"\n(a) RunTask -> RUNNING, {RUNS} runs each, interleaved, one berth up\n")
    print("| task | p50 ms | p99 ms | mean ms | p50 vs FARGATE (container) | p99 vs FARGATE (container) |")
    print("|---|---|---|---|---|---|")
    for kind, xs in tasks.items():
        print(f"| {kind} | {pct(xs, 50)*1000:.0f} | {pct(xs, 99)*1000:.0f} | {statistics.mean(xs)*1000:.0f} | "
              f"{pct(xs, 50)/pct(base, 50):.2f}x | {pct(xs, 99)/pct(base, 99):.2f}x |")
    print("\nTarget: FARGATE (gVisor) p50 at most 1.5x FARGATE (container).")
    report_workloads(work)


def report_workloads(work):
    print(f"\n(b) Workloads, {WORK_RUNS} runs each, interleaved (median seconds)\n")
    print("| workload | runc s | gVisor s | gVisor vs runc |")
    print("|---|---|---|---|")
    for w, by in work.items():
        r, g = statistics.median(by["runc"]), statistics.median(by["gVisor"])
        print(f"| {w} | {r:.2f} | {g:.2f} | {g / r:.1f}x |")


if __name__ == "__main__":
    main()

"""Issue 5 benchmarks, side by side in one run on one `berth up` (its host is
both the default cluster's container instance and Fargate capacity), one
image, one engine:

(a) RunTask -> RUNNING, N runs each, interleaved: FARGATE (awsvpc: a pause
    container, the namespace's security-group filter, hardened containers),
    EC2 in bridge mode, and EC2 in awsvpc mode. Time from the RunTask call
    until DescribeTasks says RUNNING (polled every 5 ms). Target: FARGATE
    p50 and p99 at most 1.3x EC2's.
(b) A 20-task service, CreateService -> all 20 RUNNING, FARGATE against
    EC2 (bridge), interleaved rounds. Same target. 20 tasks of 0.25 vCPU
    need 5 vCPUs, so two more agents of each kind join (`berth agent` and
    `berth agent --capacity fargate`, on the same engine): three hosts of
    2 vCPUs a side.

Prints markdown tables; raw numbers go to bench/results/fargate-*.json.
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

RUNS = int(os.environ.get("RUNS", "40"))
ROUNDS = int(os.environ.get("ROUNDS", "5"))
NET = {"awsvpcConfiguration": {"subnets": ["subnet-local-1a"], "securityGroups": ["sg-default"]}}


def register(ecs):
    c = {"name": "c", "image": IMAGE, "command": ["sleep", "600"], "stopTimeout": 1}
    ecs.register_task_definition(family="bench-fargate", requiresCompatibilities=["FARGATE"], networkMode="awsvpc",
                                 cpu="256", memory="512", containerDefinitions=[c])
    ecs.register_task_definition(family="bench-ec2", containerDefinitions=[dict(c, memory=512, cpu=256)])
    ecs.register_task_definition(family="bench-ec2-vpc", networkMode="awsvpc",
                                 containerDefinitions=[dict(c, memory=512, cpu=256)])


KINDS = {
    "FARGATE": dict(taskDefinition="bench-fargate", launchType="FARGATE", networkConfiguration=NET),
    "EC2 (bridge)": dict(taskDefinition="bench-ec2", launchType="EC2"),
    "EC2 (awsvpc)": dict(taskDefinition="bench-ec2-vpc", launchType="EC2", networkConfiguration=NET),
}


def wait_all(ecs, arns, status, poll=0.005):
    while True:
        ts = ecs.describe_tasks(tasks=arns)["tasks"]
        if all(t["lastStatus"] == status for t in ts):
            return
        if status == "RUNNING" and any(t["lastStatus"] == "STOPPED" for t in ts):
            sys.exit(f"a task stopped: {[t.get('stoppedReason') for t in ts if t['lastStatus'] == 'STOPPED']}")
        time.sleep(poll)


def run_task_latency(ecs):
    times = {k: [] for k in KINDS}
    for i in range(RUNS + 3):
        for kind, args in KINDS.items():
            t0 = time.perf_counter()
            arn = ecs.run_task(**args)["tasks"][0]["taskArn"]
            wait_all(ecs, [arn], "RUNNING")
            took = time.perf_counter() - t0
            if i >= 3:  # warm-up runs are not counted
                times[kind].append(took)
            ecs.stop_task(task=arn)
            wait_all(ecs, [arn], "STOPPED", poll=0.02)
        print(f"run {i}: " + ", ".join(f"{k} {v[-1]*1000:.0f} ms" for k, v in times.items() if v),
              file=sys.stderr, flush=True)
    return times


def service_latency(ecs):
    times = {"FARGATE": [], "EC2 (bridge)": []}
    for r in range(ROUNDS):
        for kind in times:
            name = f"bench-svc-{r}-{'fg' if kind == 'FARGATE' else 'ec2'}"
            args = dict(KINDS[kind])
            args.pop("launchType")
            t0 = time.perf_counter()
            ecs.create_service(serviceName=name, desiredCount=20, launchType=kind.split()[0], **args)
            while True:
                arns = ecs.list_tasks(serviceName=name, desiredStatus="RUNNING")["taskArns"]
                if len(arns) == 20:
                    ts = ecs.describe_tasks(tasks=arns)["tasks"]
                    if all(t["lastStatus"] == "RUNNING" for t in ts):
                        break
                time.sleep(0.01)
            times[kind].append(time.perf_counter() - t0)
            print(f"service round {r} {kind}: {times[kind][-1]:.2f} s", file=sys.stderr, flush=True)
            ecs.delete_service(service=name, force=True)
            while ecs.list_tasks(serviceName=name)["taskArns"]:
                time.sleep(0.1)
    return times


def main():
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        agents = []
        proc = subprocess.Popen([BERTH, "up", "--listen", f"127.0.0.1:{port}", "--data-dir", tmp, "--log", "warn",
                                 "--image-pull-behavior", "prefer-cached", "--stopped-task-retention", "60"],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=open(os.path.join(tmp, "up.log"), "ab"))
        try:
            wait_health(url, proc)
            ecs = client(url)
            wait_agent(ecs)
            time.sleep(1)
            register(ecs)
            tasks = run_task_latency(ecs)
            for i in range(2):
                for mode in ("ec2", "fargate"):
                    agents.append(subprocess.Popen(
                        [BERTH, "agent", "--server", url, "--capacity", mode, "--data-dir", os.path.join(tmp, f"{mode}{i}"),
                         "--token", join_token(url, *(["--capacity", "fargate"] if mode == "fargate" else ["--cluster", "default"])),
                         "--log", "warn", "--image-pull-behavior", "prefer-cached"], stdin=subprocess.DEVNULL,
                        stdout=subprocess.DEVNULL, stderr=open(os.path.join(tmp, f"{mode}{i}.log"), "ab")))
            while len(ecs.list_container_instances()["containerInstanceArns"]) < 3:
                time.sleep(0.1)
            time.sleep(3)
            services = service_latency(ecs) if ROUNDS else {"FARGATE": [0.0], "EC2 (bridge)": [1.0]}
        finally:
            for a in agents:
                a.terminate()
                a.wait(timeout=30)
            proc.terminate()
            proc.wait(timeout=60)
            cleanup("com.amazonaws.ecs.cluster=default")
            cleanup("com.amazonaws.ecs.cluster=berth.fargate")
    out = {"runs": RUNS, "rounds": ROUNDS, "run_task_s": tasks, "service_s": services}
    os.makedirs("bench/results", exist_ok=True)
    with open(time.strftime("bench/results/fargate-%Y%m%d-%H%M%S.json"), "w") as f:
        json.dump(out, f)
    base = tasks["EC2 (bridge)"]
    print(f"\n(a) RunTask -> RUNNING, {RUNS} runs each, interleaved, one berth up\n")
    print("| launch | p50 ms | p99 ms | mean ms | p50 vs EC2 (bridge) | p99 vs EC2 (bridge) |")
    print("|---|---|---|---|---|---|")
    for kind, xs in tasks.items():
        print(f"| {kind} | {pct(xs, 50)*1000:.0f} | {pct(xs, 99)*1000:.0f} | {statistics.mean(xs)*1000:.0f} | "
              f"{pct(xs, 50)/pct(base, 50):.2f}x | {pct(xs, 99)/pct(base, 99):.2f}x |")
    base = services["EC2 (bridge)"]
    print(f"\n(b) 20-task service, CreateService -> 20 RUNNING, {ROUNDS} rounds each, interleaved\n")
    print("| launch | p50 s | p99 s | p50 vs EC2 (bridge) | p99 vs EC2 (bridge) |")
    print("|---|---|---|---|---|")
    for kind, xs in services.items():
        print(f"| {kind} | {pct(xs, 50):.2f} | {pct(xs, 99):.2f} | {pct(xs, 50)/pct(base, 50):.2f}x | "
              f"{pct(xs, 99)/pct(base, 99):.2f}x |")
    print("\nTarget: FARGATE at most 1.3x EC2.")


if __name__ == "__main__":
    main()

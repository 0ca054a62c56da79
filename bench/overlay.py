"""Issue 20 benchmark: task-to-task traffic across two hosts through the
VPC tunnel (docs/adr/0007) against the same between two tasks on one
host, side by side in one run.

Two hosts, each a Docker engine of its own in its own network namespace
(tests/conformance/conftest.py's EngineHost), one server, an agent on
each. A server task S on host 1; a client task on host 1 (same host) and
one on host 0 (across the tunnel); all three in sg-default (members let
in). Interleaved, RUNS times each:
  - latency: `ping -A -c 500` from the client to S (round trips as fast
    as replies come); each reply's time, p50 over all;
  - throughput: S serves a 1 GiB file over HTTP (busybox httpd) and the
    client fetches it (busybox wget to /dev/null), timed inside the
    client (`time`), so `docker exec` is not in it.
Targets: across hosts at least 0.8x the one-host throughput, and p50
latency at most 0.1 ms above it.

Prints a markdown table; raw numbers go to bench/results/overlay-*.json.
"""

import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "conformance"))
from conftest import IMAGE, Agent, EngineHost, Server, agents_connected, make_client, wait_for  # noqa: E402

RUNS = int(os.environ.get("RUNS", "10"))
PINGS = int(os.environ.get("PINGS", "500"))
MIB = int(os.environ.get("MIB", "1024"))


def main():
    tmp = tempfile.mkdtemp(prefix="berth-overlay-")
    hosts, agents, server = [], [], None
    try:
        for i in range(2):
            os.makedirs(os.path.join(tmp, f"host{i}"))
            hosts.append(EngineHost(os.path.join(tmp, f"host{i}")).start())
        server = Server(os.path.join(tmp, "server"), host=hosts[0].gateway, extra_env={"BERTH_WARM_ADDRESSES": "0"})
        os.makedirs(server.data_dir)
        server.start()
        ecs = make_client(server.url)
        ecs.create_cluster(clusterName="bench")
        for i, h in enumerate(hosts):
            wrap, extra = h.agent_args()
            agents.append(Agent(server, "bench", os.path.join(tmp, f"agent{i}"), "i-" + uuid.uuid4().hex[:17],
                                wrap=wrap, extra=extra).start())
        wait_for("both agents", lambda: agents_connected(ecs, "bench", 2), timeout=60)
        arns = ecs.list_container_instances(cluster="bench")["containerInstanceArns"]
        by_id = {c["ec2InstanceId"]: c["containerInstanceArn"] for c in
                 ecs.describe_container_instances(cluster="bench", containerInstances=arns)["containerInstances"]}
        on = [by_id[a.instance_id] for a in agents]
        ecs.register_task_definition(
            family="bench-net", networkMode="awsvpc", requiresCompatibilities=["EC2"], containerDefinitions=[
                {"name": "c", "image": IMAGE, "memory": 2048, "stopTimeout": 1,
                 "command": ["sh", "-c", f"mkdir -p /w && dd if=/dev/zero of=/w/big bs=1048576 count={MIB} "
                             "2>/dev/null && exec httpd -f -p 8080 -h /w"]}])
        net = {"awsvpcConfiguration": {"subnets": ["subnet-local-1a"], "securityGroups": ["sg-default"]}}

        def start(host):
            t = ecs.start_task(cluster="bench", taskDefinition="bench-net", containerInstances=[on[host]],
                               networkConfiguration=net)["tasks"][0]
            wait_for("a task", lambda: ecs.describe_tasks(cluster="bench", tasks=[t["taskArn"]])["tasks"][0][
                "lastStatus"] == "RUNNING", timeout=60)
            t = ecs.describe_tasks(cluster="bench", tasks=[t["taskArn"]])["tasks"][0]
            a = next(x for x in t["attachments"] if x["type"] == "ElasticNetworkInterface")
            return {d["name"]: d["value"] for d in a["details"]}["privateIPv4Address"], t["containers"][0]["runtimeId"]

        s_ip, _ = start(1)
        clients = {"one host": (1, start(1)[1]), "across hosts (tunnel)": (0, start(0)[1])}

        def exec_in(host, cid, script):
            return subprocess.run(["docker", "-H", f"unix://{hosts[host].sock}", "exec", cid, "sh", "-c", script],
                                  capture_output=True, text=True)
        for name, (host, cid) in clients.items():
            wait_for(f"{name} to reach S", lambda: exec_in(
                host, cid, f"wget -q -O /dev/null http://{s_ip}:8080/none; ping -c 1 -W 1 {s_ip}").returncode == 0,
                timeout=30)
        rtt = {k: [] for k in clients}
        mbps = {k: [] for k in clients}
        for i in range(RUNS):
            for name, (host, cid) in clients.items():
                p = exec_in(host, cid, f"ping -A -q -c 1 {s_ip} >/dev/null; ping -A -c {PINGS} {s_ip}")
                rtt[name].extend(float(x) for x in re.findall(r"time=([0-9.]+) ms", p.stdout))
                p = exec_in(host, cid, f"time wget -q -O /dev/null http://{s_ip}:8080/big")
                m = re.search(r"real\s+(\d+)m\s*([0-9.]+)s", p.stderr)
                if not m:
                    sys.exit(f"no time from the transfer: {p.stderr}")
                secs = int(m.group(1)) * 60 + float(m.group(2))
                if p.returncode != 0 or secs <= 0:
                    sys.exit(f"the transfer failed: {p.stderr}")
                mbps[name].append(MIB * 8 * 1.048576 / secs)
            print(f"run {i}: " + ", ".join(f"{k} {statistics.median(rtt[k][-PINGS:]):.3f} ms {mbps[k][-1]:.0f} Mbit/s"
                                           for k in clients), file=sys.stderr, flush=True)
    finally:
        for a in agents:
            a.stop()
        if server:
            server.stop()
        for h in hosts:
            h.stop()
    out = {"runs": RUNS, "pings": PINGS, "mib": MIB, "rtt_ms": rtt, "mbit_s": mbps}
    os.makedirs("bench/results", exist_ok=True)
    with open(time.strftime("bench/results/overlay-%Y%m%d-%H%M%S.json"), "w") as f:
        json.dump(out, f)
    base = "one host"
    b50, bt = statistics.median(rtt[base]), statistics.median(mbps[base])
    print(f"\nTask to task, {RUNS} runs of {PINGS} pings and {MIB} MiB each, interleaved\n")
    print("| pair | rtt p50 ms | rtt p99 ms | p50 vs one host | throughput Mbit/s (median) | vs one host |")
    print("|---|---|---|---|---|---|")
    for k in clients:
        xs = sorted(rtt[k])
        p99 = xs[int(len(xs) * 0.99) - 1]
        print(f"| {k} | {statistics.median(xs):.3f} | {p99:.3f} | {statistics.median(xs) - b50:+.3f} ms | "
              f"{statistics.median(mbps[k]):.0f} | {statistics.median(mbps[k]) / bt:.2f}x |")
    print("\nTargets: across hosts at least 0.8x the throughput, p50 at most +0.1 ms.")


if __name__ == "__main__":
    main()

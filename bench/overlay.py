"""Issue 20 benchmark: task-to-task traffic across two hosts through the
VPC tunnel (docs/adr/0007) against the same between two tasks on one
host, side by side in one run, with the kernel's own VXLAN in the same
shape and nothing of Berth's as the floor this machine allows.

Two hosts, each a Docker engine of its own in its own network namespace
(tests/conformance/conftest.py's EngineHost), linked to this machine by
veth pairs of UNDERLAY_MTU; one server, an agent on each. A server task S
on host 1; a client task on host 1 (same host) and one on host 0 (across
the tunnel); all three in sg-default (members let in). The floor:
bench/overlay-kernel.sh builds the same three tasks as bare namespaces on
bridges of two namespaced hosts with a VXLAN device between them.
Interleaved, RUNS times each pair:
  - latency: `ping -A -c PINGS` from the client to S (round trips as fast
    as replies come; inside the task's container for Berth's); each
    reply's time, p50 over all;
  - throughput: iperf3 for SECONDS in the tasks' network namespaces (one
    TCP stream, the host's iperf3 entered into them: the task image has
    none), the receiver's figure.
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
SECONDS = int(os.environ.get("SECONDS_PER_RUN", "5"))
# The hosts' link: 1500 as on most networks, or 9001 as between instances
# of an AWS VPC (jumbo frames); the tunnel and the subnets take 50 less.
UNDERLAY_MTU = int(os.environ.get("UNDERLAY_MTU", "1500"))
KERNEL = os.path.join(os.path.dirname(os.path.abspath(__file__)), "overlay-kernel.sh")
PORT = "5399"

BERTH_ONE, BERTH_ACROSS = "one host", "across hosts (tunnel)"
KERNEL_ONE, KERNEL_ACROSS = "kernel VXLAN: one host", "kernel VXLAN: across hosts"


def sh(*args):
    p = subprocess.run(args, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if p.returncode != 0:
        sys.exit(f"{' '.join(args)} failed: {p.stderr}")
    return p.stdout


def iperf(enter, server_ip):
    out = json.loads(sh(*enter, "iperf3", "-J", "-c", server_ip, "-p", PORT, "-t", str(SECONDS)))
    return out["end"]["sum_received"]["bits_per_second"] / 1e6


def main():
    tmp = tempfile.mkdtemp(prefix="berth-overlay-")
    tag = uuid.uuid4().hex[:4]
    hosts, agents, server, kernel_up = [], [], None, False
    try:
        for i in range(2):
            os.makedirs(os.path.join(tmp, f"host{i}"))
            hosts.append(EngineHost(os.path.join(tmp, f"host{i}"), mtu=UNDERLAY_MTU).start())
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
                {"name": "c", "image": IMAGE, "memory": 64, "stopTimeout": 1, "command": ["sleep", "86400"]}])
        net = {"awsvpcConfiguration": {"subnets": ["subnet-local-1a"], "securityGroups": ["sg-default"]}}

        def start(host):
            t = ecs.start_task(cluster="bench", taskDefinition="bench-net", containerInstances=[on[host]],
                               networkConfiguration=net)["tasks"][0]
            wait_for("a task", lambda: ecs.describe_tasks(cluster="bench", tasks=[t["taskArn"]])["tasks"][0][
                "lastStatus"] == "RUNNING", timeout=60)
            t = ecs.describe_tasks(cluster="bench", tasks=[t["taskArn"]])["tasks"][0]
            a = next(x for x in t["attachments"] if x["type"] == "ElasticNetworkInterface")
            cid = t["containers"][0]["runtimeId"]
            pid = hosts[host].docker("inspect", "-f", "{{.State.Pid}}", cid).strip()
            ip = {d["name"]: d["value"] for d in a["details"]}["privateIPv4Address"]
            return ip, (host, cid, ["nsenter", "-t", pid, "-n"])

        s_ip, (_, _, s_enter) = start(1)
        berth = {BERTH_ONE: start(1)[1], BERTH_ACROSS: start(0)[1]}
        sh(*s_enter, "iperf3", "-s", "-D", "-p", PORT)
        c_ns, s_ns, l_ns, k_ip = sh("bash", KERNEL, "up", tag, str(UNDERLAY_MTU)).split()
        kernel_up = True
        sh("ip", "netns", "exec", s_ns, "iperf3", "-s", "-D", "-p", PORT)

        def in_task(host, cid, script):
            return subprocess.run(["docker", "-H", f"unix://{hosts[host].sock}", "exec", cid, "sh", "-c", script],
                                  capture_output=True, text=True)
        # The bare namespaces ping with the tasks' own busybox.
        bb = os.path.join(tmp, "busybox")
        os.makedirs(bb)
        sh("busybox", "--install", "-s", bb)
        # name -> (run a script in the client, iperf namespace entry, server address)
        pairs = {}
        for name, (host, cid, enter) in berth.items():
            pairs[name] = (lambda script, h=host, c=cid: in_task(h, c, script), enter, s_ip)
        for name, ns in ((KERNEL_ONE, l_ns), (KERNEL_ACROSS, c_ns)):
            pairs[name] = (lambda script, n=ns: subprocess.run(["ip", "netns", "exec", n, "env", f"PATH={bb}", "sh", "-c", script],
                                                               capture_output=True, text=True),
                           ["ip", "netns", "exec", ns], k_ip)
        for name, (ping, _, ip) in pairs.items():
            wait_for(f"{name} to reach S", lambda: ping(f"ping -c 1 -W 1 {ip}").returncode == 0, timeout=30)
        # Each pair's MTU, as its client's interface has it.
        mtus = {name: int(ping("cat /sys/class/net/eth0/mtu").stdout.strip() or 0)
                for name, (ping, _, _) in pairs.items()}
        rtt = {k: [] for k in pairs}
        mbps = {k: [] for k in pairs}
        for i in range(RUNS):
            for name, (ping, enter, ip) in pairs.items():
                p = ping(f"ping -A -q -c 1 {ip} >/dev/null; ping -A -c {PINGS} {ip}")
                rtt[name].extend(float(x) for x in re.findall(r"time=([0-9.]+) ms", p.stdout))
                mbps[name].append(iperf(enter, ip))
            print(f"run {i}: " + ", ".join(f"{k} {statistics.median(rtt[k][-PINGS:]):.3f} ms {mbps[k][-1]:.0f} Mbit/s"
                                           for k in pairs), file=sys.stderr, flush=True)
    finally:
        subprocess.run(["pkill", "-f", f"iperf3 -s -D -p {PORT}"], capture_output=True)
        if kernel_up:
            subprocess.run(["bash", KERNEL, "down", tag], capture_output=True)
        for a in agents:
            a.stop()
        if server:
            server.stop()
        for h in hosts:
            h.stop()
    out = {"runs": RUNS, "pings": PINGS, "seconds": SECONDS, "underlay_mtu": UNDERLAY_MTU, "task_mtu": mtus,
           "rtt_ms": rtt, "mbit_s": mbps}
    os.makedirs("bench/results", exist_ok=True)
    with open(time.strftime("bench/results/overlay-%Y%m%d-%H%M%S.json"), "w") as f:
        json.dump(out, f)
    print(f"\nTask to task, underlay MTU {UNDERLAY_MTU}, {RUNS} runs of {PINGS} pings and {SECONDS} s of iperf3 "
          "each, interleaved\n")
    print("| pair | task MTU | rtt p50 ms | rtt p99 ms | p50 vs one host | throughput Mbit/s (median) | vs one host |")
    print("|---|---|---|---|---|---|---|")
    for k in pairs:
        base = BERTH_ONE if k in berth else KERNEL_ONE
        b50, bt = statistics.median(rtt[base]), statistics.median(mbps[base])
        xs = sorted(rtt[k])
        p99 = xs[int(len(xs) * 0.99) - 1]
        print(f"| {k} | {mtus[k]} | {statistics.median(xs):.3f} | {p99:.3f} | {statistics.median(xs) - b50:+.3f} ms | "
              f"{statistics.median(mbps[k]):.0f} | {statistics.median(mbps[k]) / bt:.2f}x |")
    ratio = statistics.median(mbps[BERTH_ACROSS]) / statistics.median(mbps[KERNEL_ACROSS])
    print(f"\nBerth's tunnel against the kernel's bare VXLAN across hosts: {ratio:.2f}x the throughput.")
    print("Targets: across hosts at least 0.8x the throughput, p50 at most +0.1 ms.")


if __name__ == "__main__":
    main()

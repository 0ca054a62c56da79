"""Issue 20 benchmark: how soon a security group rule changed with the EC2
API reaches a running task, on one `berth up`, side by side in one run:
an EC2 awsvpc task (its rules in its own namespace's filter) and a FARGATE
task on a gVisor host (its rules in host chains).

Each run authorizes `tcp 8080 from 0.0.0.0/0` on the group both tasks are
in (`sg-default`, which otherwise lets in only its members, and the host
is none) and times, for each task, from just before the
AuthorizeSecurityGroupIngress call until a TCP connection from the host
to the task's port 8080 first succeeds (tried every 5 ms, each attempt
given 20 ms); then revokes the rule and times until connections fail
again. Target: authorize -> traffic at most 1 s (p99).

Prints a markdown table; raw numbers go to bench/results/network-*.json.
"""

import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))
from tasks import BERTH, IMAGE, client, cleanup, free_port, pct, wait_agent, wait_health  # noqa: E402

RUNS = int(os.environ.get("RUNS", "30"))
RULE = [{"IpProtocol": "tcp", "FromPort": 8080, "ToPort": 8080, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}]


def opens(ip):
    s = socket.socket()
    s.settimeout(0.02)
    try:
        s.connect((ip, 8080))
        return True
    except OSError:
        return False
    finally:
        s.close()


def until(check, ips, t0, limit=10.0):
    """Seconds from t0 until check(ip) holds, per address."""
    left, out = set(ips), {}
    while left:
        now = time.perf_counter()
        if now - t0 > limit:
            sys.exit(f"not within {limit} s: {sorted(left)}")
        for ip in list(left):
            if check(ip):
                out[ip] = time.perf_counter() - t0
                left.discard(ip)
        time.sleep(0.005)
    return out


def start(ecs):
    script = "mkdir -p /www && echo up > /www/index.html && exec httpd -f -p 8080 -h /www"
    c = {"name": "web", "image": IMAGE, "command": ["sh", "-c", script], "stopTimeout": 1}
    ecs.register_task_definition(family="bench-rules", requiresCompatibilities=["EC2", "FARGATE"],
                                 networkMode="awsvpc", cpu="256", memory="512", containerDefinitions=[c])
    net = {"awsvpcConfiguration": {"subnets": ["subnet-local-1a"], "securityGroups": ["sg-default"]}}
    out = {}
    for kind, lt in (("EC2 awsvpc (namespace filter)", "EC2"), ("FARGATE gVisor (host chains)", "FARGATE")):
        arn = ecs.run_task(taskDefinition="bench-rules", launchType=lt, networkConfiguration=net)["tasks"][0]["taskArn"]
        while True:
            t = ecs.describe_tasks(tasks=[arn])["tasks"][0]
            if t["lastStatus"] == "RUNNING":
                break
            if t["lastStatus"] == "STOPPED":
                sys.exit(f"{kind} stopped: {t.get('stoppedReason')}")
            time.sleep(0.05)
        a = next(x for x in t["attachments"] if x["type"] == "ElasticNetworkInterface")
        out[kind] = {d["name"]: d["value"] for d in a["details"]}["privateIPv4Address"]
    return out


def main():
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        proc = subprocess.Popen([BERTH, "up", "--listen", f"127.0.0.1:{port}", "--data-dir", tmp, "--log", "warn",
                                 "--image-pull-behavior", "prefer-cached"],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=open(os.path.join(tmp, "up.log"), "ab"))
        try:
            wait_health(url, proc)
            ecs, ec2 = client(url), client(url, "ec2")
            wait_agent(ecs)
            ips = start(ecs)
            kinds = {ip: kind for kind, ip in ips.items()}
            if any(opens(ip) for ip in ips.values()):
                sys.exit("sg-default let the host in before any rule")
            opened = {k: [] for k in ips}
            closed = {k: [] for k in ips}
            for i in range(RUNS + 2):
                t0 = time.perf_counter()
                ec2.authorize_security_group_ingress(GroupId="sg-default", IpPermissions=RULE)
                got = until(opens, ips.values(), t0)
                t1 = time.perf_counter()
                ec2.revoke_security_group_ingress(GroupId="sg-default", IpPermissions=RULE)
                gone = until(lambda ip: not opens(ip), ips.values(), t1)
                if i >= 2:  # warm-up runs are not counted
                    for ip in ips.values():
                        opened[kinds[ip]].append(got[ip])
                        closed[kinds[ip]].append(gone[ip])
                print(f"run {i}: " + ", ".join(f"{kinds[ip]} {got[ip]*1000:.0f}/{gone[ip]*1000:.0f} ms"
                                               for ip in ips.values()), file=sys.stderr, flush=True)
        finally:
            proc.terminate()
            proc.wait(timeout=60)
            cleanup("com.amazonaws.ecs.cluster=default")
            cleanup("com.amazonaws.ecs.cluster=berth.fargate")
    out = {"runs": RUNS, "authorize_to_open_s": opened, "revoke_to_closed_s": closed}
    os.makedirs("bench/results", exist_ok=True)
    with open(time.strftime("bench/results/network-%Y%m%d-%H%M%S.json"), "w") as f:
        json.dump(out, f)
    print(f"\nSecurity group rule -> running task, {RUNS} runs, one berth up\n")
    print("| task | authorize -> open p50 ms | p99 ms | max ms | p99 vs 1 s target | revoke -> closed p50 ms | p99 ms |")
    print("|---|---|---|---|---|---|---|")
    for kind in ips:
        o, c = opened[kind], closed[kind]
        print(f"| {kind} | {pct(o, 50)*1000:.0f} | {pct(o, 99)*1000:.0f} | {max(o)*1000:.0f} | "
              f"{pct(o, 99):.2f}x | {pct(c, 50)*1000:.0f} | {pct(c, 99)*1000:.0f} |")
    print(f"\nmean authorize -> open: " + ", ".join(f"{k} {statistics.mean(v)*1000:.0f} ms" for k, v in opened.items()))


if __name__ == "__main__":
    main()

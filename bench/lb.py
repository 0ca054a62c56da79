"""Issue 6 benchmarks, side by side in one run:

(a) Throughput: requests/s and p99 through Berth's load balancer against
    HAProxy (Debian's) in front of the same two targets (berth-bench-backend,
    keep-alive HTTP/1.1), with wrk, closed loop at 64 connections, rounds
    interleaved. Target: Berth at least 1.0x HAProxy's requests/s.
(b) Latency added at half load: berth-bench-latency (16 keep-alive
    connections on their own threads, requests spread evenly, each timed in
    microseconds; hey rounds to tenths of a millisecond) at a fixed rate of
    half of HAProxy's throughput from (a), straight to one target and through
    each load balancer; the p99 each load balancer adds over the direct one.
    Target: at most 0.5 ms added by Berth.
(c) A rolling deployment under continuous load: a 3-task service of busybox
    httpd behind Berth's load balancer (`berth up`), deployed with a new task
    definition while hey keeps requesting. Counts the requests that were not
    answered 2xx. Target: zero. (Docker Swarm's rolling update would be the
    peer, but its routing mesh needs IPVS, which this machine's kernel does
    not have: the published port refuses connections.)

Prints markdown tables; raw numbers go to bench/results/lb-*.json.
"""

import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(__file__))
from tasks import BERTH, IMAGE, cleanup, free_port, wait_agent, wait_health  # noqa: E402

import boto3  # noqa: E402
import botocore.config  # noqa: E402

BACKEND = os.environ.get("BACKEND_BIN", "target/release/berth-bench-backend")
LATENCY = os.environ.get("LATENCY_BIN", "target/release/berth-bench-latency")
ROUNDS = int(os.environ.get("ROUNDS", "3"))
SECONDS = int(os.environ.get("SECONDS_PER_RUN", "10"))
CONNECTIONS = int(os.environ.get("CONNECTIONS", "64"))
DEPLOY_LOAD_SECONDS = int(os.environ.get("DEPLOY_LOAD_SECONDS", "45"))
SUBNETS = ["subnet-local-1a", "subnet-local-1b"]


def listener_port():
    """A free port below the ephemeral range, where Docker picks tasks'
    dynamic host ports."""
    import random
    import socket
    while True:
        port = random.randint(20000, 30000)
        with socket.socket() as s:
            try:
                s.bind(("0.0.0.0", port))
                return port
            except OSError:
                continue


def clients(url):
    cfg = botocore.config.Config(retries={"max_attempts": 1})
    kw = dict(endpoint_url=url, region_name="us-east-1", aws_access_key_id=os.environ["AWS_ACCESS_KEY_ID"], aws_secret_access_key=os.environ["AWS_SECRET_ACCESS_KEY"], config=cfg)
    return boto3.client("ecs", **kw), boto3.client("elbv2", **kw)


def start(args, log):
    return subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=open(log, "ab"))


def wait_http(url, timeout=30):
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return
        except OSError as e:
            last = e
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer: {last!r}")


def berth_lb(elb, targets, target_type="ip", health_path="/", delay="5"):
    """A load balancer with one listener forwarding to a target group."""
    name = f"bench-{os.getpid()}-{free_port()}"
    lb = elb.create_load_balancer(Name=name, Subnets=SUBNETS)["LoadBalancers"][0]
    tg = elb.create_target_group(Name=name, Protocol="HTTP", Port=8080, VpcId="vpc-local", TargetType=target_type,
                                 HealthCheckPath=health_path, HealthCheckIntervalSeconds=5,
                                 HealthCheckTimeoutSeconds=2, HealthyThresholdCount=2)["TargetGroups"][0]
    elb.modify_target_group_attributes(TargetGroupArn=tg["TargetGroupArn"], Attributes=[
        {"Key": "deregistration_delay.timeout_seconds", "Value": delay}])
    if targets:
        elb.register_targets(TargetGroupArn=tg["TargetGroupArn"], Targets=targets)
    port = listener_port()
    elb.create_listener(LoadBalancerArn=lb["LoadBalancerArn"], Protocol="HTTP", Port=port,
                        DefaultActions=[{"Type": "forward", "TargetGroupArn": tg["TargetGroupArn"]}])
    return tg["TargetGroupArn"], port


def wait_healthy(elb, tg, n):
    for _ in range(600):
        d = elb.describe_target_health(TargetGroupArn=tg)["TargetHealthDescriptions"]
        if len([t for t in d if t["TargetHealth"]["State"] == "healthy"]) >= n:
            return
        time.sleep(0.1)
    sys.exit("targets did not become healthy")


def haproxy(tmp, port, backends):
    cfg = os.path.join(tmp, "haproxy.cfg")
    # What Berth's listener does too: X-Forwarded-For/Proto/Port, and a
    # health check of each target every 5 s.
    servers = "\n".join(f"    server t{i} 127.0.0.1:{p} check inter 5s" for i, p in enumerate(backends))
    with open(cfg, "w") as f:
        f.write(f"""global
    maxconn 4096
defaults
    mode http
    option http-keep-alive
    http-reuse always
    timeout connect 5s
    timeout client 60s
    timeout server 60s
frontend fe
    bind 127.0.0.1:{port}
    option forwardfor
    http-request set-header X-Forwarded-Proto http
    http-request set-header X-Forwarded-Port %[dst_port]
    default_backend be
backend be
    balance roundrobin
{servers}
""")
    return start(["haproxy", "-f", cfg], os.path.join(tmp, "haproxy.log"))


def unit(value, suffix):
    return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[suffix]


def wrk(port):
    out = subprocess.run(["wrk", "-t2", f"-c{CONNECTIONS}", f"-d{SECONDS}s", "--latency", f"http://127.0.0.1:{port}/"],
                         capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    m = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"rps": rps, "p99_ms": unit(m.group(1), m.group(2)), "non2xx": int(errors.group(1)) if errors else 0}


def probe(port, rate, seconds=SECONDS, connections=16):
    """Fixed-rate load over `connections` connections, timed per request."""
    out = subprocess.run([LATENCY, "--addr", f"127.0.0.1:{port}", "--rate", str(rate), "--seconds", str(seconds),
                          "--connections", str(connections)], capture_output=True, text=True, check=True).stdout
    return json.loads(out)


def parse_hey(out):
    p99 = re.search(r"99%+ in ([\d.]+) secs", out)
    codes = {int(c): int(n) for c, n in re.findall(r"\[(\d{3})\]\s+(\d+) responses", out)}
    errors = sum(int(n) for n in re.findall(r"\[(\d+)\]\s+Get .*", out))
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    return {"p99_ms": float(p99.group(1)) * 1000 if p99 else None, "codes": codes, "errors": errors,
            "rps": float(rps.group(1)) if rps else 0.0,
            "ok": sum(n for c, n in codes.items() if 200 <= c < 300),
            "failed": sum(n for c, n in codes.items() if not 200 <= c < 300) + errors}


def proxies(tmp):
    backends = [free_port(), free_port()]
    procs = [start([BACKEND, "--listen", f"127.0.0.1:{p}", "--name", f"t{i}"], os.path.join(tmp, f"backend{i}.log"))
             for i, p in enumerate(backends)]
    api = free_port()
    server = start([BERTH, "server", "--store", "memory://", "--listen", f"127.0.0.1:{api}", "--lb-bind", "127.0.0.1",
                    "--log", "warn"], os.path.join(tmp, "server.log"))
    hp_port = free_port()
    procs += [server, haproxy(tmp, hp_port, backends)]
    try:
        wait_health(f"http://127.0.0.1:{api}", server)
        _, elb = clients(f"http://127.0.0.1:{api}")
        tg, lb_port = berth_lb(elb, [{"Id": "127.0.0.1", "Port": p, "AvailabilityZone": "all"} for p in backends])
        wait_healthy(elb, tg, 2)
        for p in (lb_port, hp_port, backends[0]):
            wait_http(f"http://127.0.0.1:{p}/")
        peers = {"Berth": lb_port, "HAProxy": hp_port}
        closed = {k: [] for k in peers}
        for r in range(ROUNDS):
            for k, p in peers.items():
                closed[k].append(wrk(p))
            print(f"round {r}: " + ", ".join(f"{k} {v[-1]['rps']:.0f} req/s p99 {v[-1]['p99_ms']:.2f} ms"
                                             for k, v in closed.items()), file=sys.stderr, flush=True)
        half = statistics.median(x["rps"] for x in closed["HAProxy"]) / 2
        fixed = {k: [] for k in ("direct", *peers)}
        for r in range(ROUNDS):
            for k, p in (("direct", backends[0]), *peers.items()):
                fixed[k].append(probe(p, half))
            print(f"half-load round {r}: " + ", ".join(f"{k} p50 {v[-1]['p50_ms']:.3f} p99 {v[-1]['p99_ms']:.3f} ms"
                                                       f" ({v[-1]['failed']} failed)" for k, v in fixed.items()),
                  file=sys.stderr, flush=True)
        return {"closed": closed, "half_rate": half, "fixed": fixed}
    finally:
        for p in procs:
            p.terminate()
            p.wait(timeout=30)


def web_taskdef(ecs, version):
    web = {"name": "web", "image": IMAGE, "memory": 16, "stopTimeout": 2,
           "portMappings": [{"containerPort": 8080, "hostPort": 0}],
           "command": ["sh", "-c", f"mkdir -p /www && echo {version} > /www/index.html && exec httpd -f -p 8080 -h /www"]}
    return ecs.register_task_definition(family="bench-lb", containerDefinitions=[web])["taskDefinition"]["taskDefinitionArn"]


def hey_background(port, seconds):
    return subprocess.Popen(["hey", "-z", f"{seconds}s", "-c", "8", f"http://127.0.0.1:{port}/"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)


def berth_deploy(tmp):
    api = free_port()
    up = start([BERTH, "up", "--listen", f"127.0.0.1:{api}", "--data-dir", os.path.join(tmp, "up"), "--log", "warn",
                "--fargate", "false", "--image-pull-behavior", "prefer-cached", "--lb-bind", "127.0.0.1"],
               os.path.join(tmp, "up.log"))
    try:
        url = f"http://127.0.0.1:{api}"
        wait_health(url, up)
        ecs, elb = clients(url)
        wait_agent(ecs)
        tg, port = berth_lb(elb, [], target_type="instance", delay="5")
        v1, v2 = web_taskdef(ecs, "v1"), web_taskdef(ecs, "v2")
        ecs.create_service(serviceName="web", taskDefinition=v1, desiredCount=3,
                           loadBalancers=[{"targetGroupArn": tg, "containerName": "web", "containerPort": 8080}])
        wait_deployed(ecs, v1)
        wait_http(f"http://127.0.0.1:{port}/")
        load = hey_background(port, DEPLOY_LOAD_SECONDS)
        time.sleep(3)
        t0 = time.perf_counter()
        ecs.update_service(service="web", taskDefinition=v2)
        wait_deployed(ecs, v2)
        took = time.perf_counter() - t0
        result = parse_hey(load.communicate(timeout=DEPLOY_LOAD_SECONDS + 30)[0])
        result["deploy_s"] = took
        ecs.update_service(service="web", desiredCount=0)
        ecs.delete_service(service="web")
        return result
    except Exception:
        print(open(os.path.join(tmp, "up.log")).read()[-4000:], file=sys.stderr)
        raise
    finally:
        up.terminate()
        up.wait(timeout=60)
        cleanup("com.amazonaws.ecs.cluster=default")


def wait_deployed(ecs, taskdef, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        s = ecs.describe_services(services=["web"])["services"][0]
        d = s["deployments"]
        if len(d) == 1 and d[0]["rolloutState"] == "COMPLETED" and d[0]["taskDefinition"] == taskdef:
            return
        time.sleep(0.2)
    sys.exit(f"deployment of {taskdef} did not complete")


def main():
    with tempfile.TemporaryDirectory() as tmp:
        a = proxies(tmp) if os.environ.get("SKIP_PROXIES") != "1" else {}
        berth = berth_deploy(tmp)
    out = {"rounds": ROUNDS, "seconds": SECONDS, "connections": CONNECTIONS, "proxies": a,
           "deploy": {"Berth": berth}}
    os.makedirs("bench/results", exist_ok=True)
    with open(time.strftime("bench/results/lb-%Y%m%d-%H%M%S.json"), "w") as f:
        json.dump(out, f)

    med = lambda xs, k: statistics.median(x[k] for x in xs)  # noqa: E731
    closed = a["closed"]
    hp = med(closed["HAProxy"], "rps")
    print(f"\n(a) Closed loop, wrk -t2 -c{CONNECTIONS}, {SECONDS} s x {ROUNDS} rounds, two keep-alive targets\n")
    print("| load balancer | req/s (median) | p99 ms (median) | req/s vs HAProxy |")
    print("|---|---|---|---|")
    for k, xs in closed.items():
        print(f"| {k} | {med(xs, 'rps'):.0f} | {med(xs, 'p99_ms'):.2f} | {med(xs, 'rps') / hp:.2f}x |")
    fixed = a["fixed"]
    direct = med(fixed["direct"], "p99_ms")
    direct50 = med(fixed["direct"], "p50_ms")
    print(f"\n(b) Fixed rate {a['half_rate']:.0f} req/s (half of HAProxy's), berth-bench-latency, 16 connections,"
          f" {SECONDS} s x {ROUNDS}\n")
    print("| path | p50 ms | p99 ms (median) | p50 added ms | p99 added ms | failed |")
    print("|---|---|---|---|---|---|")
    for k, xs in fixed.items():
        p, p50 = med(xs, "p99_ms"), med(xs, "p50_ms")
        added = ("", "") if k == "direct" else (f"{p50 - direct50:+.3f}", f"{p - direct:+.3f}")
        print(f"| {k} | {p50:.3f} | {p:.3f} | {added[0]} | {added[1]} | {sum(x['failed'] for x in xs)} |")
    print(f"\n(c) Rolling deployment of 3 tasks under load (hey -c 8, {DEPLOY_LOAD_SECONDS} s)\n")
    print("| orchestrator | requests | not 2xx | deployment s |")
    print("|---|---|---|---|")
    for k, r in out["deploy"].items():
        print(f"| {k} | {r['ok'] + r['failed']} | {r['failed']} | {r['deploy_s']:.1f} |")
    print("\nTargets: Berth >= 1.0x HAProxy's req/s; <= 0.5 ms p99 added at half load; zero failed requests.")


if __name__ == "__main__":
    main()

"""`berth lb` on its own: a server on an etcd store with `--lb false`, and
the load balancer's data path in a process of its own on the same store.
The ELBv2 API (server) and the listeners, health checks and draining
(berth lb) meet only in etcd; the listeners keep serving while the API is
down."""

import json
import subprocess

import pytest

from conftest import BERTH, Etcd, Process, Server, aws_cli, listener_port, make_client, wait_for
from test_elbv2 import SUBNETS, VPC, Backend, _refused, get


class Lb(Process):
    def __init__(self, store, log):
        self.args = [BERTH, "lb", "--store", store, "--lb-bind", "127.0.0.1", "--log", "warn"]
        self.log = log

    def start(self):
        self.proc = subprocess.Popen(self.args, stdout=subprocess.DEVNULL, stderr=open(self.log, "ab"),
                                     stdin=subprocess.DEVNULL)
        return self


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    tmp = str(tmp_path_factory.mktemp("lb-etcd"))
    etcd = Etcd(tmp).start()
    store = f"etcd://{etcd.endpoint}"
    server = Server(tmp, store=store, extra_env={"BERTH_LB": "false"}).start()
    yield tmp, etcd, store, server
    for p in (server, etcd):
        p.stop()


def test_berth_lb_serves_listeners_from_the_servers_etcd_store(shared, name):
    tmp, etcd, store, server = shared
    ecs, elb = make_client(server.url), make_client(server.url, "elbv2")
    # The control plane works on etcd as on its embedded store.
    ecs.create_cluster(clusterName=name)
    assert ecs.describe_clusters(clusters=[name])["clusters"][0]["status"] == "ACTIVE"

    a, b = Backend("a"), Backend("b")
    lb = Lb(store, f"{tmp}/lb.log").start()
    try:
        arn = elb.create_load_balancer(Name=name, Subnets=SUBNETS)["LoadBalancers"][0]["LoadBalancerArn"]
        tg = aws_cli(server, "elbv2", "create-target-group", "--name", name, "--protocol", "HTTP", "--port", "80",
                     "--vpc-id", VPC, "--target-type", "ip", "--health-check-path", "/health",
                     "--health-check-interval-seconds", "5", "--health-check-timeout-seconds", "2",
                     "--healthy-threshold-count", "2")["TargetGroups"][0]
        tg_arn = tg["TargetGroupArn"]
        elb.register_targets(TargetGroupArn=tg_arn, Targets=[
            {"Id": "127.0.0.1", "Port": x.port, "AvailabilityZone": "all"} for x in (a, b)])
        port = listener_port()
        elb.create_listener(LoadBalancerArn=arn, Protocol="HTTP", Port=port,
                            DefaultActions=[{"Type": "forward", "TargetGroupArn": tg_arn}])
        url = f"http://127.0.0.1:{port}/"

        # Health checks run in berth lb; the server reports what it wrote.
        def states():
            return {d["TargetHealth"]["State"] for d in
                    elb.describe_target_health(TargetGroupArn=tg_arn)["TargetHealthDescriptions"]}
        wait_for("berth lb's health checks to reach the API", lambda: states() == {"healthy"}, timeout=30)
        seen = [json.loads(get(url)[1])["backend"] for _ in range(10)]
        assert seen.count("a") == seen.count("b") == 5, seen

        # The server has no listener of its own: without berth lb the port is closed.
        lb.stop()
        assert _refused(port)
        lb = Lb(store, f"{tmp}/lb.log").start()
        wait_for("a new berth lb to listen", lambda: not _refused(port), timeout=20)
        assert get(url)[0] == 200

        # A change made through the API reaches the separate data path.
        elb.deregister_targets(TargetGroupArn=tg_arn, Targets=[{"Id": "127.0.0.1", "Port": a.port}])
        wait_for("a to get no traffic", lambda: {json.loads(get(url)[1])["backend"] for _ in range(6)} == {"b"},
                 timeout=20)

        # Listeners keep serving while the API is down.
        server.stop()
        assert json.loads(get(url)[1])["backend"] == "b"
        server.start()
    finally:
        lb.stop()
        a.stop()
        b.stop()


def test_berth_lb_refuses_a_store_it_cannot_share(tmp_path):
    for store in ("memory://", f"sqlite://{tmp_path}/berth.db"):
        p = subprocess.run([BERTH, "lb", "--store", store], capture_output=True, text=True, timeout=20,
                           stdin=subprocess.DEVNULL)
        assert p.returncode != 0 and "must be etcd://" in p.stderr, p.stderr

"""An agent on another "host": its own network namespace, joined to the
server's by a veth pair. It registers, keeps its connection, runs tasks on
the engine and serves their logs to the server across the link."""

import os
import random
import subprocess
import time
import uuid

import pytest

from conftest import BERTH, IMAGE, Agent, Server, agents_connected, docker_inspect, make_client, wait_for


def sh(*args):
    p = subprocess.run(args, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if p.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed: {p.stderr}")


@pytest.fixture(scope="module")
def link():
    """A network namespace, the two ends' addresses on a private /30, and
    the outside end's name (to cut the link)."""
    tag = uuid.uuid4().hex[:6]
    ns, outside, inside = f"berth-{tag}", f"bh{tag}", f"bn{tag}"
    net = f"10.231.{random.randrange(256)}"
    host_ip, ns_ip = f"{net}.1", f"{net}.2"
    sh("ip", "netns", "add", ns)
    try:
        sh("ip", "link", "add", outside, "type", "veth", "peer", "name", inside)
        sh("ip", "link", "set", inside, "netns", ns)
        sh("ip", "addr", "add", f"{host_ip}/30", "dev", outside)
        sh("ip", "link", "set", outside, "up")
        sh("ip", "netns", "exec", ns, "ip", "addr", "add", f"{ns_ip}/30", "dev", inside)
        sh("ip", "netns", "exec", ns, "ip", "link", "set", inside, "up")
        sh("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")
        yield ns, host_ip, ns_ip, outside
    finally:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        subprocess.run(["ip", "link", "del", outside], capture_output=True)


def test_an_agent_in_its_own_network_namespace_runs_tasks(link, tmp_path):
    ns, host_ip, ns_ip, _ = link
    server = Server(str(tmp_path / "server"), host=host_ip)
    os.makedirs(server.data_dir, exist_ok=True)
    server.start()
    agent = None
    cluster = "netns"
    try:
        ecs = make_client(server.url)
        ecs.create_cluster(clusterName=cluster)
        iid = "i-" + uuid.uuid4().hex[:17]
        agent = Agent(server, cluster, str(tmp_path / "agent"), iid,
                      wrap=["ip", "netns", "exec", ns]).start()
        wait_for("the agent to connect", lambda: agents_connected(ecs, cluster, 1))
        # It really is elsewhere: another network namespace than ours.
        assert os.readlink(f"/proc/{agent.proc.pid}/ns/net") != os.readlink("/proc/self/ns/net")
        ecs.register_task_definition(family="far", containerDefinitions=[
            {"name": "c", "image": IMAGE, "memory": 16, "stopTimeout": 1,
             "command": ["sh", "-c", "echo hello from afar; exec sleep 600"]}])
        t = ecs.run_task(cluster=cluster, taskDefinition="far")["tasks"][0]

        def running():
            d = ecs.describe_tasks(cluster=cluster, tasks=[t["taskArn"]])["tasks"][0]
            return d if d["lastStatus"] == "RUNNING" else None
        d = wait_for("the task to run", running)
        labels = docker_inspect(d["containers"][0]["runtimeId"])["Config"]["Labels"]
        assert labels["berth.instance"] in d["containerInstanceArn"]
        # The logs come back on the agent's own connection, across the link.
        def logs():
            p = subprocess.run([BERTH, "logs", t["taskArn"], "--cluster", cluster, "--server", server.url],
                               capture_output=True, text=True, timeout=30)
            return p.stdout if "c | hello from afar" in p.stdout else None
        wait_for("the logs", logs)
        ecs.stop_task(cluster=cluster, task=t["taskArn"])

        def stopped():
            d = ecs.describe_tasks(cluster=cluster, tasks=[t["taskArn"]])["tasks"][0]
            return d["lastStatus"] == "STOPPED"
        wait_for("the task to stop", stopped)
    finally:
        if agent:
            agent.stop()
        ids = subprocess.run(["docker", "ps", "-aq", "--filter", f"label=com.amazonaws.ecs.cluster={cluster}"],
                             capture_output=True, text=True).stdout.split()
        if ids:
            subprocess.run(["docker", "rm", "-f", *ids], capture_output=True)
        server.stop()


def test_a_partitioned_host_is_replaced_and_its_copy_stopped_when_it_heals(link, tmp_path):
    """The agent's link is cut without a word (no FIN, no RST): the server
    notices the silence, replaces its service task on another host, and when
    the link comes back the old copy is stopped and never counted."""
    ns, host_ip, ns_ip, outside = link
    # Defaults for the timeout and grace: what a user gets.
    server = Server(str(tmp_path / "server"), host=host_ip, extra_env={"BERTH_SERVICE_SETTLE": "1"})
    os.makedirs(server.data_dir, exist_ok=True)
    server.start()
    agents = []
    cluster = "partition"
    try:
        ecs = make_client(server.url)
        ecs.create_cluster(clusterName=cluster)
        far = Agent(server, cluster, str(tmp_path / "far"), "i-" + uuid.uuid4().hex[:17],
                    wrap=["ip", "netns", "exec", ns]).start()
        agents.append(far)
        wait_for("the far agent to connect", lambda: agents_connected(ecs, cluster, 1))
        ecs.register_task_definition(family="kept", containerDefinitions=[
            {"name": "c", "image": IMAGE, "memory": 16, "stopTimeout": 1, "command": ["sleep", "600"]}])
        ecs.create_service(cluster=cluster, serviceName="kept", taskDefinition="kept", desiredCount=1)

        def running():
            arns = ecs.list_tasks(cluster=cluster, serviceName="kept", desiredStatus="RUNNING")["taskArns"]
            ts = ecs.describe_tasks(cluster=cluster, tasks=arns)["tasks"] if arns else []
            return [t for t in ts if t["lastStatus"] == "RUNNING"]
        old = wait_for("the task on the far host", running, timeout=60)[0]
        old_container = old["containers"][0]["runtimeId"]
        # A second host, near, takes the replacement.
        near = Agent(server, cluster, str(tmp_path / "near"), "i-" + uuid.uuid4().hex[:17]).start()
        agents.append(near)
        wait_for("both agents", lambda: agents_connected(ecs, cluster, 2))

        sh("ip", "link", "set", outside, "down")
        cut = time.time()
        try:
            new = wait_for("a replacement on the near host",
                           lambda: [t for t in running() if t["taskArn"] != old["taskArn"]], timeout=60)[0]
            print(f"replacement RUNNING {time.time() - cut:.1f} s after the link was cut")
            assert new["containerInstanceArn"] != old["containerInstanceArn"]
            gone = ecs.describe_tasks(cluster=cluster, tasks=[old["taskArn"]])["tasks"][0]
            assert gone["lastStatus"] == "STOPPED" and gone["stoppedReason"].startswith("Host lost"), gone
            # Meanwhile the far host's container still runs: nobody could tell it.
            assert docker_inspect(old_container)["State"]["Running"]
        finally:
            sh("ip", "link", "set", outside, "up")
        wait_for("the far agent to reconnect", lambda: agents_connected(ecs, cluster, 2), timeout=60)
        wait_for("the old copy to stop", lambda: subprocess.run(
            ["docker", "inspect", "-f", "{{.State.Running}}", old_container], capture_output=True, text=True
        ).stdout.strip() != "true", timeout=60)
        # Counted once: one task runs, the service says one.
        assert [t["taskArn"] for t in running()] == [new["taskArn"]]
        svc = ecs.describe_services(cluster=cluster, services=["kept"])["services"][0]
        assert svc["runningCount"] == 1 and svc["desiredCount"] == 1, svc
        assert ecs.describe_tasks(cluster=cluster, tasks=[old["taskArn"]])["tasks"][0]["lastStatus"] == "STOPPED"
    finally:
        for a in agents:
            a.stop()
        ids = subprocess.run(["docker", "ps", "-aq", "--filter", f"label=com.amazonaws.ecs.cluster={cluster}"],
                             capture_output=True, text=True).stdout.split()
        if ids:
            subprocess.run(["docker", "rm", "-f", *ids], capture_output=True)
        server.stop()

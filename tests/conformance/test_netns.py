"""An agent on another "host": its own network namespace, joined to the
server's by a veth pair. It registers, keeps its connection, runs tasks on
the engine and serves their logs to the server across the link."""

import os
import random
import subprocess
import uuid

import pytest

from conftest import BERTH, IMAGE, Agent, Server, agents_connected, docker_inspect, make_client, wait_for


def sh(*args):
    p = subprocess.run(args, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if p.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed: {p.stderr}")


@pytest.fixture(scope="module")
def link():
    """A network namespace and the two ends' addresses, on a private /30."""
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
        yield ns, host_ip, ns_ip
    finally:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        subprocess.run(["ip", "link", "del", outside], capture_output=True)


def test_an_agent_in_its_own_network_namespace_runs_tasks(link, tmp_path):
    ns, host_ip, ns_ip = link
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
                      wrap=["ip", "netns", "exec", ns], extra=["--logs-listen", f"{ns_ip}:0"]).start()
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
        # The server fetches the logs from the agent, across the link.
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

"""A VPC across hosts (docs/adr/0007): two hosts, each with a Docker engine
of its own in its own network namespace, so that a subnet's bridge on one
is not the other's. awsvpc tasks of one subnet on the two hosts reach
each other through their security groups (the VXLAN tunnel and routes
the server pushes), are blocked without them, and a rule added with the
aws CLI opens the way between them while they run."""

import os
import subprocess
import uuid

import pytest

from conftest import IMAGE, Agent, EngineHost, Server, agents_connected, aws_cli, make_client, wait_for


class At:
    """The server as an agent in a host's namespace reaches it."""

    def __init__(self, server, url):
        self.url = url
        self.server = server


@pytest.fixture(scope="module")
def vpc(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("vpc")
    hosts = []
    server = agents = None
    try:
        for i in range(2):
            os.makedirs(tmp / f"host{i}", exist_ok=True)
            # Jumbo frames between the hosts, as between instances of an
            # AWS VPC: tasks get them too, less the tunnel's headers.
            hosts.append(EngineHost(str(tmp / f"host{i}"), mtu=9001).start())
        # The server listens on our end of the first host's link, which
        # every host reaches through its default route.
        server = Server(str(tmp / "server"), host=hosts[0].gateway,
                        extra_env={"BERTH_WARM_ADDRESSES": "0"})
        os.makedirs(server.data_dir, exist_ok=True)
        server.start()
        ecs = make_client(server.url)
        ecs.create_cluster(clusterName="vpc")
        agents = []
        for i, h in enumerate(hosts):
            wrap, extra = h.agent_args()
            iid = "i-" + uuid.uuid4().hex[:17]
            agents.append(Agent(server, "vpc", str(tmp / f"agent{i}"), iid, wrap=wrap, extra=extra).start())
        wait_for("both agents", lambda: agents_connected(ecs, "vpc", 2), timeout=60)
        yield server, ecs, hosts, agents
    finally:
        for a in agents or []:
            a.stop()
        if server:
            server.stop()
        for h in hosts:
            h.stop()


def serving(ecs):
    # A page of several full-sized segments, so jumbo ones cross the tunnel.
    script = "mkdir -p /www; seq 1 20000 > /www/index.html; exec httpd -f -p 8080 -h /www"
    return ecs.register_task_definition(
        family="vpc-web", networkMode="awsvpc", requiresCompatibilities=["EC2"], containerDefinitions=[
            {"name": "app", "image": IMAGE, "memory": 16, "stopTimeout": 1, "command": ["sh", "-c", script]}]
    )["taskDefinition"]["taskDefinitionArn"]


def test_tasks_of_one_subnet_on_two_hosts_talk_through_their_security_groups(vpc):
    server, ecs, hosts, agents = vpc
    ec2 = make_client(server.url, "ec2")
    td = serving(ecs)
    arns = ecs.list_container_instances(cluster="vpc")["containerInstanceArns"]
    by_id = {c["ec2InstanceId"]: c["containerInstanceArn"]
             for c in ecs.describe_container_instances(cluster="vpc", containerInstances=arns)["containerInstances"]}
    on = [by_id[a.instance_id] for a in agents]
    outsider = ec2.create_security_group(GroupName="outsider", Description="not a member")["GroupId"]

    def start(host, group):
        n = {"awsvpcConfiguration": {"subnets": ["subnet-local-1a"], "securityGroups": [group]}}
        t = ecs.start_task(cluster="vpc", taskDefinition=td, containerInstances=[on[host]],
                           networkConfiguration=n)["tasks"][0]
        wait_for("the task to run", lambda: ecs.describe_tasks(cluster="vpc", tasks=[t["taskArn"]])["tasks"][0][
            "lastStatus"] == "RUNNING", timeout=60)
        t = ecs.describe_tasks(cluster="vpc", tasks=[t["taskArn"]])["tasks"][0]
        a = next(x for x in t["attachments"] if x["type"] == "ElasticNetworkInterface")
        ip = {d["name"]: d["value"] for d in a["details"]}["privateIPv4Address"]
        return t, ip, t["containers"][0]["runtimeId"]

    a, a_ip, a_c = start(0, "sg-default")
    b, b_ip, b_c = start(1, "sg-default")
    c, c_ip, c_c = start(0, outsider)

    def reaches(host, container, ip):
        p = subprocess.run(["docker", "-H", f"unix://{hosts[host].sock}", "exec", container, "timeout", "3", "wget",
                            "-qO-", f"http://{ip}:8080/"], capture_output=True, text=True)
        return p.returncode == 0 and p.stdout.endswith("\n20000\n")

    for host, container in ((0, a_c), (1, b_c)):
        mtu = hosts[host].docker("exec", container, "cat", "/sys/class/net/eth0/mtu").strip()
        assert mtu == "8951", mtu
    # sg-default lets its members in: across hosts, both ways (so a's
    # packets reach b with a's own address: masqueraded to its host's, b's
    # filter would drop them).
    assert wait_for("a to reach b on the other host", lambda: reaches(0, a_c, b_ip), timeout=20)
    assert reaches(1, b_c, a_ip)
    # The outsider is no member: b's filter drops it, though the way is there.
    assert not reaches(0, c_c, b_ip)
    # A rule added with the aws CLI lets the outsider's members in, on the
    # other host too; revoked, it shuts them out again.
    rule = ["--group-id", "sg-default", "--protocol", "tcp", "--port", "8080", "--source-group", outsider]
    aws_cli(server, "ec2", "authorize-security-group-ingress", *rule)
    assert wait_for("the rule to open b to c", lambda: reaches(0, c_c, b_ip), timeout=15)
    aws_cli(server, "ec2", "revoke-security-group-ingress", *rule)
    assert wait_for("the rule to close b to c", lambda: not reaches(0, c_c, b_ip), timeout=15)
    for t in (a, b, c):
        ecs.stop_task(cluster="vpc", task=t["taskArn"])

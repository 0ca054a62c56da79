"""awsvpc on the EC2 launch type: each task gets its own network namespace
and an address of the subnet it names, its containers share localhost, and
DescribeTasks shows the interface as an ElasticNetworkInterface
attachment. Berth's default network configuration has one subnet per local
zone (subnet-local-1a in local-1a, and so on)."""

import ipaddress
import json
import subprocess
import urllib.request
import uuid

import botocore.exceptions
import pytest

from conftest import IMAGE, Cluster, aws_cli, docker, make_client, wait_for


@pytest.fixture(scope="module")
def cl(tmp_path_factory):
    # No warm addresses, so that addresses go out lowest first, as checked.
    c = Cluster(str(tmp_path_factory.mktemp("awsvpc")), "vpc", [[], []],
                extra_env={"BERTH_AGENT_TIMEOUT": "3", "BERTH_WARM_ADDRESSES": "0"}).start()
    yield c
    c.stop()


def net(*subnets, public=None, groups=("sg-default",)):
    c = {"subnets": list(subnets), "securityGroups": list(groups)}
    if public:
        c["assignPublicIp"] = public
    return {"awsvpcConfiguration": c}


def register(cl):
    web = {"name": "web", "image": IMAGE, "memory": 16, "stopTimeout": 1, "portMappings": [{"containerPort": 8080}],
           "command": ["sh", "-c", "mkdir -p /www && echo hello from my own address > /www/index.html && "
                       "exec httpd -f -p 8080 -h /www"]}
    probe = {"name": "probe", "image": IMAGE, "memory": 16, "stopTimeout": 1, "essential": False,
             "command": ["sh", "-c", "for i in 1 2 3 4 5 6 7 8 9 10; do wget -qO- http://127.0.0.1:8080/ && break; "
                         "sleep 0.5; done; sleep 3600"]}
    return cl.ecs.register_task_definition(family="vpc", networkMode="awsvpc", requiresCompatibilities=["EC2"],
                                           containerDefinitions=[web, probe])["taskDefinition"]["taskDefinitionArn"]


def error_of(call, **kw):
    with pytest.raises(botocore.exceptions.ClientError) as e:
        call(**kw)
    return e.value.response["Error"]["Code"], e.value.response["Error"]["Message"]


def eni(task):
    a = [x for x in task["attachments"] if x["type"] == "ElasticNetworkInterface"]
    assert len(a) == 1, task["attachments"]
    return a[0], {d["name"]: d["value"] for d in a[0]["details"]}


def test_bad_network_configurations_get_ecs_errors(cl):
    td = register(cl)
    run = cl.ecs.run_task
    code, msg = error_of(run, cluster=cl.name, taskDefinition=td)
    assert (code, msg) == ("InvalidParameterException",
                           "Network Configuration must be provided when networkMode 'awsvpc' is specified.")
    code, msg = error_of(run, cluster=cl.name, taskDefinition=td, networkConfiguration=net("subnet-nope"))
    assert code == "InvalidParameterException" and "The subnet ID 'subnet-nope' does not exist" in msg
    code, msg = error_of(run, cluster=cl.name, taskDefinition=td,
                         networkConfiguration=net("subnet-local-1a", groups=("sg-nope",)))
    assert "'sg-nope' does not exist" in msg
    code, msg = error_of(run, cluster=cl.name, taskDefinition=td,
                         networkConfiguration=net("subnet-local-1a", public="ENABLED"))
    assert msg == "Assign public IP is not supported for this launch type."
    bridge = cl.ecs.register_task_definition(family="vpc-bridge", containerDefinitions=[
        {"name": "c", "image": IMAGE, "memory": 16}])["taskDefinition"]["taskDefinitionArn"]
    code, msg = error_of(run, cluster=cl.name, taskDefinition=bridge, networkConfiguration=net("subnet-local-1a"))
    assert msg == "Network Configuration is not valid for the given networkMode of this task definition."
    assert cl.ecs.list_tasks(cluster=cl.name)["taskArns"] == []


def test_an_awsvpc_task_has_its_own_address_and_shares_localhost(cl):
    td = register(cl)
    # sg-allow-all lets the host in (sg-default only lets its own members).
    placed = cl.ecs.run_task(cluster=cl.name, taskDefinition=td,
                             networkConfiguration=net("subnet-local-1a", groups=("sg-allow-all",)))["tasks"][0]
    attachment, details = eni(placed)
    assert attachment["status"] == "PRECREATED"
    t = cl.wait_status(placed["taskArn"], "RUNNING")
    # The subnet is in local-1a: so is the instance it runs on.
    assert t["availabilityZone"] == "local-1a"
    attachment, details = eni(t)
    ip = details["privateIPv4Address"]
    assert attachment["status"] == "ATTACHED"
    assert details["subnetId"] == "subnet-local-1a" and details["networkInterfaceId"].startswith("eni-")
    subnet = make_client(cl.server.url, "ec2").describe_subnets(SubnetIds=["subnet-local-1a"])["Subnets"][0]
    assert ipaddress.ip_address(ip) in ipaddress.ip_network(subnet["CidrBlock"])
    assert len(details["macAddress"]) == 17
    assert all(c["networkInterfaces"][0]["privateIpv4Address"] == ip for c in t["containers"])
    assert all(c["networkBindings"] == [] for c in t["containers"])
    # Reachable at its own address, on the container's port.
    body = wait_for("the web container", lambda: _get(f"http://{ip}:8080/"))
    assert body.strip() == "hello from my own address"
    # Its containers share localhost: the probe reached the web server.
    probe = next(c for c in t["containers"] if c["name"] == "probe")
    assert wait_for("the probe", lambda: "hello from my own address" in docker("logs", probe["runtimeId"]))
    # One namespace: both containers see the task's address as their own.
    web = next(c for c in t["containers"] if c["name"] == "web")
    info = json.loads(docker("inspect", web["runtimeId"]))[0]
    assert info["HostConfig"]["NetworkMode"].startswith("container:")

    # A second task gets another address; stopping frees it for the next.
    other = cl.ecs.run_task(cluster=cl.name, taskDefinition=td, networkConfiguration=net("subnet-local-1a"))["tasks"][0]
    other_ip = eni(other)[1]["privateIPv4Address"]
    assert other_ip != ip
    cl.ecs.stop_task(cluster=cl.name, task=t["taskArn"])
    stopped = cl.wait_status(t["taskArn"], "STOPPED")
    assert eni(stopped)[0]["status"] == "DELETED"
    wait_for("its containers and pause container to go", lambda: not docker(
        "ps", "-aq", "--filter", f"label=com.amazonaws.ecs.task-arn={t['taskArn']}").split())
    again = cl.ecs.run_task(cluster=cl.name, taskDefinition=td, networkConfiguration=net("subnet-local-1a"))["tasks"][0]
    assert eni(again)[1]["privateIPv4Address"] == ip, "the stopped task's address was handed out again"
    for x in (other, again):
        cl.ecs.stop_task(cluster=cl.name, task=x["taskArn"])


def test_a_service_spreads_awsvpc_tasks_over_its_subnets_zones(cl):
    td = register(cl)
    cl.ecs.create_service(cluster=cl.name, serviceName="vpcsvc", taskDefinition=td, desiredCount=2,
                          networkConfiguration=net("subnet-local-1a", "subnet-local-1b"))

    def running():
        arns = cl.ecs.list_tasks(cluster=cl.name, serviceName="vpcsvc")["taskArns"]
        tasks = [t for t in cl.ecs.describe_tasks(cluster=cl.name, tasks=arns)["tasks"] if t["lastStatus"] == "RUNNING"] if arns else []
        return tasks if len(tasks) == 2 else None
    tasks = wait_for("two tasks", running)
    subnets = sorted(eni(t)[1]["subnetId"] for t in tasks)
    assert subnets == ["subnet-local-1a", "subnet-local-1b"]
    s = cl.ecs.describe_services(cluster=cl.name, services=["vpcsvc"])["services"][0]
    assert s["networkConfiguration"]["awsvpcConfiguration"]["subnets"] == ["subnet-local-1a", "subnet-local-1b"]
    cl.ecs.delete_service(cluster=cl.name, service="vpcsvc", force=True)


def test_two_installations_on_one_engine_never_share_a_subnet_bridge(tmp_path):
    """Two Berth installations (servers with stores of their own) whose
    default subnets have the same ranges, with agents on one Docker engine:
    each names its bridges apart; while one's tasks use a range, the
    other's task there fails saying why; once that range is idle, the other
    takes it over."""
    from conftest import own_subnets_config
    shared = tmp_path / "network.json"
    shared.write_text(json.dumps(own_subnets_config()))
    env = {"BERTH_NETWORK_CONFIG": str(shared), "BERTH_WARM_ADDRESSES": "0", "BERTH_AGENT_TIMEOUT": "3"}
    tag = uuid.uuid4().hex[:6]
    first = Cluster(str(tmp_path / "first"), f"first-{tag}", [[]], extra_env=env).start()
    second = Cluster(str(tmp_path / "second"), f"second-{tag}", [[]], extra_env=env).start()
    try:
        def run(c):
            td = c.ecs.register_task_definition(
                family="shared-engine", networkMode="awsvpc", requiresCompatibilities=["EC2"],
                containerDefinitions=[{"name": "app", "image": IMAGE, "memory": 16, "stopTimeout": 1,
                                       "command": ["sleep", "3600"]}])["taskDefinition"]["taskDefinitionArn"]
            return c.ecs.run_task(cluster=c.name, taskDefinition=td,
                                  networkConfiguration=net("subnet-local-1a"))["tasks"][0]["taskArn"]
        held = run(first)
        first.wait_status(held, "RUNNING")
        refused = second.wait_status(run(second), "STOPPED")
        said = " ".join([refused.get("stoppedReason", "")] + [c.get("reason", "") for c in refused["containers"]])
        assert "overlaps" in said and "another Berth network" in said, said
        first.ecs.stop_task(cluster=first.name, task=held)
        first.wait_status(held, "STOPPED")
        taken = run(second)
        second.wait_status(taken, "RUNNING")
        second.ecs.stop_task(cluster=second.name, task=taken)
    finally:
        first.stop()
        second.stop()


def _get(url):
    try:
        with urllib.request.urlopen(url, timeout=1) as r:
            return r.read().decode()
    except OSError:
        return None


def test_the_network_config_file_is_checked_at_start(tmp_path):
    import os
    from conftest import BERTH
    bad = tmp_path / "net.json"
    bad.write_text(json.dumps({"subnets": [{"id": "subnet-a", "cidr": "10.1.0.0/24", "availabilityZone": "z"},
                                           {"id": "subnet-b", "cidr": "10.1.0.128/25", "availabilityZone": "z"}]}))
    p = subprocess.run([BERTH, "server", "--listen", "127.0.0.1:0", "--data-dir", str(tmp_path / "d"),
                        "--network-config", str(bad)], capture_output=True, text=True, timeout=30,
                       stdin=subprocess.DEVNULL, env={**os.environ})
    assert p.returncode != 0 and "overlap" in p.stderr, p.stderr


GROUPS = {
    "subnets": [{"id": "subnet-sg-a", "cidr": "10.77.0.0/24", "availabilityZone": "local-1a"}],
    "securityGroups": [
        {"id": "sg-web", "ingress": [{"protocol": "tcp", "fromPort": 8080, "toPort": 8080, "cidr": "0.0.0.0/0"}]},
        {"id": "sg-db", "ingress": [{"protocol": "tcp", "fromPort": 9000, "toPort": 9000, "sourceGroup": "sg-web"}]},
        {"id": "sg-none", "ingress": []},
    ],
}


@pytest.fixture(scope="module")
def sg(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sg")
    config = tmp / "network.json"
    config.write_text(json.dumps(GROUPS))
    c = Cluster(str(tmp), "sg", [[]], extra_env={"BERTH_NETWORK_CONFIG": str(config), "BERTH_WARM_ADDRESSES": "0"}).start()
    yield c
    c.stop()


def serving(cl, family, ports):
    """A task definition whose one container serves HTTP on each port."""
    script = "mkdir -p /www; echo up > /www/index.html; " + " & ".join(
        f"httpd -f -p {p} -h /www" for p in ports) + " & wait"
    return cl.ecs.register_task_definition(
        family=family, networkMode="awsvpc", requiresCompatibilities=["EC2"], containerDefinitions=[
            {"name": "app", "image": IMAGE, "memory": 16, "stopTimeout": 1, "command": ["sh", "-c", script]}]
    )["taskDefinition"]["taskDefinitionArn"]


def test_security_groups_let_in_what_their_rules_allow_and_drop_the_rest(sg):
    web_td, db_td = serving(sg, "sg-web", [8080, 9999]), serving(sg, "sg-db", [9000])

    def start(td, group):
        t = sg.ecs.run_task(cluster=sg.name, taskDefinition=td,
                            networkConfiguration=net("subnet-sg-a", groups=(group,)))["tasks"][0]
        t = sg.wait_status(t["taskArn"], "RUNNING")
        return t, eni(t)[1]["privateIPv4Address"], t["containers"][0]["runtimeId"]

    db, db_ip, _ = start(db_td, "sg-db")
    web, web_ip, web_c = start(web_td, "sg-web")
    other, _, other_c = start(web_td, "sg-none")

    def from_task(container, url):
        return subprocess.run(["docker", "exec", container, "timeout", "3", "wget", "-qO-", url],
                              capture_output=True, text=True).returncode == 0

    # From the host: 8080 on the web task is open to 0.0.0.0/0, nothing else is.
    assert wait_for("the web port", lambda: _get(f"http://{web_ip}:8080/")) == "up\n"
    assert _get(f"http://{web_ip}:9999/") is None, "no rule allows 9999"
    assert _get(f"http://{db_ip}:9000/") is None, "the host is no member of sg-web"
    # The db lets in sg-web's members only: the web task, started after it.
    assert wait_for("sg-web to reach the db", lambda: from_task(web_c, f"http://{db_ip}:9000/"), timeout=15)
    assert not from_task(other_c, f"http://{db_ip}:9000/")
    assert from_task(other_c, f"http://{web_ip}:8080/")
    assert not from_task(other_c, f"http://{web_ip}:9999/")
    # Each service still answers inside its own namespace.
    assert from_task(web_c, "http://127.0.0.1:9999/")
    # A member that leaves is let in no longer.
    sg.ecs.stop_task(cluster=sg.name, task=web["taskArn"])
    sg.wait_status(web["taskArn"], "STOPPED")
    again, again_ip, again_c = start(web_td, "sg-none")
    assert again_ip == web_ip, "the address was handed out again"
    assert wait_for("the old member's address to be shut out",
                    lambda: not from_task(again_c, f"http://{db_ip}:9000/"), timeout=15)
    for t in (db, other, again):
        sg.ecs.stop_task(cluster=sg.name, task=t["taskArn"])


def test_rules_changed_with_aws_ec2_reach_running_tasks(sg):
    ec2 = make_client(sg.server.url, "ec2")
    td = serving(sg, "sg-live", [8080])
    web_td = serving(sg, "sg-live-web", [8080])

    def start(td, group):
        t = sg.ecs.run_task(cluster=sg.name, taskDefinition=td,
                            networkConfiguration=net("subnet-sg-a", groups=(group,)))["tasks"][0]
        t = sg.wait_status(t["taskArn"], "RUNNING")
        return t, eni(t)[1]["privateIPv4Address"], t["containers"][0]["runtimeId"]

    def from_task(container, url):
        return subprocess.run(["docker", "exec", container, "timeout", "3", "wget", "-qO-", url],
                              capture_output=True, text=True).returncode == 0

    t, ip, c = start(td, "sg-none")
    web, web_ip, _ = start(web_td, "sg-web")
    assert wait_for("the task to reach sg-web's open port", lambda: from_task(c, f"http://{web_ip}:8080/"))
    url = f"http://{ip}:8080/"
    assert _get(url) is None, "sg-none lets nothing in"

    # An ingress rule added with the aws CLI opens the running task; revoking it closes it.
    rule = ["--group-id", "sg-none", "--protocol", "tcp", "--port", "8080", "--cidr", "0.0.0.0/0"]
    aws_cli(sg.server, "ec2", "authorize-security-group-ingress", *rule)
    assert wait_for("the new rule to let the host in", lambda: _get(url), timeout=10) == "up\n"
    aws_cli(sg.server, "ec2", "revoke-security-group-ingress", *rule)
    assert wait_for("the revoked rule to shut the host out", lambda: _get(url) is None, timeout=10)

    # Egress: without its allow-all rule the task reaches nothing; a rule
    # to sg-web's members lets it reach them, and only on that port.
    out = [r for r in ec2.describe_security_group_rules(Filters=[{"Name": "group-id", "Values": ["sg-none"]}])[
        "SecurityGroupRules"] if r["IsEgress"]]
    ec2.revoke_security_group_egress(GroupId="sg-none", SecurityGroupRuleIds=[r["SecurityGroupRuleId"] for r in out])
    assert wait_for("egress to close", lambda: not from_task(c, f"http://{web_ip}:8080/"), timeout=10)
    ec2.authorize_security_group_egress(GroupId="sg-none", IpPermissions=[
        {"IpProtocol": "tcp", "FromPort": 8080, "ToPort": 8080, "UserIdGroupPairs": [{"GroupId": "sg-web"}]}])
    assert wait_for("egress to sg-web to open", lambda: from_task(c, f"http://{web_ip}:8080/"), timeout=10)
    ec2.authorize_security_group_egress(GroupId="sg-none", IpPermissions=[
        {"IpProtocol": "-1", "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}])

    # Its interface, and what it keeps from being deleted.
    enis = ec2.describe_network_interfaces(Filters=[{"Name": "private-ip-address", "Values": [ip]}])["NetworkInterfaces"]
    assert len(enis) == 1
    assert enis[0]["NetworkInterfaceId"] == eni(t)[1]["networkInterfaceId"]
    assert enis[0]["SubnetId"] == "subnet-sg-a" and enis[0]["Groups"][0]["GroupId"] == "sg-none"
    assert enis[0]["RequesterManaged"] and enis[0]["Status"] == "in-use"
    code, _ = error_of(ec2.delete_security_group, GroupId="sg-none")
    assert code == "DependencyViolation"
    code, _ = error_of(ec2.delete_subnet, SubnetId="subnet-sg-a")
    assert code == "DependencyViolation"
    for x in (t, web):
        sg.ecs.stop_task(cluster=sg.name, task=x["taskArn"])
    sg.wait_status(t["taskArn"], "STOPPED")
    assert not ec2.describe_network_interfaces(
        Filters=[{"Name": "private-ip-address", "Values": [ip]}])["NetworkInterfaces"]

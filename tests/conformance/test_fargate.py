"""The FARGATE launch type: tasks and services run on capacity Berth
manages (agents in Fargate capacity mode, here two hosts in two zones
that give each task a gVisor kernel of its own, and a third that runs
them as hardened containers on the host's kernel), in a cluster with no
container instance at all, each task in its own network namespace at its
own address, and split between the FARGATE and FARGATE_SPOT capacity
providers as strategies say."""

import collections
import ipaddress
import json
import os
import platform
import subprocess
import uuid

import botocore.exceptions
import pytest

from conftest import (IMAGE, Agent, Cluster, EngineHost, Registry, Server, cgroup_limit, check_production_task, docker,
                      docker_inspect, make_client, production_task, wait_for)

ZONES = ("local-1a", "local-1b")
# Filled with their ranges from the EC2 API when the module's server is up.
SUBNETS = {"subnet-local-1a": None, "subnet-local-1b": None}
# The zone of the host with container isolation.
CONTAINER_SUBNET = "subnet-local-1b"


class Fargate(Cluster):
    """A server, one cluster with the Fargate providers and no container
    instance, and Fargate hosts (agents in Fargate capacity mode)."""

    def __init__(self, tmp, name):
        super().__init__(tmp, name, [], extra_env={"BERTH_AGENT_TIMEOUT": "3"})

    def start(self):
        self.server.start()
        self.ecs = make_client(self.server.url)
        self.ecs.create_cluster(clusterName=self.name, capacityProviders=["FARGATE", "FARGATE_SPOT"])
        # The host in local-1b prefers what its engine has cached, and its
        # operator chose hardened containers over gVisor.
        for i, zone in enumerate(ZONES):
            pull = ["--image-pull-behavior", "prefer-cached", "--isolation", "container"] if zone == "local-1b" else []
            self.agents.append(Agent(self.server, "ignored", os.path.join(self.tmp, f"host{i}"),
                                     "i-" + uuid.uuid4().hex[:17], zone=zone,
                                     extra=["--capacity", "fargate", *pull]).start())
        # A third host, alone in local-1c, keeps the images it pulled once.
        self.agents.append(Agent(self.server, "ignored", os.path.join(self.tmp, "host-cache"),
                                 "i-" + uuid.uuid4().hex[:17], zone="local-1c",
                                 extra=["--capacity", "fargate", "--image-pull-behavior", "once"]).start())
        for a in self.agents:
            wait_for("the Fargate host to connect", lambda: "connected to the gateway" in open(a.log).read())
        return self

    def stop(self):
        super().stop()
        # The hosts' warm namespaces belong to the pool.
        ids = docker("ps", "-aq", "--filter", "label=com.amazonaws.ecs.cluster=berth.fargate").split()
        if ids:
            subprocess.run(["docker", "rm", "-f", *ids], capture_output=True)


@pytest.fixture(scope="module")
def fg(tmp_path_factory):
    f = Fargate(str(tmp_path_factory.mktemp("fargate")), "serverless").start()
    ec2 = make_client(f.server.url, "ec2")
    SUBNETS.update({s["SubnetId"]: s["CidrBlock"] for s in ec2.describe_subnets(SubnetIds=list(SUBNETS))["Subnets"]})
    yield f
    f.stop()


def net(*subnets):
    return {"awsvpcConfiguration": {"subnets": list(subnets or SUBNETS), "securityGroups": ["sg-default"]}}


def register(fg, family, command=("sleep", "600"), cpu="256", memory="512", **extra):
    c = {"name": "app", "image": IMAGE, "command": list(command), "stopTimeout": 1, "essential": True}
    c.update(extra)
    return fg.ecs.register_task_definition(
        family=family, networkMode="awsvpc", requiresCompatibilities=["FARGATE"], cpu=cpu, memory=memory,
        containerDefinitions=[c])["taskDefinition"]["taskDefinitionArn"]


def error_of(call, **kw):
    with pytest.raises(botocore.exceptions.ClientError) as e:
        call(**kw)
    return e.value.response["Error"]["Code"], e.value.response["Error"]["Message"]


def address(task):
    a = [x for x in task["attachments"] if x["type"] == "ElasticNetworkInterface"][0]
    return {d["name"]: d["value"] for d in a["details"]}


def status_of(container_id, field):
    """A line of /proc/self/status as the container's own process sees it."""
    out = docker("exec", container_id, "grep", f"^{field}:", "/proc/self/status")
    return out.split(":", 1)[1].strip()


def test_a_fargate_task_runs_with_no_container_instance_on_its_own_address(fg):
    td = register(fg, "fg-one")
    assert fg.ecs.list_container_instances(cluster=fg.name)["containerInstanceArns"] == []
    placed = fg.ecs.run_task(cluster=fg.name, taskDefinition=td, launchType="FARGATE",
                             networkConfiguration=net("subnet-local-1b"))
    assert placed["failures"] == []
    t = fg.wait_status(placed["tasks"][0]["taskArn"], "RUNNING")
    assert "containerInstanceArn" not in t, "Fargate users never see the host"
    assert t["launchType"] == "FARGATE" and "capacityProviderName" not in t
    assert (t["platformVersion"], t["platformFamily"]) == ("1.4.0", "Linux")
    assert t["ephemeralStorage"] == {"sizeInGiB": 20}
    assert (t["cpu"], t["memory"], t["availabilityZone"]) == ("256", "512", "local-1b")
    eni = address(t)
    assert ipaddress.ip_address(eni["privateIPv4Address"]) in ipaddress.ip_network(SUBNETS["subnet-local-1b"])
    assert eni["subnetId"] == "subnet-local-1b" and len(eni["macAddress"].split(":")) == 6
    # Still no container instance, and the pool is no cluster anyone can name.
    assert fg.ecs.list_container_instances(cluster=fg.name)["containerInstanceArns"] == []
    assert fg.ecs.describe_clusters(clusters=[fg.name])["clusters"][0]["registeredContainerInstancesCount"] == 0
    code, _ = error_of(fg.ecs.list_container_instances, cluster="berth.fargate")
    assert code in ("ClusterNotFoundException", "InvalidParameterException")
    listed = fg.ecs.list_tasks(cluster=fg.name, launchType="FARGATE")["taskArns"]
    assert t["taskArn"] in listed
    fg.ecs.stop_task(cluster=fg.name, task=t["taskArn"])
    fg.wait_status(t["taskArn"], "STOPPED")


def isolation_of(task):
    return {a["name"]: a.get("value") for a in task.get("attributes", [])}.get("berth.isolation")


def pause_of(task):
    """A task's pause container (what holds its namespace and boots its sandbox), as `docker inspect` shows it."""
    mode = docker_inspect(task["containers"][0]["runtimeId"])["HostConfig"]["NetworkMode"]
    assert mode.startswith("container:"), mode
    return docker_inspect(mode.split(":", 1)[1])


def test_fargate_tasks_run_on_kernels_of_their_own(fg):
    """Each task is a gVisor sandbox: its containers share its kernel,
    localhost and volumes, and see neither the host's kernel nor another
    task's; the task's limits bound the whole sandbox."""
    web = {"name": "web", "image": IMAGE, "essential": True, "stopTimeout": 1,
           "command": ["sh", "-c", "mkdir -p /shared/www; echo hi > /shared/www/index.html; "
                       "exec httpd -f -p 8080 -h /shared/www"],
           "mountPoints": [{"sourceVolume": "shared", "containerPath": "/shared"}]}
    probe = {"name": "probe", "image": IMAGE, "essential": True, "stopTimeout": 1,
             "command": ["sleep", "4242"], "mountPoints": [{"sourceVolume": "shared", "containerPath": "/shared"}]}
    td = fg.ecs.register_task_definition(
        family="fg-kernel", networkMode="awsvpc", requiresCompatibilities=["FARGATE"], cpu="256", memory="512",
        volumes=[{"name": "shared"}], containerDefinitions=[web, probe])["taskDefinition"]["taskDefinitionArn"]
    other = register(fg, "fg-kernel-other", command=("sleep", "4343"))

    def run(td, subnet):
        t = fg.ecs.run_task(cluster=fg.name, taskDefinition=td, launchType="FARGATE",
                            networkConfiguration=net(subnet))["tasks"][0]
        return fg.wait_status(t["taskArn"], "RUNNING")
    zone = ipaddress.ip_network(SUBNETS["subnet-local-1a"])
    wait_for("the gVisor host's two warm sandboxes", lambda: len([
        ip for ip in docker("ps", "--filter", "label=berth.warm-cgroup", "--format",
                            '{{.Label "berth.warm-address"}}').split()
        if ipaddress.ip_address(ip) in zone]) >= 2)
    a = run(td, "subnet-local-1a")
    b = run(other, "subnet-local-1a")
    assert isolation_of(a) == isolation_of(b) == "gvisor"
    ids = {c["name"]: c["runtimeId"] for c in a["containers"]}
    cb = b["containers"][0]["runtimeId"]
    for cid in (*ids.values(), cb):
        host = docker_inspect(cid)["HostConfig"]
        assert host["Runtime"] == "berth-runsc"
        assert "NET_RAW" in (host["CapDrop"] or []) and not host["Privileged"], "hardened as well"
        assert "BERTH_SANDBOX" not in docker("exec", cid, "env"), "the sandbox mark stays out of the task"

    def sh(cid, script):
        return docker("exec", cid, "sh", "-c", script).strip()
    # Not the host's kernel: gVisor's, booted long after the host.
    host_version = open("/proc/version").read().strip()
    assert sh(ids["probe"], "cat /proc/version") != host_version
    assert sh(ids["probe"], "uname -r") != platform.release()
    assert "gVisor" in sh(ids["probe"], "dmesg | head -1")
    with open("/proc/uptime") as f:
        host_up = float(f.read().split()[0])
    assert max(float(sh(c, "cat /proc/uptime").split()[0]) for c in (*ids.values(), cb)) < host_up
    # And not the other task's: each task's containers join its own
    # sandbox, a kernel (gVisor's Sentry) in a process of its own.
    pa, pb = pause_of(a), pause_of(b)
    assert pa["Id"] != pb["Id"]
    for cid in ids.values():
        assert docker_inspect(cid)["HostConfig"]["NetworkMode"] == f"container:{pa['Id']}"
    for p in (pa, pb):
        with open(f"/proc/{p['State']['Pid']}/cmdline", "rb") as f:
            assert f.read().startswith(b"runsc-sandbox"), "a sandbox's kernel process"
    # One sandbox: localhost and the volume are shared within the task...
    assert sh(ids["probe"], "cat /shared/www/index.html") == "hi"
    assert sh(ids["probe"], "wget -qO- http://127.0.0.1:8080/") == "hi"
    # ...and nothing of the host or the other task is visible.
    seen = sh(cb, "ps -o pid,args")
    assert "sleep 4343" in seen and "httpd" not in seen and "dockerd" not in seen and "berth" not in seen
    assert subprocess.run(["docker", "exec", cb, "cat", "/shared/www/index.html"], capture_output=True).returncode != 0
    # Its host booted the sandbox ahead, at a warm address, in a cgroup of
    # its own that got the task's memory when the task took it.
    pause = pa
    labels = pause["Config"]["Labels"]
    assert pause["HostConfig"]["Runtime"] == "berth-runsc"
    assert labels.get("berth.warm-address") == address(a)["privateIPv4Address"]
    assert cgroup_limit(pause["State"]["Pid"], "memory", labels["berth.warm-cgroup"]) == 512 * 1024 * 1024
    # Its cpu (256 units: a quarter of a CPU) goes on once it runs: the
    # sandbox's kernel starts the task's containers in that cgroup.
    wait_for("the task's cpu limit", lambda: cgroup_limit(pause["State"]["Pid"], "cpu",
                                                          labels["berth.warm-cgroup"]) == 25000, timeout=10)
    # The task metadata endpoint says so too.
    meta = json.loads(sh(ids["probe"], "wget -qO- $ECS_CONTAINER_METADATA_URI_V4/task"))
    assert meta["Isolation"] == "gvisor"
    for t in (a, b):
        fg.ecs.stop_task(cluster=fg.name, task=t["taskArn"])
    stopped = fg.wait_status(a["taskArn"], "STOPPED")
    assert {c["name"]: c.get("exitCode") for c in stopped["containers"]} == {"web": 143, "probe": 143}


def test_a_fargate_host_without_gvisor_refuses_to_join_unless_told_to_use_containers(fg, tmp_path):
    agent = Agent(fg.server, "ignored", str(tmp_path / "no-gvisor"), "i-" + uuid.uuid4().hex[:17], zone="local-1c",
                  extra=["--capacity", "fargate", "--runsc", str(tmp_path / "no-such-runsc")]).start()
    assert agent.proc.wait(timeout=30) != 0
    log = open(agent.log).read()
    assert "cannot give tasks a kernel of their own" in log and "--isolation container" in log, log
    # Where the isolation flags would change nothing, they are refused.
    from conftest import BERTH
    for extra in (["--isolation", "container"], ["--capacity", "fargate", "--isolation", "container",
                                                  "--runsc", "/usr/bin/runsc"]):
        p = subprocess.run([BERTH, "agent", "--server", fg.server.url, *extra], capture_output=True, text=True,
                           stdin=subprocess.DEVNULL, timeout=30)
        assert p.returncode != 0 and "applies to Fargate capacity" in p.stderr, p.stderr


def test_a_sandbox_that_breaks_at_run_time_fails_the_task_and_never_falls_back(tmp_path):
    """A Fargate host whose gVisor breaks after it joined (its engine's
    runtime for sandboxes fails every start; an engine of its own, as the
    runtime's registration is the engine's): the task stops saying why, and
    nothing of it runs on the host's kernel."""
    # Berth's runtime as the agent registers it, with a flag that makes
    # every sandbox fail to boot: runsc has no such platform.
    os.makedirs(tmp_path / "host")
    host = EngineHost(str(tmp_path / "host"), runtimes={"berth-runsc": {
        "path": "/var/lib/berth/runtimes/berth-runsc", "runtimeArgs": ["--platform=no-such-platform"]}}).start()
    server = agent = None
    try:
        server = Server(str(tmp_path / "server"), host=host.gateway, extra_env={"BERTH_WARM_ADDRESSES": "0"})
        os.makedirs(server.data_dir)
        server.start()
        ecs = make_client(server.url)
        ecs.create_cluster(clusterName="broken", capacityProviders=["FARGATE"])
        wrap, extra = host.agent_args()
        agent = Agent(server, "ignored", str(tmp_path / "agent"), "i-" + uuid.uuid4().hex[:17], zone="local-1a",
                      wrap=wrap, extra=[*extra, "--capacity", "fargate"]).start()
        wait_for("the Fargate host to connect", lambda: "connected to the gateway" in open(agent.log).read())
        ecs.register_task_definition(family="broken", requiresCompatibilities=["FARGATE"], networkMode="awsvpc",
                                     cpu="256", memory="512", containerDefinitions=[
                                         {"name": "app", "image": IMAGE, "command": ["sleep", "600"]}])
        arn = ecs.run_task(cluster="broken", taskDefinition="broken", launchType="FARGATE",
                           networkConfiguration=net("subnet-local-1a"))["tasks"][0]["taskArn"]

        def stopped():
            t = ecs.describe_tasks(cluster="broken", tasks=[arn])["tasks"][0]
            return t if t["lastStatus"] == "STOPPED" else None
        t = wait_for("the task to stop", stopped, timeout=60)
        assert t["stopCode"] == "TaskFailedToStart", t
        assert "gVisor sandbox" in t["stoppedReason"] and "host's kernel instead" in t["stoppedReason"], t
        assert "no-such-platform" in t["stoppedReason"], t
        assert host.docker("ps", "-q", "--filter", f"label=com.amazonaws.ecs.task-arn={arn}").split() == []
    finally:
        if agent:
            agent.stop()
        if server:
            server.stop()
        host.stop()


def test_container_isolation_runs_fargate_tasks_hardened_on_the_host_kernel(fg):
    td = register(fg, "fg-iso", linuxParameters={"capabilities": {"add": ["SYS_PTRACE"]}})

    def one(seconds):
        o = {"containerOverrides": [{"name": "app", "command": ["sleep", str(seconds)]}]}
        t = fg.ecs.run_task(cluster=fg.name, taskDefinition=td, launchType="FARGATE", overrides=o,
                            networkConfiguration=net(CONTAINER_SUBNET))["tasks"][0]
        return fg.wait_status(t["taskArn"], "RUNNING")
    a, b = one(4242), one(4343)
    assert isolation_of(a) == isolation_of(b) == "container"
    ca, cb = a["containers"][0]["runtimeId"], b["containers"][0]["runtimeId"]
    for cid, task in ((ca, a), (cb, b)):
        host = docker_inspect(cid)["HostConfig"]
        assert host["Runtime"] == "runc"
        assert "NET_RAW" in (host["CapDrop"] or []) and host["CapAdd"] == ["SYS_PTRACE"]
        assert "no-new-privileges" in host["SecurityOpt"] and not host["Privileged"]
        assert host["Binds"] in (None, []) and not any(m["Type"] == "bind" for m in docker_inspect(cid)["Mounts"])
        task_id = task["taskArn"].rsplit("/", 1)[1]
        assert task_id in host["CgroupParent"], "the task's own cgroup"
        pid = docker_inspect(cid)["State"]["Pid"]
        assert cgroup_limit(pid, "memory", task_id) == 512 * 1024 * 1024
        # What the kernel enforces, as the container's process sees it:
        # no raw sockets (CAP_NET_RAW is bit 13), no privilege gain, the
        # default seccomp filter.
        assert int(status_of(cid, "CapEff"), 16) & (1 << 13) == 0
        assert status_of(cid, "NoNewPrivs") == "1"
        assert status_of(cid, "Seccomp") == "2"
    # Own PID namespaces: B sees none of A's processes, and A's files are not B's.
    docker("exec", ca, "sh", "-c", "echo secret > /only-in-a")
    assert "sleep 4242" in docker("exec", ca, "ps", "-o", "pid,args")
    seen_by_b = docker("exec", cb, "ps", "-o", "pid,args")
    assert "sleep 4343" in seen_by_b and "sleep 4242" not in seen_by_b
    assert subprocess.run(["docker", "exec", cb, "cat", "/only-in-a"], capture_output=True).returncode != 0
    for t in (a, b):
        fg.ecs.stop_task(cluster=fg.name, task=t["taskArn"])


def test_fargate_rules_get_ecs_errors_and_start_nothing(fg):
    td = register(fg, "fg-bad")
    run = fg.ecs.run_task
    before = fg.ecs.list_tasks(cluster=fg.name, desiredStatus="RUNNING")["taskArns"]
    assert error_of(run, cluster=fg.name, taskDefinition=td, launchType="FARGATE") == (
        "InvalidParameterException", "Network Configuration must be provided when networkMode 'awsvpc' is specified.")
    code, msg = error_of(run, cluster=fg.name, taskDefinition=td, launchType="FARGATE", networkConfiguration=net(),
                         placementConstraints=[{"type": "distinctInstance"}])
    assert (code, msg) == ("InvalidParameterException", "Placement constraints are not supported with FARGATE launch type.")
    code, msg = error_of(run, cluster=fg.name, taskDefinition=td, launchType="FARGATE", networkConfiguration=net(),
                         placementStrategy=[{"type": "binpack", "field": "memory"}])
    assert msg == "Placement strategies are not supported with FARGATE launch type."
    code, msg = error_of(run, cluster=fg.name, taskDefinition=td, launchType="FARGATE", networkConfiguration=net(),
                         overrides={"cpu": "256", "memory": "4096"})
    assert code == "ClientException" and msg.startswith("No Fargate configuration exists for given values: 256 CPU, 4096")
    code, msg = error_of(run, cluster=fg.name, taskDefinition=td, launchType="FARGATE",
                         networkConfiguration=net("subnet-nowhere"))
    assert code == "InvalidParameterException" and "subnet-nowhere" in msg
    ec2 = fg.ecs.register_task_definition(family="fg-ec2", containerDefinitions=[
        {"name": "c", "image": IMAGE, "memory": 16}])["taskDefinition"]["taskDefinitionArn"]
    assert error_of(run, cluster=fg.name, taskDefinition=ec2, launchType="FARGATE") == (
        "InvalidParameterException", "Task definition does not support launch_type FARGATE.")
    code, msg = error_of(run, cluster=fg.name, taskDefinition=td, launchType="FARGATE", networkConfiguration=net(),
                         capacityProviderStrategy=[{"capacityProvider": "FARGATE", "weight": 1}])
    assert msg.startswith("Specifying both a launch type and capacity provider strategy is not supported")
    fg.ecs.create_cluster(clusterName=fg.name + "-bare")
    code, msg = error_of(run, cluster=fg.name + "-bare", taskDefinition=td, networkConfiguration=net(),
                         capacityProviderStrategy=[{"capacityProvider": "FARGATE_SPOT", "weight": 1}])
    assert code == "InvalidParameterException" and "not associated with the cluster" in msg
    code, msg = error_of(fg.ecs.register_task_definition, family="fg-priv", networkMode="awsvpc",
                         requiresCompatibilities=["FARGATE"], cpu="256", memory="512",
                         containerDefinitions=[{"name": "c", "image": IMAGE, "privileged": True}])
    assert code == "ClientException" and "do not support privileged containers" in msg
    code, msg = error_of(fg.ecs.register_task_definition, family="fg-cap", networkMode="awsvpc",
                         requiresCompatibilities=["FARGATE"], cpu="256", memory="512",
                         containerDefinitions=[{"name": "c", "image": IMAGE,
                                                "linuxParameters": {"capabilities": {"add": ["NET_ADMIN"]}}}])
    assert code == "ClientException" and "SYS_PTRACE" in msg
    code, msg = error_of(fg.ecs.register_task_definition, family="fg-logs", networkMode="awsvpc",
                         requiresCompatibilities=["FARGATE"], cpu="256", memory="512",
                         containerDefinitions=[{"name": "c", "image": IMAGE, "logConfiguration": {
                             "logDriver": "awslogs", "options": {"awslogs-group": "g", "awslogs-region": "us-east-1"}}}])
    assert (code, msg) == ("ClientException",
                           "Fargate requires task definition to have execution role ARN to support log driver awslogs.")
    # A definition for a CPU no Fargate host has: not a shortage of
    # capacity, and the failure says what is missing.
    other = "X86_64" if platform.machine() == "aarch64" else "ARM64"
    arm = fg.ecs.register_task_definition(
        family="fg-arch", networkMode="awsvpc", requiresCompatibilities=["FARGATE"], cpu="256", memory="512",
        runtimePlatform={"cpuArchitecture": other, "operatingSystemFamily": "LINUX"},
        containerDefinitions=[{"name": "c", "image": IMAGE}])["taskDefinition"]["taskDefinitionArn"]
    r = run(cluster=fg.name, taskDefinition=arm, launchType="FARGATE", networkConfiguration=net())
    assert r["tasks"] == [] and [(f["reason"], f["detail"]) for f in r["failures"]] == [(
        "ATTRIBUTE",
        f"MISSING ATTRIBUTE: ecs.cpu-architecture={other.lower()} (no Fargate capacity provides it)")]
    assert fg.ecs.list_tasks(cluster=fg.name, desiredStatus="RUNNING")["taskArns"] == before


def test_strategies_split_tasks_between_fargate_and_spot_and_spread_zones(fg):
    td = register(fg, "fg-split")
    placed = fg.ecs.run_task(cluster=fg.name, taskDefinition=td, count=5, networkConfiguration=net(),
                             capacityProviderStrategy=[{"capacityProvider": "FARGATE", "base": 1, "weight": 1},
                                                       {"capacityProvider": "FARGATE_SPOT", "weight": 3}])
    assert placed["failures"] == []
    tasks = placed["tasks"]
    providers = collections.Counter(t["capacityProviderName"] for t in tasks)
    assert providers == {"FARGATE": 2, "FARGATE_SPOT": 3}, "base 1, then the other four 1:3"
    assert all(t["launchType"] == "FARGATE" for t in tasks)
    zones = collections.Counter(t["availabilityZone"] for t in tasks)
    assert sorted(zones.values()) == [2, 3], f"spread across zones: {zones}"
    for t in tasks:
        fg.wait_status(t["taskArn"], "RUNNING")
        assert address(fg.task(t["taskArn"]))["subnetId"] == "subnet-" + t["availabilityZone"]
    for t in tasks:
        fg.ecs.stop_task(cluster=fg.name, task=t["taskArn"])

    # Neither a launch type nor a strategy: the cluster's default strategy.
    fg.ecs.put_cluster_capacity_providers(cluster=fg.name, capacityProviders=["FARGATE", "FARGATE_SPOT"],
                                          defaultCapacityProviderStrategy=[{"capacityProvider": "FARGATE_SPOT",
                                                                            "weight": 1}])
    t = fg.ecs.run_task(cluster=fg.name, taskDefinition=td, networkConfiguration=net())["tasks"][0]
    assert (t["launchType"], t["capacityProviderName"]) == ("FARGATE", "FARGATE_SPOT")
    fg.wait_status(t["taskArn"], "RUNNING")
    fg.ecs.stop_task(cluster=fg.name, task=t["taskArn"])
    fg.ecs.put_cluster_capacity_providers(cluster=fg.name, capacityProviders=["FARGATE", "FARGATE_SPOT"],
                                          defaultCapacityProviderStrategy=[])


def test_a_fargate_service_keeps_its_count_and_split(fg):
    td = register(fg, "fg-svc")
    strategy = [{"capacityProvider": "FARGATE", "weight": 1, "base": 0},
                {"capacityProvider": "FARGATE_SPOT", "weight": 1, "base": 0}]
    svc = fg.ecs.create_service(cluster=fg.name, serviceName="fg-svc", taskDefinition=td, desiredCount=4,
                                capacityProviderStrategy=strategy, networkConfiguration=net())["service"]
    assert svc["capacityProviderStrategy"] == strategy and "launchType" not in svc
    assert svc["platformVersion"] == "LATEST"

    def running():
        arns = fg.ecs.list_tasks(cluster=fg.name, serviceName="fg-svc", desiredStatus="RUNNING")["taskArns"]
        ts = fg.ecs.describe_tasks(cluster=fg.name, tasks=arns)["tasks"] if arns else []
        ok = [t for t in ts if t["lastStatus"] == "RUNNING"]
        return ok if len(ok) == 4 else None
    tasks = wait_for("4 Fargate service tasks", running, timeout=60)
    assert collections.Counter(t["capacityProviderName"] for t in tasks) == {"FARGATE": 2, "FARGATE_SPOT": 2}
    assert collections.Counter(t["availabilityZone"] for t in tasks) == {"local-1a": 2, "local-1b": 2}
    assert len({address(t)["privateIPv4Address"] for t in tasks}) == 4
    assert fg.ecs.list_container_instances(cluster=fg.name)["containerInstanceArns"] == []
    # A killed task is replaced on the provider that keeps the split.
    victim = [t for t in tasks if t["capacityProviderName"] == "FARGATE_SPOT"][0]
    docker("kill", victim["containers"][0]["runtimeId"])

    def replaced():
        now = running()
        return now if now and victim["taskArn"] not in {t["taskArn"] for t in now} else None
    tasks = wait_for("the killed task to be replaced", replaced, timeout=60)
    assert collections.Counter(t["capacityProviderName"] for t in tasks) == {"FARGATE": 2, "FARGATE_SPOT": 2}
    # A new strategy is a new deployment onto those providers.
    fg.ecs.update_service(cluster=fg.name, service="fg-svc",
                          capacityProviderStrategy=[{"capacityProvider": "FARGATE", "weight": 1}])
    wait_for("every task on FARGATE", lambda: (lambda ts: ts and all(
        t["capacityProviderName"] == "FARGATE" for t in ts))(running()), timeout=90)
    s = fg.ecs.describe_services(cluster=fg.name, services=["fg-svc"])["services"][0]
    assert s["capacityProviderStrategy"] == [{"capacityProvider": "FARGATE", "weight": 1, "base": 0}]
    fg.ecs.delete_service(cluster=fg.name, service="fg-svc", force=True)
    wait_for("the service's tasks to stop",
             lambda: not fg.ecs.list_tasks(cluster=fg.name, serviceName="fg-svc")["taskArns"], timeout=60)


def test_billing_meters_each_fargate_task_by_size_and_run_time_and_instances_by_the_hour(fg):
    import json
    from conftest import BERTH
    small = register(fg, "fg-bill-small", cpu="256", memory="512")
    big = register(fg, "fg-bill-big", cpu="1024", memory="2048")
    a = fg.ecs.run_task(cluster=fg.name, taskDefinition=small, launchType="FARGATE",
                        networkConfiguration=net())["tasks"][0]
    b = fg.ecs.run_task(cluster=fg.name, taskDefinition=big, networkConfiguration=net(),
                        capacityProviderStrategy=[{"capacityProvider": "FARGATE_SPOT", "weight": 1}])["tasks"][0]
    for t in (a, b):
        fg.wait_status(t["taskArn"], "RUNNING")
    # An EC2-mode instance, registered through the API, pays by the hour.
    ci = fg.ecs.register_container_instance(cluster=fg.name, totalResources=[
        {"name": "CPU", "type": "INTEGER", "integerValue": 2048},
        {"name": "MEMORY", "type": "INTEGER", "integerValue": 4096}])["containerInstance"]
    for t in (a, b):
        fg.ecs.stop_task(cluster=fg.name, task=t["taskArn"])
    a, b = (fg.wait_status(t["taskArn"], "STOPPED") for t in (a, b))
    fg.ecs.deregister_container_instance(cluster=fg.name, containerInstance=ci["containerInstanceArn"], force=True)

    def billing(*extra):
        p = subprocess.run([BERTH, "billing", "--server", fg.server.url, "--cluster", fg.name, *extra],
                           capture_output=True, text=True, timeout=30)
        assert p.returncode == 0, p.stderr
        return p.stdout
    report = json.loads(billing("--json"))
    prices = report["prices"]
    assert (prices["fargateVcpuHour"], prices["fargateGbHour"]) == (0.04045, 0.00442)
    lines = {t["taskArn"]: t for t in report["tasks"]}
    for task, vcpu, gb, ratio in ((a, 0.25, 0.5, 1.0), (b, 1.0, 2.0, prices["spotRatio"])):
        line = lines[task["taskArn"]]
        ran = task["stoppedAt"].timestamp() - task["pullStartedAt"].timestamp()
        assert line["seconds"] == max(60, -(-ran // 1)), "per second, a minute at least"
        assert line["vcpuSeconds"] == vcpu * line["seconds"] and line["gbSeconds"] == gb * line["seconds"]
        expected = (vcpu * prices["fargateVcpuHour"] + gb * prices["fargateGbHour"]) * line["seconds"] / 3600 * ratio
        assert abs(line["usd"] - expected) < 1e-12
    assert lines[b["taskArn"]]["capacityProvider"] == "FARGATE_SPOT"
    # Services sum their tasks; the cluster sums tasks and instances.
    svc = [s for s in report["services"] if s["service"] == "fg-svc"][0]
    mine = [t for t in report["tasks"] if t["service"] == "fg-svc"]
    assert svc["tasks"] == len(mine) >= 4 and abs(svc["usd"] - sum(t["usd"] for t in mine)) < 1e-9
    inst = [i for i in report["instances"] if i["containerInstanceArn"] == ci["containerInstanceArn"]][0]
    assert inst["deregisteredAt"] is not None and inst["seconds"] == 60
    assert abs(inst["usd"] - 60 / 3600 * prices["instanceHour"]) < 1e-12
    cluster = report["clusters"][0]
    assert abs(cluster["totalUsd"] - sum(t["usd"] for t in report["tasks"])
               - sum(i["usd"] for i in report["instances"])) < 1e-9
    table = billing()
    assert a["taskArn"].rsplit("/", 1)[1] in table and "FARGATE_SPOT" in table and "Clusters" in table


def test_fargate_hosts_keep_images_as_their_pull_behaviour_says(fg, tmp_path):
    """Real Fargate pulls every image every time (containers-roadmap #696);
    a Berth Fargate host keeps them under --image-pull-behavior, and the
    registry's access log shows which starts really pulled."""
    registry = Registry(str(tmp_path / "registry")).start()
    name = "fg/busybox:" + uuid.uuid4().hex[:8]
    ref = registry.push(IMAGE, name)
    docker("rmi", ref)
    try:
        td = register(fg, "fg-pull", image=ref)

        def run_in(subnet):
            t = fg.ecs.run_task(cluster=fg.name, taskDefinition=td, launchType="FARGATE",
                                networkConfiguration=net(subnet))["tasks"][0]
            t = fg.wait_status(t["taskArn"], "RUNNING")
            assert t["pullStartedAt"] <= t["pullStoppedAt"] <= t["startedAt"]
            return t
        first = run_in("subnet-local-1c")
        assert registry.manifest_gets(name) == 1, "the once host pulls what it never pulled"
        second = run_in("subnet-local-1c")
        assert registry.manifest_gets(name) == 1, "and then starts from its cache"
        third = run_in("subnet-local-1a")
        assert registry.manifest_gets(name) == 2, "a host with the default behaviour pulls every time"
        fifth = run_in("subnet-local-1b")
        assert registry.manifest_gets(name) == 2, "a prefer-cached host starts from what the engine has"
        docker("rmi", "-f", ref)
        sixth = run_in("subnet-local-1b")
        assert registry.manifest_gets(name) == 3, "and pulls when the engine has it no more"
        registry.stop()
        fourth = run_in("subnet-local-1c")
        for t in (first, second, third, fourth, fifth, sixth):
            fg.ecs.stop_task(cluster=fg.name, task=t["taskArn"])
    finally:
        registry.stop()
        subprocess.run(["docker", "rmi", "-f", ref], capture_output=True)


def test_a_task_takes_a_namespace_its_host_made_ahead_and_the_host_makes_another(fg):
    """Warm addresses: each host keeps namespaces ready at a few addresses
    the server holds for it (--warm-addresses, 2 by default), so a task
    placed there skips making one; the host then gets a new one."""
    def warm_pauses():
        out = docker("ps", "--filter", "label=berth.warm-address", "--format", '{{.ID}} {{.Label "berth.warm-address"}}')
        return dict(reversed(line.split()) for line in out.splitlines())
    zone = ipaddress.ip_network(SUBNETS[CONTAINER_SUBNET])
    before = wait_for("two warm namespaces in local-1b", lambda: (lambda w: w if len(
        [ip for ip in w if ipaddress.ip_address(ip) in zone]) >= 2 else None)(warm_pauses()))
    td = register(fg, "fg-warm")
    t = fg.ecs.run_task(cluster=fg.name, taskDefinition=td, launchType="FARGATE",
                        networkConfiguration=net(CONTAINER_SUBNET))["tasks"][0]
    t = fg.wait_status(t["taskArn"], "RUNNING")
    ip = address(t)["privateIPv4Address"]
    assert ip in before, "the task took one of its host's warm addresses"
    mode = docker_inspect(t["containers"][0]["runtimeId"])["HostConfig"]["NetworkMode"]
    made_ahead = docker_inspect(before[ip])["Id"]
    assert mode == f"container:{made_ahead}", "and the namespace made for it"
    # The server holds another address for the host, which makes its namespace.
    wait_for("a new warm namespace", lambda: len(
        [a for a in warm_pauses() if a != ip and ipaddress.ip_address(a) in zone]) >= 2)
    fg.ecs.stop_task(cluster=fg.name, task=t["taskArn"])
    fg.wait_status(t["taskArn"], "STOPPED")
    gone = subprocess.run(["docker", "inspect", made_ahead], capture_output=True).returncode != 0
    assert gone, "its namespace went with it"


def test_a_fargate_task_lets_in_only_what_its_security_groups_allow(fg):
    import urllib.request
    td = register(fg, "fg-web", command=("sh", "-c", "mkdir -p /www; echo up > /www/index.html; exec httpd -f -p 8080 -h /www"))

    def get(url):
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                return r.read().decode()
        except OSError:
            return None

    def serving(group):
        n = {"awsvpcConfiguration": {"subnets": ["subnet-local-1a"], "securityGroups": [group]}}
        t = fg.ecs.run_task(cluster=fg.name, taskDefinition=td, launchType="FARGATE", networkConfiguration=n)["tasks"][0]
        t = fg.wait_status(t["taskArn"], "RUNNING")
        return t, address(t)["privateIPv4Address"]
    open_task, open_ip = serving("sg-allow-all")
    closed_task, closed_ip = serving("sg-default")
    assert wait_for("the open task", lambda: get(f"http://{open_ip}:8080/")) == "up\n"
    # sg-default lets in its own members only: not this host.
    assert get(f"http://{closed_ip}:8080/") is None
    # ... but it serves, inside its own namespace.
    c = closed_task["containers"][0]["runtimeId"]
    assert "up" in docker("exec", c, "wget", "-qO-", "http://127.0.0.1:8080/")
    # Rules changed with the EC2 API reach the sandbox's host chains: an
    # ingress rule lets the host in, and without its egress rule the task
    # reaches nothing out of its sandbox.
    from conftest import make_client
    ec2 = make_client(fg.server.url, "ec2")
    rule = [{"IpProtocol": "tcp", "FromPort": 8080, "ToPort": 8080, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}]
    ec2.authorize_security_group_ingress(GroupId="sg-default", IpPermissions=rule)
    assert wait_for("the rule to let the host in", lambda: get(f"http://{closed_ip}:8080/"), timeout=10) == "up\n"
    ec2.revoke_security_group_ingress(GroupId="sg-default", IpPermissions=rule)
    assert wait_for("the rule to go", lambda: get(f"http://{closed_ip}:8080/") is None, timeout=10)

    def reaches_open():
        return subprocess.run(["docker", "exec", c, "timeout", "3", "wget", "-qO-", f"http://{open_ip}:8080/"],
                              capture_output=True).returncode == 0
    assert wait_for("the task to reach the open one", reaches_open)
    out = [{"IpProtocol": "-1", "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}]
    ec2.revoke_security_group_egress(GroupId="sg-default", IpPermissions=out)
    try:
        assert wait_for("egress to close", lambda: not reaches_open(), timeout=15)
    finally:
        ec2.authorize_security_group_egress(GroupId="sg-default", IpPermissions=out)
    assert wait_for("egress to open again", reaches_open, timeout=15)
    for t in (open_task, closed_task):
        fg.ecs.stop_task(cluster=fg.name, task=t["taskArn"])


def test_a_fargate_task_gets_its_secrets_and_its_role(fg):
    """The Fargate pool's hosts fetch a task's secrets like any host: the
    server answers the host the task is placed on, with the task's
    execution role; and its containers reach their task role's
    credentials at 169.254.170.2 from the task's own namespace."""
    import json
    url = fg.server.url
    ssm, iam = make_client(url, "ssm"), make_client(url, "iam")
    ssm.put_parameter(Name="/fg-secrets/db", Value="fargate-secret", Type="SecureString")
    trust = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole",
                                                     "Principal": {"Service": "ecs-tasks.amazonaws.com"}}]}
    role = iam.create_role(RoleName="fg-exec", AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"]
    app = iam.create_role(RoleName="fg-app", AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"]
    iam.put_role_policy(RoleName="fg-exec", PolicyName="read", PolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "ssm:GetParameters",
                                                "Resource": "arn:aws:ssm:us-east-1:000000000000:parameter/fg-secrets/*"}]}))
    td = fg.ecs.register_task_definition(
        family="fg-secrets", networkMode="awsvpc", requiresCompatibilities=["FARGATE"], cpu="256", memory="512",
        executionRoleArn=role, taskRoleArn=app, containerDefinitions=[{
            "name": "app", "image": IMAGE, "command": ["sleep", "600"], "stopTimeout": 1,
            "secrets": [{"name": "DB", "valueFrom": "/fg-secrets/db"}]}])["taskDefinition"]["taskDefinitionArn"]
    t = fg.ecs.run_task(cluster=fg.name, taskDefinition=td, launchType="FARGATE",
                        networkConfiguration=net())["tasks"][0]
    t = fg.wait_status(t["taskArn"], "RUNNING")
    container = t["containers"][0]["runtimeId"]
    env = dict(e.split("=", 1) for e in docker_inspect(container)["Config"]["Env"])
    assert env["DB"] == "fargate-secret"
    got = json.loads(docker("exec", container, "wget", "-qO-",
                            "http://169.254.170.2" + env["AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"]))
    assert got["RoleArn"] == app and got["AccessKeyId"].startswith("ASIA"), got
    fg.ecs.stop_task(cluster=fg.name, task=t["taskArn"])


def test_a_production_style_definition_runs_on_fargate(fg):
    task, given = production_task(fg.ecs, fg.name, fg.server.url, "fg-prod", "FARGATE")
    assert task["launchType"] == "FARGATE"
    check_production_task(fg.ecs, fg.name, task, given)

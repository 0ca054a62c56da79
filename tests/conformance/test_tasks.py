"""Tasks on real Docker through boto3 and the aws CLI: RunTask to RUNNING
with the right container settings, essential exits, failed pulls, StopTask's
SIGTERM then SIGKILL, dependsOn, placement across two agents, logs, and bad
input. Every test here runs real containers."""

import glob
import json
import os
import platform
import subprocess
import sys
import threading
import time
import urllib.request

import boto3

import botocore.exceptions
import pytest

from conftest import (BERTH, IMAGE, Cluster, Registry, aws_cli, cgroup_dir, cgroup_limit, check_production_task, docker,
                      docker_inspect, make_client, production_task, wait_for)


@pytest.fixture(scope="module")
def cl(tmp_path_factory):
    c = Cluster(str(tmp_path_factory.mktemp("tasks")), "e2e", [["stack=blue"], ["stack=green"]],
                extra_env={"BERTH_AGENT_TIMEOUT": "3"}).start()
    yield c
    c.stop()


def register(cl, family, containers, **kw):
    return cl.ecs.register_task_definition(family=family, containerDefinitions=containers, **kw)["taskDefinition"]


def python_from_the_host():
    """Volumes (name -> host path) that give a busybox container this
    host's Python and the tests' venv (boto3 with it), read-only at the
    same paths: no registry here has an image with them."""
    mounted = sorted({"/usr", "/lib", "/lib64", sys.prefix, sys.base_prefix})
    return {f"host{i}": p for i, p in enumerate(mounted)
            if os.path.exists(p) and not any(p.startswith(q + "/") for q in mounted)}


def files_under(top):
    """Every regular file under `top` (not the sockets tasks leave there)."""
    for root, _, files in os.walk(top):
        for f in files:
            path = os.path.join(root, f)
            if os.path.isfile(path):
                yield path


def run(cl, family, **kw):
    r = cl.ecs.run_task(cluster=cl.name, taskDefinition=family, **kw)
    assert r["failures"] == [], r["failures"]
    return r["tasks"]


def error(call):
    with pytest.raises(botocore.exceptions.ClientError) as e:
        call()
    return e.value.response["Error"]["Code"], e.value.response["Error"]["Message"]


def test_run_task_reaches_running_with_the_containers_settings(cl, name):
    register(cl, name, [{
        "name": "web", "image": IMAGE, "cpu": 256, "memory": 96, "memoryReservation": 48,
        "command": ["sh", "-c", "echo started; exec httpd -f -p 8080"],
        "environment": [{"name": "GREETING", "value": "hi"}],
        "portMappings": [{"containerPort": 8080, "hostPort": 0}],
        "dockerLabels": {"team": "core"},
        "workingDirectory": "/tmp", "ulimits": [{"name": "nofile", "softLimit": 1024, "hardLimit": 2048}],
        "linuxParameters": {"initProcessEnabled": True, "capabilities": {"drop": ["NET_RAW"]}},
        "interactive": True, "pseudoTerminal": True,
        "systemControls": [{"namespace": "net.ipv4.ip_unprivileged_port_start", "value": "80"}],
    }])
    t = run(cl, name, overrides={"containerOverrides": [{"name": "web", "environment": [{"name": "EXTRA", "value": "1"}]}]},
            startedBy="e2e", tags=[{"key": "k", "value": "v"}])[0]
    assert t["lastStatus"] in ("PROVISIONING", "PENDING")
    assert t["desiredStatus"] == "RUNNING"
    assert t["group"] == f"family:{name}"
    assert t["containers"][0]["containerArn"].startswith("arn:aws:ecs:us-east-1:000000000000:container/e2e/")
    t = cl.wait_status(t["taskArn"], "RUNNING")
    for field in ("createdAt", "pullStartedAt", "pullStoppedAt", "startedAt"):
        assert field in t, field
    assert t["createdAt"] <= t["pullStartedAt"] <= t["pullStoppedAt"] <= t["startedAt"]
    c = t["containers"][0]
    assert c["lastStatus"] == "RUNNING"
    binding = c["networkBindings"][0]
    assert binding["containerPort"] == 8080 and binding["hostPort"] >= 32768
    d = docker_inspect(c["runtimeId"])
    host = d["HostConfig"]
    assert host["Memory"] == 96 * 1024 * 1024
    assert host["MemoryReservation"] == 48 * 1024 * 1024
    assert host["CpuShares"] == 256
    assert host["Init"] is True
    assert "NET_RAW" in (host["CapDrop"] or [])
    assert {"Name": "nofile", "Soft": 1024, "Hard": 2048} in host["Ulimits"]
    assert d["Config"]["WorkingDir"] == "/tmp"
    assert d["Config"]["OpenStdin"] is True and d["Config"]["Tty"] is True
    assert host["Sysctls"] == {"net.ipv4.ip_unprivileged_port_start": "80"}
    env = d["Config"]["Env"]
    assert "GREETING=hi" in env and "EXTRA=1" in env and "AWS_EXECUTION_ENV=AWS_ECS_EC2" in env
    labels = d["Config"]["Labels"]
    assert labels["team"] == "core"
    assert labels["com.amazonaws.ecs.task-arn"] == t["taskArn"]
    assert labels["com.amazonaws.ecs.cluster"] == "e2e"
    assert labels["com.amazonaws.ecs.container-name"] == "web"
    assert labels["com.amazonaws.ecs.task-definition-family"] == name
    published = d["NetworkSettings"]["Ports"]["8080/tcp"][0]["HostPort"]
    assert int(published) == binding["hostPort"]
    # The port really serves.
    wait_for("httpd", lambda: _get(f"http://127.0.0.1:{binding['hostPort']}/"))
    # The instance counts the task and its reservation.
    ci = cl.ecs.describe_container_instances(cluster=cl.name, containerInstances=[t["containerInstanceArn"]])["containerInstances"][0]
    assert ci["runningTasksCount"] >= 1
    cpu_left = [r for r in ci["remainingResources"] if r["name"] == "CPU"][0]["integerValue"]
    cpu_total = [r for r in ci["registeredResources"] if r["name"] == "CPU"][0]["integerValue"]
    assert cpu_left <= cpu_total - 256
    listed = cl.ecs.list_tasks(cluster=cl.name, family=name)["taskArns"]
    assert listed == [t["taskArn"]]
    assert cl.ecs.list_tasks(cluster=cl.name, startedBy="e2e")["taskArns"] == [t["taskArn"]]
    tagged = cl.ecs.describe_tasks(cluster=cl.name, tasks=[t["taskArn"]], include=["TAGS"])["tasks"][0]
    assert tagged["tags"] == [{"key": "k", "value": "v"}]
    cl.ecs.stop_task(cluster=cl.name, task=t["taskArn"])
    cl.wait_status(t["taskArn"], "STOPPED")


def _get(url):
    """The HTTP status of `url`, any status; None if nothing answers."""
    import urllib.error
    import urllib.request
    try:
        with urllib.request.urlopen(url, timeout=1) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return None


def test_an_essential_container_exiting_stops_the_task_with_its_exit_code(cl, name):
    register(cl, name, [
        {"name": "main", "image": IMAGE, "memory": 32, "command": ["sh", "-c", "sleep 1; exit 3"]},
        {"name": "side", "image": IMAGE, "memory": 32, "essential": False, "command": ["sleep", "600"], "stopTimeout": 1},
    ])
    t = run(cl, name)[0]
    t = cl.wait_status(t["taskArn"], "STOPPED")
    assert t["stopCode"] == "EssentialContainerExited"
    assert t["stoppedReason"] == "Essential container in task exited"
    assert t["desiredStatus"] == "STOPPED"
    by = {c["name"]: c for c in t["containers"]}
    assert by["main"]["exitCode"] == 3
    assert by["side"]["lastStatus"] == "STOPPED"
    assert t["stoppingAt"] <= t["executionStoppedAt"] <= t["stoppedAt"]
    assert t["taskArn"] in cl.ecs.list_tasks(cluster=cl.name, desiredStatus="STOPPED")["taskArns"]
    assert t["taskArn"] not in cl.ecs.list_tasks(cluster=cl.name)["taskArns"]
    # Its containers are removed once the server has it STOPPED.
    def gone():
        p = subprocess.run(["docker", "ps", "-aq", "--filter", f"label=com.amazonaws.ecs.task-arn={t['taskArn']}"], capture_output=True, text=True)
        return p.stdout.strip() == ""
    wait_for("containers to be removed", gone)


def test_a_missing_image_stops_the_task_with_cannot_pull(cl, name):
    register(cl, name, [{"name": "app", "image": "berth-test/does-not-exist:1", "memory": 32}])
    t = run(cl, name)[0]
    t = cl.wait_status(t["taskArn"], "STOPPED")
    assert t["stopCode"] == "TaskFailedToStart"
    assert t["stoppedReason"].startswith("CannotPullContainerError:"), t["stoppedReason"]
    assert t["containers"][0]["reason"].startswith("CannotPullContainerError:")
    assert "pullStartedAt" in t and "pullStoppedAt" in t
    assert "startedAt" not in t


def test_stop_task_sends_sigterm_then_sigkill_after_stop_timeout(cl, name):
    register(cl, name, [
        {"name": "stubborn", "image": IMAGE, "memory": 32, "stopTimeout": 2,
         "command": ["sh", "-c", "trap '' TERM; while true; do sleep 0.2; done"]},
        {"name": "polite", "image": IMAGE, "memory": 32, "stopTimeout": 20,
         "command": ["sh", "-c", "trap 'exit 42' TERM; while true; do sleep 0.2; done"]},
    ])
    t = run(cl, name)[0]
    cl.wait_status(t["taskArn"], "RUNNING")
    began = time.time()
    stopped = cl.ecs.stop_task(cluster=cl.name, task=t["taskArn"], reason="e2e says stop")["task"]
    assert stopped["desiredStatus"] == "STOPPED"
    assert stopped["lastStatus"] != "STOPPED"
    assert "stoppingAt" in stopped
    t = cl.wait_status(t["taskArn"], "STOPPED")
    took = time.time() - began
    by = {c["name"]: c for c in t["containers"]}
    assert by["stubborn"]["exitCode"] == 137, "SIGKILL after the timeout"
    assert by["polite"]["exitCode"] == 42, "SIGTERM handled"
    assert 2 <= took < 15, took
    assert t["stopCode"] == "UserInitiated"
    assert t["stoppedReason"] == "e2e says stop"


def test_depends_on_orders_the_containers(cl, name):
    register(cl, name, [
        {"name": "init", "image": IMAGE, "memory": 32, "essential": False, "command": ["sh", "-c", "sleep 1; exit 0"]},
        {"name": "db", "image": IMAGE, "memory": 32, "command": ["sleep", "600"], "stopTimeout": 1,
         "healthCheck": {"command": ["CMD-SHELL", "true"], "interval": 5, "timeout": 2, "retries": 1, "startPeriod": 0}},
        {"name": "app", "image": IMAGE, "memory": 32, "command": ["sleep", "600"], "stopTimeout": 1,
         "dependsOn": [{"containerName": "init", "condition": "SUCCESS"}, {"containerName": "db", "condition": "HEALTHY"}]},
    ])
    t = run(cl, name)[0]
    t = cl.wait_status(t["taskArn"], "RUNNING", timeout=60)
    by = {c["name"]: docker_inspect(c["runtimeId"])["State"] for c in t["containers"]}
    assert by["app"]["StartedAt"] > by["init"]["FinishedAt"], "app waits for init to succeed"
    assert by["app"]["StartedAt"] > by["db"]["StartedAt"]
    t = cl.task(t["taskArn"])
    health = {c["name"]: c.get("healthStatus") for c in t["containers"]}
    assert health["db"] == "HEALTHY"
    assert t["healthStatus"] == "HEALTHY"
    cl.ecs.stop_task(cluster=cl.name, task=t["taskArn"])
    cl.wait_status(t["taskArn"], "STOPPED")


def test_placement_failures_report_ecs_reasons(cl, name):
    register(cl, name, [{"name": "big", "image": IMAGE, "memory": 10_000_000}])
    r = cl.ecs.run_task(cluster=cl.name, taskDefinition=name)
    assert r["tasks"] == []
    assert {f["reason"] for f in r["failures"]} == {"RESOURCE:MEMORY"}
    assert len(r["failures"]) == 2
    register(cl, name + "x", [{"name": "c", "image": IMAGE, "memory": 16}])
    r = cl.ecs.run_task(cluster=cl.name, taskDefinition=name + "x",
                        placementConstraints=[{"type": "memberOf", "expression": "attribute:stack == red"}])
    assert r["tasks"] == [] and r["failures"]
    assert all("MemberOf" in f["reason"] for f in r["failures"])


def test_distinct_instance_and_member_of_across_two_agents(cl, name):
    register(cl, name, [{"name": "c", "image": IMAGE, "memory": 16, "command": ["sleep", "600"], "stopTimeout": 1}])
    tasks = run(cl, name, count=2, placementConstraints=[{"type": "distinctInstance"}])
    assert len({t["containerInstanceArn"] for t in tasks}) == 2
    more = cl.ecs.run_task(cluster=cl.name, taskDefinition=name, count=3, placementConstraints=[{"type": "distinctInstance"}])
    assert len(more["tasks"]) == 0, "two instances already hold a task of the group"
    assert more["failures"]
    green = run(cl, name, count=3, group="green-only",
                placementConstraints=[{"type": "memberOf", "expression": "attribute:stack == green"}])
    instances = {c["containerInstanceArn"]: c for c in cl.ecs.describe_container_instances(
        cluster=cl.name, containerInstances=list(cl.instances().values()))["containerInstances"]}
    for t in green:
        attrs = {a["name"]: a.get("value") for a in instances[t["containerInstanceArn"]]["attributes"]}
        assert attrs["stack"] == "green"
    for t in tasks + green:
        cl.wait_status(t["taskArn"], "RUNNING")
        # Each agent ran only what was placed on it.
        cid = cl.task(t["taskArn"])["containers"][0]["runtimeId"]
        owner = docker_inspect(cid)["Config"]["Labels"]["berth.instance"]
        assert t["containerInstanceArn"].endswith(owner)
    # ListContainerInstances' query language sees the tasks and their groups.
    green_arn = green[0]["containerInstanceArn"]
    listed = cl.ecs.list_container_instances(cluster=cl.name, filter="task:group == green-only")
    assert listed["containerInstanceArns"] == [green_arn]
    busy = cl.ecs.list_container_instances(cluster=cl.name, filter="runningTasksCount >= 4")
    assert green_arn in busy["containerInstanceArns"]
    for t in tasks + green:
        cl.ecs.stop_task(cluster=cl.name, task=t["taskArn"])
    for t in tasks + green:
        cl.wait_status(t["taskArn"], "STOPPED")


def test_run_task_client_token_is_idempotent(cl, name):
    register(cl, name, [{"name": "c", "image": IMAGE, "memory": 16, "command": ["sleep", "600"], "stopTimeout": 1}])
    a = run(cl, name, clientToken="tok-" + name)
    b = run(cl, name, clientToken="tok-" + name)
    assert [t["taskArn"] for t in a] == [t["taskArn"] for t in b]
    code, _ = error(lambda: cl.ecs.run_task(cluster=cl.name, taskDefinition=name, count=2, clientToken="tok-" + name))
    assert code == "ConflictException"
    cl.ecs.stop_task(cluster=cl.name, task=a[0]["taskArn"])


def test_logs_show_the_containers_output(cl, name):
    register(cl, name, [{"name": "talker", "image": IMAGE, "memory": 16,
                         "command": ["sh", "-c", "echo one; echo two >&2; sleep 1; echo three"]}])
    t = run(cl, name)[0]
    cl.wait_status(t["taskArn"], "STOPPED")
    out = subprocess.run([BERTH, "logs", t["taskArn"], "--cluster", cl.name, "--server", cl.server.url],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines == ["talker | one", "talker | two", "talker | three"] or sorted(lines) == sorted(
        ["talker | one", "talker | two", "talker | three"]), lines
    follow = subprocess.Popen([BERTH, "logs", t["taskArn"].rsplit("/", 1)[1], "--cluster", cl.name,
                               "--server", cl.server.url, "--follow"], stdout=subprocess.PIPE, text=True)
    first = follow.stdout.readline()
    follow.kill()
    assert first.startswith("talker | ")


def test_the_aws_cli_runs_and_stops_tasks(cl, name):
    aws_cli(cl.server, "ecs", "register-task-definition", "--family", name, "--container-definitions",
            f'[{{"name":"c","image":"{IMAGE}","memory":16,"command":["sleep","600"],"stopTimeout":1}}]')
    out = aws_cli(cl.server, "ecs", "run-task", "--cluster", cl.name, "--task-definition", name)
    arn = out["tasks"][0]["taskArn"]
    aws_cli(cl.server, "ecs", "wait", "tasks-running", "--cluster", cl.name, "--tasks", arn)
    aws_cli(cl.server, "ecs", "stop-task", "--cluster", cl.name, "--task", arn)
    aws_cli(cl.server, "ecs", "wait", "tasks-stopped", "--cluster", cl.name, "--tasks", arn)
    t = aws_cli(cl.server, "ecs", "describe-tasks", "--cluster", cl.name, "--tasks", arn)["tasks"][0]
    assert t["lastStatus"] == "STOPPED"


def test_bad_input_is_refused_and_starts_nothing(cl, name):
    register(cl, name, [{"name": "c", "image": IMAGE, "memory": 16}])
    before = cl.ecs.list_tasks(cluster=cl.name)["taskArns"]
    cases = [
        (dict(taskDefinition="nope-" + name), "ClientException", "Unable to describe task definition."),
        (dict(taskDefinition=name, cluster="no-such-cluster"), "ClusterNotFoundException", "Cluster not found."),
        (dict(taskDefinition=name, count=11), "InvalidParameterException", "count"),
        (dict(taskDefinition=name, launchType="EC2", capacityProviderStrategy=[{"capacityProvider": "FARGATE", "weight": 1}]),
         "InvalidParameterException", "launch type and capacity provider strategy"),
        (dict(taskDefinition=name, placementConstraints=[{"type": "memberOf", "expression": "attribute:stack =="}]),
         "InvalidParameterException", "placementConstraints"),
        (dict(taskDefinition=name, placementStrategy=[{"type": "binpack", "field": "disk"}]),
         "InvalidParameterException", "binpack"),
        (dict(taskDefinition=name, overrides={"containerOverrides": [{"name": "ghost"}]}),
         "InvalidParameterException", "ghost"),
    ]
    for kw, code, says in cases:
        kw.setdefault("cluster", cl.name)
        got, message = error(lambda: cl.ecs.run_task(**kw))
        assert got == code, (kw, got, message)
        assert says in message, (kw, message)
    assert cl.ecs.list_tasks(cluster=cl.name)["taskArns"] == before
    code, message = error(lambda: cl.ecs.stop_task(cluster=cl.name, task="0" * 32))
    assert (code, message) == ("InvalidParameterException", "The referenced task was not found.")
    code, message = error(lambda: cl.ecs.describe_tasks(cluster=cl.name, tasks=[]))
    assert message == "Tasks cannot be empty."
    d = cl.ecs.describe_tasks(cluster=cl.name, tasks=["0" * 32])
    assert d["failures"][0]["reason"] == "MISSING"
    code, _ = error(lambda: cl.ecs.list_tasks(cluster=cl.name, desiredStatus="DEAD"))
    assert code == "InvalidParameterException"


def test_volumes_links_and_the_other_container_settings_reach_the_engine(cl, name, tmp_path):
    # A host directory that does not exist yet: made, as Docker's -v makes it.
    host_dir = str(tmp_path / "made" / "here")
    # The linking container comes first: the one it links to starts first.
    register(cl, name, [
        {"name": "app", "image": IMAGE, "memory": 16, "command": ["sleep", "600"], "stopTimeout": 1,
         "links": ["db:database"], "volumesFrom": [{"sourceContainer": "db", "readOnly": True}],
         "extraHosts": [{"hostname": "svc.local", "ipAddress": "10.1.2.3"}], "dnsServers": ["10.0.0.2"],
         "hostname": "apphost", "readonlyRootFilesystem": True,
         "linuxParameters": {"tmpfs": [{"containerPath": "/run/t", "size": 16}], "sharedMemorySize": 32}},
        {"name": "db", "image": IMAGE, "memory": 16, "command": ["sleep", "600"], "stopTimeout": 1,
         "mountPoints": [{"sourceVolume": "data", "containerPath": "/data"},
                         {"sourceVolume": "scratch", "containerPath": "/scratch"}],
         # The engine's own driver: the hosts advertise it, and it is passed on.
         "logConfiguration": {"logDriver": "json-file", "options": {"max-size": "1m", "max-file": "2"}}},
    ], volumes=[{"name": "data", "host": {"sourcePath": host_dir}},
                {"name": "scratch", "dockerVolumeConfiguration": {
                    "scope": "task", "driver": "local", "labels": {"team": "a"},
                    "driverOpts": {"type": "tmpfs", "device": "tmpfs", "o": "size=8m"}}}])
    t = run(cl, name)[0]
    t = cl.wait_status(t["taskArn"], "RUNNING")
    by = {c["name"]: docker_inspect(c["runtimeId"]) for c in t["containers"]}
    db_mounts = {m["Destination"]: m for m in by["db"]["Mounts"]}
    assert db_mounts["/data"]["Type"] == "bind" and db_mounts["/data"]["Source"] == host_dir
    assert os.path.isdir(host_dir)
    assert db_mounts["/scratch"]["Type"] == "volume"
    volume = json.loads(docker("volume", "inspect", db_mounts["/scratch"]["Name"]))[0]
    assert volume["Labels"].get("team") == "a", volume
    assert volume["Options"] == {"type": "tmpfs", "device": "tmpfs", "o": "size=8m"}, volume
    assert by["db"]["HostConfig"]["LogConfig"] == {"Type": "json-file", "Config": {"max-size": "1m", "max-file": "2"}}
    host = by["app"]["HostConfig"]
    assert host["VolumesFrom"] == [by["db"]["Name"].lstrip("/") + ":ro"]
    assert host["Links"] and "database" in host["Links"][0]
    assert host["ExtraHosts"] == ["svc.local:10.1.2.3"]
    assert host["Dns"] == ["10.0.0.2"]
    assert host["ReadonlyRootfs"] is True
    assert "/run/t" in host["Tmpfs"] and host["ShmSize"] == 32 * 1024 * 1024
    assert by["app"]["Config"]["Hostname"] == "apphost"
    cl.ecs.stop_task(cluster=cl.name, task=t["taskArn"])
    cl.wait_status(t["taskArn"], "STOPPED")


def test_bridge_mode_tasks_reach_only_each_others_published_ports(cl, name):
    serve = "mkdir -p /w && echo {0} > /w/index.html && exec httpd -f -p {1} -h /w"
    register(cl, name, [
        {"name": "web", "image": IMAGE, "memory": 16, "stopTimeout": 1, "portMappings": [{"containerPort": 8080}],
         "command": ["sh", "-c", serve.format("web", 8080)]},
        {"name": "admin", "image": IMAGE, "memory": 16, "stopTimeout": 1, "command": ["sh", "-c", serve.format("admin", 9090)]},
        {"name": "side", "image": IMAGE, "memory": 16, "stopTimeout": 1, "links": ["admin"], "command": ["sleep", "600"]}])
    register(cl, name + "-other", [{"name": "probe", "image": IMAGE, "memory": 16, "stopTimeout": 1,
                                    "command": ["sleep", "600"]}])
    # Both on one host, where they share its bridge.
    t = run(cl, name, placementConstraints=[{"type": "memberOf", "expression": "attribute:stack == blue"}])[0]
    o = run(cl, name + "-other", placementConstraints=[{"type": "memberOf", "expression": "attribute:stack == blue"}])[0]
    t = cl.wait_status(t["taskArn"], "RUNNING")
    o = cl.wait_status(o["taskArn"], "RUNNING")
    ids = {c["name"]: c["runtimeId"] for c in t["containers"] + o["containers"]}
    ip = {n: docker("inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", i).strip()
          for n, i in ids.items()}

    def fetch(container, url):
        p = subprocess.run(["docker", "exec", ids[container], "timeout", "3", "wget", "-qO-", url],
                           capture_output=True, text=True)
        return p.stdout.strip() if p.returncode == 0 else None
    # Its own task's containers, by link and by address.
    assert wait_for("the sidecar to reach admin", lambda: fetch("side", "http://admin:9090/") == "admin", timeout=10)
    assert fetch("side", f"http://{ip['web']}:8080/") == "web"
    # Another task: the published container port only.
    assert fetch("probe", f"http://{ip['web']}:8080/") == "web"
    assert fetch("probe", f"http://{ip['admin']}:9090/") is None
    # The host reaches them all, as it does on ECS.
    with urllib.request.urlopen(f"http://{ip['admin']}:9090/", timeout=5) as r:
        assert r.read().strip() == b"admin"
    for x in (t, o):
        cl.ecs.stop_task(cluster=cl.name, task=x["taskArn"])


def test_a_shared_volume_is_made_only_with_autoprovision(cl, name):
    volume = "shared-" + name
    def define(family, **config):
        register(cl, family, [{"name": "c", "image": IMAGE, "memory": 16, "command": ["sleep", "600"],
                               "stopTimeout": 1, "mountPoints": [{"sourceVolume": volume, "containerPath": "/v"}]}],
                 volumes=[{"name": volume,
                           "dockerVolumeConfiguration": {"scope": "shared", "driver": "local", **config}}])
    define(name)
    t = cl.wait_status(run(cl, name)[0]["taskArn"], "STOPPED")
    assert t["stopCode"] == "TaskFailedToStart" and "autoprovision" in t["stoppedReason"], t["stoppedReason"]
    define(name + "-auto", autoprovision=True)
    t = cl.wait_status(run(cl, name + "-auto")[0]["taskArn"], "RUNNING")
    cl.ecs.stop_task(cluster=cl.name, task=t["taskArn"])
    cl.wait_status(t["taskArn"], "STOPPED")
    assert json.loads(docker("volume", "inspect", volume))[0]["Name"] == volume
    subprocess.run(["docker", "volume", "rm", "-f", volume], capture_output=True)


def test_host_networking_start_task_and_draining(cl, name):
    register(cl, name, [{"name": "web", "image": IMAGE, "memory": 16, "stopTimeout": 1,
                         "command": ["httpd", "-f", "-p", "18931"], "portMappings": [{"containerPort": 18931}]}],
             networkMode="host")
    instances = sorted(cl.instances().values())
    started = cl.ecs.start_task(cluster=cl.name, taskDefinition=name, containerInstances=[instances[0]])
    assert started["failures"] == []
    t = started["tasks"][0]
    assert t["containerInstanceArn"] == instances[0]
    t = cl.wait_status(t["taskArn"], "RUNNING")
    assert t["containers"][0]["networkBindings"][0]["hostPort"] == 18931
    assert docker_inspect(t["containers"][0]["runtimeId"])["HostConfig"]["NetworkMode"] == "host"
    # The static host port is taken on that instance now.
    again = cl.ecs.start_task(cluster=cl.name, taskDefinition=name, containerInstances=[instances[0]])
    assert again["tasks"] == [] and again["failures"][0]["reason"] == "RESOURCE:PORTS"
    cl.ecs.stop_task(cluster=cl.name, task=t["taskArn"])
    cl.wait_status(t["taskArn"], "STOPPED")
    # A DRAINING instance takes no new tasks.
    cl.ecs.update_container_instances_state(cluster=cl.name, containerInstances=[instances[1]], status="DRAINING")
    try:
        register(cl, name + "d", [{"name": "c", "image": IMAGE, "memory": 16, "command": ["sleep", "600"], "stopTimeout": 1}])
        placed = run(cl, name + "d", count=3)
        assert {p["containerInstanceArn"] for p in placed} == {instances[0]}
        for p in placed:
            cl.ecs.stop_task(cluster=cl.name, task=p["taskArn"])
    finally:
        cl.ecs.update_container_instances_state(cluster=cl.name, containerInstances=[instances[1]], status="ACTIVE")


def test_network_mode_none_leaves_only_loopback(cl, name):
    register(cl, name, [{"name": "c", "image": IMAGE, "memory": 16, "command": ["sleep", "600"], "stopTimeout": 1}],
             networkMode="none")
    t = run(cl, name)[0]
    t = cl.wait_status(t["taskArn"], "RUNNING")
    c = t["containers"][0]
    assert c.get("networkBindings", []) == []
    assert docker_inspect(c["runtimeId"])["HostConfig"]["NetworkMode"] == "none"
    assert docker("exec", c["runtimeId"], "ls", "/sys/class/net").split() == ["lo"]
    cl.ecs.stop_task(cluster=cl.name, task=t["taskArn"])
    cl.wait_status(t["taskArn"], "STOPPED")


def test_failing_health_checks_make_containers_and_the_task_unhealthy(cl, name):
    check = {"interval": 5, "timeout": 2, "retries": 1, "startPeriod": 0}
    failing = {**check, "command": ["CMD-SHELL", "exit 1"]}
    passing = {**check, "command": ["CMD-SHELL", "true"]}
    sleeper = {"image": IMAGE, "memory": 16, "command": ["sleep", "600"], "stopTimeout": 1}
    # Only essential containers decide the task's health.
    register(cl, name + "-bad", [{**sleeper, "name": "main", "healthCheck": failing},
                                 {**sleeper, "name": "side", "essential": False, "healthCheck": passing}])
    register(cl, name + "-ok", [{**sleeper, "name": "main", "healthCheck": passing},
                                {**sleeper, "name": "side", "essential": False, "healthCheck": failing}])
    bad, ok = run(cl, name + "-bad")[0], run(cl, name + "-ok")[0]
    for t in (bad, ok):
        assert cl.wait_status(t["taskArn"], "RUNNING")["healthStatus"] == "UNKNOWN"

    def health(arn):
        t = cl.task(arn)
        by = {c["name"]: c.get("healthStatus") for c in t["containers"]}
        settled = "UNKNOWN" not in by.values()
        return (t["healthStatus"], by["main"], by["side"]) if settled else None
    assert wait_for("bad health", lambda: health(bad["taskArn"])) == ("UNHEALTHY", "UNHEALTHY", "HEALTHY")
    assert wait_for("ok health", lambda: health(ok["taskArn"])) == ("HEALTHY", "HEALTHY", "UNHEALTHY")
    # A standalone task is not replaced for being unhealthy: it keeps running.
    assert cl.task(bad["taskArn"])["lastStatus"] == "RUNNING"
    for t in (bad, ok):
        cl.ecs.stop_task(cluster=cl.name, task=t["taskArn"])
    for t in (bad, ok):
        cl.wait_status(t["taskArn"], "STOPPED")


def test_a_task_no_host_can_take_names_the_attribute_it_lacks(cl, name):
    # A definition for the CPU architecture these hosts do not have.
    other = "X86_64" if platform.machine() == "aarch64" else "ARM64"
    td = register(cl, name, [{"name": "c", "image": IMAGE, "memory": 16}],
                  runtimePlatform={"cpuArchitecture": other, "operatingSystemFamily": "LINUX"})
    assert {"name": "ecs.cpu-architecture", "value": other.lower()} in td["requiresAttributes"]
    r = cl.ecs.run_task(cluster=cl.name, taskDefinition=name)
    assert r["tasks"] == [] and r["failures"]
    assert {f["arn"] for f in r["failures"]} <= set(cl.instances().values())
    assert {(f["reason"], f["detail"]) for f in r["failures"]} == {
        ("ATTRIBUTE", f"MISSING ATTRIBUTE: ecs.cpu-architecture={other.lower()}")}
    # Nor does a definition for another operating system start here.
    register(cl, name + "-win", [{"name": "c", "image": IMAGE, "memory": 16}],
             runtimePlatform={"operatingSystemFamily": "WINDOWS_SERVER_2019_CORE"})
    r = cl.ecs.run_task(cluster=cl.name, taskDefinition=name + "-win")
    assert r["tasks"] == [] and r["failures"]
    assert {f["detail"] for f in r["failures"]} == {"MISSING ATTRIBUTE: ecs.os-family=WINDOWS_SERVER_2019_CORE"}
    # EFS needs a file system these hosts do not have: refused by name,
    # never a local volume in its place.
    td = register(cl, name + "-efs", [{"name": "c", "image": IMAGE, "memory": 16,
                                      "mountPoints": [{"sourceVolume": "data", "containerPath": "/data"}]}],
                  volumes=[{"name": "data", "efsVolumeConfiguration": {"fileSystemId": "fs-12345678"}}])
    assert {"name": "ecs.capability.efs"} in td["requiresAttributes"]
    r = cl.ecs.run_task(cluster=cl.name, taskDefinition=name + "-efs")
    assert r["tasks"] == [] and {f["detail"] for f in r["failures"]} == {"MISSING ATTRIBUTE: ecs.capability.efs"}
    # A capability given to the hosts by hand places the task, and the host,
    # which cannot provide it, stops the task rather than leave it out.
    needs = "ecs.capability.env-files.s3"
    hosts = list(cl.instances().values())
    cl.ecs.put_attributes(cluster=cl.name, attributes=[{"name": needs, "targetId": h} for h in hosts])
    try:
        register(cl, name + "-env", [{"name": "c", "image": IMAGE, "memory": 16, "command": ["sleep", "600"],
                                      "environmentFiles": [{"value": "arn:aws:s3:::b/a.env", "type": "s3"}]}])
        t = run(cl, name + "-env")[0]
        t = cl.wait_status(t["taskArn"], "STOPPED")
        assert t["stopCode"] == "TaskFailedToStart", t
        assert t["stoppedReason"].startswith("ResourceInitializationError: ") \
            and "environmentFiles (container c)" in t["stoppedReason"], t["stoppedReason"]
    finally:
        cl.ecs.delete_attributes(cluster=cl.name, attributes=[{"name": needs, "targetId": h} for h in hosts])


def test_attributes_put_after_registration_steer_placement(cl, name):
    target = sorted(cl.instances().values())[1]
    attr = {"name": "disk-" + name, "value": "ssd", "targetType": "container-instance", "targetId": target}
    put = cl.ecs.put_attributes(cluster=cl.name, attributes=[attr])["attributes"]
    assert put[0]["name"] == attr["name"] and put[0]["value"] == "ssd"
    listed = cl.ecs.list_attributes(cluster=cl.name, targetType="container-instance", attributeName=attr["name"])
    assert [(a["targetId"], a["value"]) for a in listed["attributes"]] == [(target, "ssd")]
    register(cl, name, [{"name": "c", "image": IMAGE, "memory": 16, "command": ["sleep", "600"], "stopTimeout": 1}])
    constraint = [{"type": "memberOf", "expression": f"attribute:{attr['name']} == ssd"}]
    tasks = run(cl, name, count=3, placementConstraints=constraint)
    assert {t["containerInstanceArn"] for t in tasks} == {target}
    for t in tasks:
        cl.ecs.stop_task(cluster=cl.name, task=t["taskArn"])
    cl.ecs.delete_attributes(cluster=cl.name, attributes=[{"name": attr["name"], "targetId": target}])
    r = cl.ecs.run_task(cluster=cl.name, taskDefinition=name, placementConstraints=constraint)
    assert r["tasks"] == [] and all("MemberOf" in f["reason"] for f in r["failures"]), r["failures"]
    for t in tasks:
        cl.wait_status(t["taskArn"], "STOPPED")


def test_restart_policy_restarts_in_place_only_after_the_attempt_period(cl, name):
    # ECS's shortest restartAttemptPeriod is 60 s, so the first run lasts
    # just over it. The second run exits early, so it is not restarted and,
    # being essential, stops the task. `side` exits with an ignored code.
    main = ("if [ -e /ran ]; then echo second; sleep 6; exit 5; fi; "
            "touch /ran; echo first; sleep 61; exit 1")
    register(cl, name, [
        {"name": "main", "image": IMAGE, "memory": 16, "command": ["sh", "-c", main], "stopTimeout": 1,
         "portMappings": [{"containerPort": 8080}],
         "restartPolicy": {"enabled": True, "restartAttemptPeriod": 60}},
        {"name": "side", "image": IMAGE, "memory": 16, "essential": False, "command": ["sh", "-c", "sleep 61; exit 7"],
         "restartPolicy": {"enabled": True, "restartAttemptPeriod": 60, "ignoredExitCodes": [7]}},
    ])
    code, message = error(lambda: register(cl, name + "-bad", [
        {"name": "c", "image": IMAGE, "memory": 16, "restartPolicy": {"enabled": True, "restartAttemptPeriod": 30}}]))
    assert code == "ClientException" and "restartAttemptPeriod" in message, (code, message)
    t = run(cl, name)[0]
    t = cl.wait_status(t["taskArn"], "RUNNING")
    by = {c["name"]: c for c in t["containers"]}
    main_id = by["main"]["runtimeId"]
    first_start = docker_inspect(main_id)["State"]["StartedAt"]

    def restarted():
        s = docker_inspect(main_id)["State"]
        return s["Running"] and s["StartedAt"] != first_start
    wait_for("main to be restarted", restarted, timeout=90, interval=0.2)
    after = cl.task(t["taskArn"])
    assert after["lastStatus"] == "RUNNING" and after["desiredStatus"] == "RUNNING"
    by = {c["name"]: c for c in after["containers"]}
    assert by["main"]["runtimeId"] == main_id, "restarted in place, not replaced"

    def containers():
        return {c["name"]: c for c in cl.task(t["taskArn"])["containers"]}
    assert wait_for("side to stop", lambda: containers()["side"].get("exitCode") == 7, timeout=10)
    assert containers()["side"]["lastStatus"] == "STOPPED", "an ignored exit code is not restarted"
    host_port = docker_inspect(main_id)["NetworkSettings"]["Ports"]["8080/tcp"][0]["HostPort"]
    main_now = containers()["main"]
    assert main_now["lastStatus"] == "RUNNING"
    assert main_now["networkBindings"][0]["hostPort"] == int(host_port)
    t = cl.wait_status(t["taskArn"], "STOPPED", timeout=30)
    by = {c["name"]: c for c in t["containers"]}
    assert t["stopCode"] == "EssentialContainerExited"
    assert by["main"]["exitCode"] == 5 and by["side"]["exitCode"] == 7
    out = subprocess.run([BERTH, "logs", t["taskArn"], "--cluster", cl.name, "--server", cl.server.url],
                         capture_output=True, text=True, timeout=30)
    assert "main | first" in out.stdout and "main | second" in out.stdout, out.stdout


def test_task_level_limits_are_one_cgroup_the_containers_share(cl, name):
    register(cl, name, [
        {"name": "main", "image": IMAGE, "command": ["sleep", "600"], "stopTimeout": 1},
        {"name": "hog", "image": IMAGE, "essential": False, "memoryReservation": 8,
         "command": ["sh", "-c", "sleep 1; dd if=/dev/zero of=/dev/null bs=100M count=1"]},
    ], cpu="256", memory="64")
    t = run(cl, name)[0]
    t = cl.wait_status(t["taskArn"], "RUNNING")
    task_id = t["taskArn"].rsplit("/", 1)[1]
    for c in t["containers"]:
        host = docker_inspect(c["runtimeId"])["HostConfig"]
        assert task_id in host["CgroupParent"], "each container's cgroup sits under the task's"
        assert host["Memory"] == 0 and host["NanoCpus"] == 0, "the task's cgroup holds the limits"
        pid = docker_inspect(c["runtimeId"])["State"]["Pid"]
        if pid:
            assert cgroup_limit(pid, "memory", task_id) == 64 * 1024 * 1024
            assert cgroup_limit(pid, "cpu", task_id) == 25000, "256 units are a quarter of a CPU"
    main = [c for c in t["containers"] if c["name"] == "main"][0]
    group, _ = cgroup_dir(docker_inspect(main["runtimeId"])["State"]["Pid"], "memory", task_id)

    # 100 MiB in a 64 MiB task: the kernel kills it.
    def hog():
        c = [c for c in cl.task(t["taskArn"])["containers"] if c["name"] == "hog"][0]
        return c if c["lastStatus"] == "STOPPED" else None
    c = wait_for("the hog to be killed", hog)
    assert c["exitCode"] == 137
    assert c["reason"] == "OutOfMemoryError: Container killed due to memory usage"
    assert cl.task(t["taskArn"])["lastStatus"] == "RUNNING", "it was not essential"
    cl.ecs.stop_task(cluster=cl.name, task=t["taskArn"])
    cl.wait_status(t["taskArn"], "STOPPED")
    wait_for("the task cgroup to be removed", lambda: not os.path.exists(group))


def test_secrets_reach_containers_through_the_execution_role(cl, name):
    url, account = cl.server.url, "000000000000"
    ssm, sm, iam = make_client(url, "ssm"), make_client(url, "secretsmanager"), make_client(url, "iam")
    ssm.put_parameter(Name=f"/{name}/db/pass", Value="from-ssm", Type="SecureString")
    ssm.put_parameter(Name=f"{name}-plain", Value="plain-ssm", Type="String")
    api = sm.create_secret(Name=f"{name}/api", SecretString=json.dumps({"token": "from-asm", "user": "u"}))["ARN"]
    elsewhere = sm.create_secret(Name=f"elsewhere-{name}", SecretString="not-for-you")["ARN"]
    trust = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole",
                                                     "Principal": {"Service": "ecs-tasks.amazonaws.com"}}]}
    role = iam.create_role(RoleName=f"{name}-exec", AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"]
    iam.put_role_policy(RoleName=f"{name}-exec", PolicyName="read", PolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": "ssm:GetParameters",
             "Resource": f"arn:aws:ssm:us-east-1:{account}:parameter/{name}*"},
            {"Effect": "Allow", "Action": "secretsmanager:GetSecretValue",
             "Resource": f"arn:aws:secretsmanager:us-east-1:{account}:secret:{name}/*"}]}))

    def started(family, secrets, **kw):
        register(cl, family, [{"name": "c", "image": IMAGE, "memory": 16, "secrets": secrets,
                               "command": ["sh", "-c", "echo $A $B $C"]}], **kw)
        return cl.wait_status(run(cl, family)[0]["taskArn"], "STOPPED")

    td = register(cl, name + "-probe", [{"name": "c", "image": IMAGE, "memory": 16,
                                         "secrets": [{"name": "A", "valueFrom": api}]}], executionRoleArn=role)
    assert {"name": "ecs.capability.secrets.asm.environment-variables"} in td["requiresAttributes"]
    t = started(name, [{"name": "A", "valueFrom": f"/{name}/db/pass"},
                       {"name": "B", "valueFrom": f"arn:aws:ssm:us-east-1:{account}:parameter/{name}-plain"},
                       {"name": "C", "valueFrom": f"{api}:token::"}], executionRoleArn=role)
    assert t["containers"][0].get("exitCode") == 0, t
    # Once STOPPED, everything the container wrote is there to read.
    out = subprocess.run([BERTH, "logs", t["taskArn"], "--cluster", cl.name, "--server", url],
                         capture_output=True, text=True, timeout=30)
    assert out.stdout.splitlines() == ["c | from-ssm plain-ssm from-asm"], (out.stdout, out.stderr)
    # Neither the agents' state nor the server's store or logs hold a value
    # in the clear; only the container's own output does.
    for path in files_under(cl.tmp):
        if os.sep + "logs" + os.sep in path:
            continue
        with open(path, "rb") as fh:
            assert b"from-asm" not in fh.read(), path
    # Secrets in the log configuration become the log driver's options.
    ssm.put_parameter(Name=f"/{name}/log/size", Value="7m", Type="String")
    register(cl, name + "-log", [{"name": "c", "image": IMAGE, "memory": 16, "command": ["sleep", "600"],
                                  "logConfiguration": {"logDriver": "json-file", "secretOptions": [
                                      {"name": "max-size", "valueFrom": f"/{name}/log/size"}]}}],
             executionRoleArn=role)
    t = cl.wait_status(run(cl, name + "-log")[0]["taskArn"], "RUNNING")
    log_config = docker_inspect(t["containers"][0]["runtimeId"])["HostConfig"]["LogConfig"]
    assert log_config == {"Type": "json-file", "Config": {"max-size": "7m"}}, log_config
    cl.ecs.stop_task(cluster=cl.name, task=t["taskArn"])
    # A parameter that does not exist, a secret the role may not read, and
    # no execution role at all each stop the task before it starts.
    t = started(name + "-missing", [{"name": "A", "valueFrom": f"/{name}/nope"}], executionRoleArn=role)
    assert t["stopCode"] == "TaskFailedToStart", t
    assert t["stoppedReason"].startswith("ResourceInitializationError: unable to pull secrets") \
        and f"/{name}/nope" in t["stoppedReason"], t["stoppedReason"]
    t = started(name + "-denied", [{"name": "A", "valueFrom": elsewhere}], executionRoleArn=role)
    assert "AccessDeniedException" in t["stoppedReason"] and "secretsmanager:GetSecretValue" in t["stoppedReason"] \
        and f"assumed-role/{name}-exec/" in t["stoppedReason"], t["stoppedReason"]
    t = started(name + "-norole", [{"name": "A", "valueFrom": f"/{name}/db/pass"}])
    assert "executionRoleArn" in t["stoppedReason"], t["stoppedReason"]


def test_a_task_role_reaches_berth_from_inside_its_containers(cl, name):
    url, account = cl.server.url, "000000000000"
    iam = make_client(url, "iam")
    trust = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole",
                                                     "Principal": {"Service": "ecs-tasks.amazonaws.com"}}]}
    role = iam.create_role(RoleName=f"{name}-app", AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"]
    iam.put_role_policy(RoleName=f"{name}-app", PolicyName="list", PolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "ecs:ListClusters", "Resource": "*"}]}))
    # The application: boto3 as shipped, configured by nothing but what the
    # agent gives the container (the host's Python and this venv, mounted).
    app = ("import boto3, botocore.exceptions as x\n"
           "ecs = boto3.client('ecs')\n"
           f"print('listed', any(a.endswith('/{cl.name}') for a in ecs.list_clusters()['clusterArns']))\n"
           "try:\n"
           f"    ecs.delete_cluster(cluster='{cl.name}'); print('deleted')\n"
           "except x.ClientError as e:\n"
           "    print('delete', e.response['Error']['Code'])\n"
           "print('me', boto3.client('sts').get_caller_identity()['Arn'])\n")
    paths = python_from_the_host()
    td = register(cl, name, [{"name": "app", "image": IMAGE, "memory": 256,
                              "mountPoints": [{"sourceVolume": k, "containerPath": p, "readOnly": True}
                                              for k, p in paths.items()],
                              "command": [os.path.join(sys.prefix, "bin", "python"), "-c", app]}],
                  taskRoleArn=role, volumes=[{"name": k, "host": {"sourcePath": p}} for k, p in paths.items()])
    assert {"name": "com.amazonaws.ecs.capability.task-iam-role"} in td["requiresAttributes"]
    t = cl.wait_status(run(cl, name)[0]["taskArn"], "STOPPED", timeout=60)
    out = subprocess.run([BERTH, "logs", t["taskArn"], "--cluster", cl.name, "--server", url],
                         capture_output=True, text=True, timeout=30)
    task_id = t["taskArn"].rsplit("/", 1)[1]
    assert out.stdout.splitlines() == [
        "app | listed True", "app | delete AccessDeniedException",
        f"app | me arn:aws:sts::{account}:assumed-role/{name}-app/{task_id}"], (out.stdout, out.stderr, t.get("stoppedReason"), t["containers"])
    assert t["containers"][0].get("exitCode") == 0, t

    # One bridge task and one awsvpc task: each reads its own credentials,
    # and neither can read the other's even knowing the URI.
    sleeper = [{"name": "c", "image": IMAGE, "memory": 16, "command": ["sleep", "600"], "stopTimeout": 1}]
    register(cl, name + "-bridge", sleeper, taskRoleArn=role)
    register(cl, name + "-vpc", sleeper, taskRoleArn=role, networkMode="awsvpc")
    a = run(cl, name + "-bridge")[0]["taskArn"]
    b = run(cl, name + "-vpc", networkConfiguration={"awsvpcConfiguration": {"subnets": ["subnet-local-1a"]}})
    a, b = cl.wait_status(a, "RUNNING"), cl.wait_status(b[0]["taskArn"], "RUNNING")
    container = {t["taskArn"]: t["containers"][0]["runtimeId"] for t in (a, b)}
    env = {arn: dict(e.split("=", 1) for e in docker_inspect(c)["Config"]["Env"]) for arn, c in container.items()}
    uri = {arn: e["AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"] for arn, e in env.items()}
    assert all(e["AWS_ENDPOINT_URL"] == "http://169.254.170.2" and e["AWS_REGION"] == "us-east-1"
               for e in env.values()), env

    def fetch(task, path):
        return subprocess.run(["docker", "exec", container[task["taskArn"]], "wget", "-qO-",
                               f"http://169.254.170.2{path}"], capture_output=True, text=True, timeout=30)

    got = {}
    for t in (a, b):
        r = fetch(t, uri[t["taskArn"]])
        assert r.returncode == 0, r.stderr
        got[t["taskArn"]] = json.loads(r.stdout)
        assert got[t["taskArn"]]["RoleArn"] == role and got[t["taskArn"]]["AccessKeyId"].startswith("ASIA")
        other = b if t is a else a
        r = fetch(other, uri[t["taskArn"]])
        assert r.returncode != 0 and "400" in r.stderr, (r.stdout, r.stderr)
    creds = got[a["taskArn"]]
    as_task = boto3.client("ecs", endpoint_url=url, region_name="us-east-1", aws_access_key_id=creds["AccessKeyId"],
                           aws_secret_access_key=creds["SecretAccessKey"], aws_session_token=creds["Token"])
    assert as_task.list_clusters()["clusterArns"]
    # They end with the task.
    cl.ecs.stop_task(cluster=cl.name, task=a["taskArn"])
    cl.wait_status(a["taskArn"], "STOPPED")
    with pytest.raises(botocore.exceptions.ClientError) as e:
        as_task.list_clusters()
    assert e.value.response["Error"]["Code"] == "UnrecognizedClientException", e.value.response
    cl.ecs.stop_task(cluster=cl.name, task=b["taskArn"])


def test_host_network_tasks_get_their_own_role_credentials_by_process(cl, name):
    """Host-network tasks share the host's addresses: the agent tells them
    apart by the process behind each connection."""
    iam = make_client(cl.server.url, "iam")
    trust = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole",
                                                     "Principal": {"Service": "ecs-tasks.amazonaws.com"}}]}
    role = iam.create_role(RoleName=f"{name}-host", AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"]
    td = register(cl, name, [{"name": "c", "image": IMAGE, "memory": 16, "command": ["sleep", "600"],
                              "stopTimeout": 1}], taskRoleArn=role, networkMode="host")
    assert {"name": "com.amazonaws.ecs.capability.task-iam-role-network-host"} in td["requiresAttributes"]
    # On one host: the host's rule sends to one agent.
    instance = cl.ecs.list_container_instances(cluster=cl.name)["containerInstanceArns"][0]
    started = cl.ecs.start_task(cluster=cl.name, taskDefinition=name, containerInstances=[instance, instance])
    a, b = (cl.wait_status(t["taskArn"], "RUNNING") for t in started["tasks"])
    env = {t["taskArn"]: dict(e.split("=", 1) for e in docker_inspect(t["containers"][0]["runtimeId"])["Config"]["Env"])
           for t in (a, b)}

    def fetch(task, url):
        return subprocess.run(["docker", "exec", task["containers"][0]["runtimeId"], "wget", "-qO-", url],
                              capture_output=True, text=True, timeout=30)

    uri = "http://169.254.170.2" + env[a["taskArn"]]["AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"]
    r = fetch(a, uri)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["RoleArn"] == role
    r = fetch(b, uri)
    assert r.returncode != 0 and "400" in r.stderr, (r.stdout, r.stderr)
    # The host's own processes are no task either.
    import urllib.error
    import urllib.request
    try:
        urllib.request.urlopen(uri, timeout=10)
        raise AssertionError("a host process read a task's credentials")
    except urllib.error.HTTPError as e:
        assert e.code == 400
    r = fetch(a, env[a["taskArn"]]["ECS_CONTAINER_METADATA_URI_V4"] + "/task")
    assert json.loads(r.stdout)["TaskARN"] == a["taskArn"], r.stderr
    for t in (a, b):
        cl.ecs.stop_task(cluster=cl.name, task=t["taskArn"])


def test_task_metadata_describes_the_task_to_its_own_containers_only(cl, name):
    web = {"name": "web", "image": IMAGE, "memory": 16, "cpu": 64, "command": ["sleep", "600"], "stopTimeout": 1,
           "portMappings": [{"containerPort": 8080}]}
    side = {"name": "side", "image": IMAGE, "memory": 16, "command": ["sleep", "600"], "stopTimeout": 1,
            "essential": False}
    td = register(cl, name, [web, side])
    register(cl, name + "-vpc", [web], networkMode="awsvpc", cpu="256", memory="128")
    a = run(cl, name)[0]["taskArn"]
    b = run(cl, name + "-vpc", networkConfiguration={"awsvpcConfiguration": {"subnets": ["subnet-local-1a"]}})
    a, b = cl.wait_status(a, "RUNNING"), cl.wait_status(b[0]["taskArn"], "RUNNING")

    def env(task, container="web"):
        c = next(c for c in task["containers"] if c["name"] == container)
        return dict(e.split("=", 1) for e in docker_inspect(c["runtimeId"])["Config"]["Env"])

    def get(task, url, container="web"):
        c = next(c for c in task["containers"] if c["name"] == container)
        r = subprocess.run(["docker", "exec", c["runtimeId"], "wget", "-qO-", url],
                           capture_output=True, text=True, timeout=30)
        return r.returncode, (json.loads(r.stdout) if r.returncode == 0 else r.stderr)

    for t in (a, b):
        e = env(t)
        assert e["AWS_EXECUTION_ENV"] == "AWS_ECS_EC2", e
        code, doc = get(t, e["ECS_CONTAINER_METADATA_URI_V4"] + "/task")
        assert code == 0, doc
        assert (doc["TaskARN"], doc["Cluster"], doc["LaunchType"], doc["KnownStatus"]) == (
            t["taskArn"], cl.name, "EC2", "RUNNING"), doc
        assert (doc["Family"], doc["Revision"]) == (t["taskDefinitionArn"].split("/")[-1].split(":")[0],
                                                    t["taskDefinitionArn"].rsplit(":", 1)[1])
        assert doc["AvailabilityZone"] == t["availabilityZone"]
        by_name = {c["Name"]: c for c in doc["Containers"]}
        for c in t["containers"]:
            m = by_name[c["name"]]
            assert (m["DockerId"], m["ContainerARN"], m["KnownStatus"]) == (
                c["runtimeId"], c["containerArn"], "RUNNING"), m
        code, me = get(t, e["ECS_CONTAINER_METADATA_URI_V4"])
        assert me["Name"] == "web" and me["Limits"]["CPU"] == 64 and me["Image"] == IMAGE, me
        code, v3 = get(t, e["ECS_CONTAINER_METADATA_URI"] + "/task")
        assert v3["TaskARN"] == t["taskArn"] and "LaunchType" not in v3, v3
        code, stats = get(t, e["ECS_CONTAINER_METADATA_URI_V4"] + "/stats")
        assert code == 0 and "memory_stats" in stats and "cpu_stats" in stats, stats
    # The bridge task's containers each have their own address; the awsvpc
    # task's is its interface's.
    code, doc = get(a, env(a)["ECS_CONTAINER_METADATA_URI_V4"] + "/task")
    for c in doc["Containers"]:
        ip = docker_inspect(c["DockerId"])["NetworkSettings"]["IPAddress"]
        assert c["Networks"] == [{"NetworkMode": "bridge", "IPv4Addresses": [ip]}], c
    assert doc["Containers"][0]["Ports"][0]["ContainerPort"] == 8080
    code, side = get(a, env(a, "side")["ECS_CONTAINER_METADATA_URI_V4"], "side")
    assert side["Name"] == "side", side
    code, doc = get(b, env(b)["ECS_CONTAINER_METADATA_URI_V4"] + "/task")
    eni = b["attachments"][0]
    ip = next(d["value"] for d in eni["details"] if d["name"] == "privateIPv4Address")
    assert doc["Containers"][0]["Networks"][0]["IPv4Addresses"] == [ip], doc
    assert doc["Limits"] == {"CPU": 0.25, "Memory": 128}, doc
    code, stats = get(b, env(b)["ECS_CONTAINER_METADATA_URI_V4"] + "/task/stats")
    assert list(stats) == [b["containers"][0]["runtimeId"]], stats
    # Neither task reads the other's.
    code, err = get(b, env(a)["ECS_CONTAINER_METADATA_URI_V4"] + "/task")
    assert code != 0 and "404" in err, err
    for t in (a, b):
        cl.ecs.stop_task(cluster=cl.name, task=t["taskArn"])


def test_awslogs_ships_container_output_to_the_logs_api(cl, name):
    url = cl.server.url
    logs, iam = make_client(url, "logs"), make_client(url, "iam")
    group = f"/ecs/{name}"
    logs.create_log_group(logGroupName=group)

    def started(family, options, command, sidecar=False, **kw):
        side = [{"name": "side", "image": IMAGE, "memory": 16, "essential": False,
                 "command": ["echo", "from the sidecar"]}] if sidecar else []
        register(cl, family, [{"name": "app", "image": IMAGE, "memory": 16, "command": ["sh", "-c", command],
                               "logConfiguration": {"logDriver": "awslogs", "options": options}}] + side, **kw)
        return cl.wait_status(run(cl, family)[0]["taskArn"], "STOPPED")

    def messages(group, stream):
        return [e["message"] for e in
                logs.get_log_events(logGroupName=group, logStreamName=stream, startFromHead=True)["events"]]

    # No execution role: the host ships with its own credentials, to the
    # stream ECS names prefix/container/task-id.
    opts = {"awslogs-group": group, "awslogs-region": "us-east-1", "awslogs-stream-prefix": "ecs"}
    t = started(name, opts, "for i in 1 2 3; do echo line $i; done", sidecar=True)
    assert t["containers"][0].get("exitCode") == 0, (t.get("stoppedReason"), t["containers"][0].get("reason"))
    stream = f"ecs/app/{t['taskArn'].rsplit('/', 1)[1]}"
    assert messages(group, stream) == ["line 1", "line 2", "line 3"]
    # berth logs reads the awslogs container's output from the Logs API's
    # store (an event put there through the API shows), and the sidecar's,
    # which has no log configuration, from the agent.
    logs.put_log_events(logGroupName=group, logStreamName=stream,
                        logEvents=[{"timestamp": int(time.time() * 1000), "message": "put through the API"}])
    out = subprocess.run([BERTH, "logs", t["taskArn"], "--cluster", cl.name, "--server", url],
                         capture_output=True, text=True, timeout=30)
    assert out.stdout.splitlines() == ["app | line 1", "app | line 2", "app | line 3", "app | put through the API",
                                       "side | from the sidecar"], (out.stdout, out.stderr)
    follow = subprocess.Popen([BERTH, "logs", t["taskArn"], "--cluster", cl.name, "--server", url, "--follow"],
                              stdout=subprocess.PIPE, text=True)
    killer = threading.Timer(30, follow.kill)
    killer.start()
    seen = {follow.stdout.readline().strip() for _ in range(5)}
    follow.kill()
    killer.cancel()
    assert "app | put through the API" in seen and "side | from the sidecar" in seen, seen

    # With an execution role that may make the group: its session ships,
    # and a multi-line pattern joins a stack trace into one event.
    trust = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole",
                                                     "Principal": {"Service": "ecs-tasks.amazonaws.com"}}]}
    role = iam.create_role(RoleName=f"{name}-exec", AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"]
    iam.put_role_policy(RoleName=f"{name}-exec", PolicyName="logs", PolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [{
            "Effect": "Allow", "Action": ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"],
            "Resource": f"arn:aws:logs:us-east-1:000000000000:log-group:/ecs/{name}-new:*"}]}))
    opts = {"awslogs-group": f"/ecs/{name}-new", "awslogs-region": "us-east-1", "awslogs-stream-prefix": "web",
            "awslogs-create-group": "true", "awslogs-multiline-pattern": "^[0-9]"}
    t = started(name + "-exec", opts, "echo '1 boom'; echo '  at a'; echo '  at b'; echo '2 next'",
                executionRoleArn=role)
    assert t["containers"][0].get("exitCode") == 0, (t.get("stoppedReason"), t["containers"][0].get("reason"))
    stream = f"web/app/{t['taskArn'].rsplit('/', 1)[1]}"
    assert messages(f"/ecs/{name}-new", stream) == ["1 boom\n  at a\n  at b", "2 next"]

    # A group that does not exist, without awslogs-create-group, and an
    # option Docker does not know, each fail the container.
    t = started(name + "-missing", {"awslogs-group": f"/ecs/{name}-none", "awslogs-stream-prefix": "x"}, "true")
    assert t["stopCode"] == "TaskFailedToStart" and "The specified log group does not exist." in \
        t["stoppedReason"], t.get("stoppedReason")
    # awslogs-create-stream false: the stream is the user's to make.
    logs.create_log_stream(logGroupName=group, logStreamName="mine")
    t = started(name + "-own", {"awslogs-group": group, "awslogs-stream": "mine", "awslogs-create-stream": "false"},
                "echo into my stream")
    wait_for("the line in the stream made beforehand", lambda: messages(group, "mine") == ["into my stream"])
    t = started(name + "-bad", {"awslogs-group": group, "awslogs-colour": "blue"}, "true")
    assert "unknown log opt 'awslogs-colour'" in t["stoppedReason"], t.get("stoppedReason")
    # Logs the role may not write are refused in IAM's words.
    t = started(name + "-denied", {"awslogs-group": group, "awslogs-stream-prefix": "x"}, "true",
                executionRoleArn=role)
    assert "AccessDeniedException" in t["stoppedReason"] and "logs:CreateLogStream" in t["stoppedReason"], \
        t.get("stoppedReason")


def test_a_production_style_definition_runs_on_ec2(cl, name):
    task, given = production_task(cl.ecs, cl.name, cl.server.url, name, "EC2")
    check_production_task(cl.ecs, cl.name, task, given)


def test_firelens_routes_container_output_to_the_log_router(cl, name):
    """The router here is a few lines of Python standing in for Fluent Bit
    (no registry has its image): it prints the configuration the agent
    mounted and what arrives on the socket the other container's engine
    log driver writes to."""
    router = ("import os, socket\n"
              "print(open('/fluent-bit/etc/fluent-bit.conf').read(), flush=True)\n"
              "p = '/var/run/fluent.sock'\n"
              "os.path.exists(p) and os.unlink(p)\n"
              "s = socket.socket(socket.AF_UNIX); s.bind(p); s.listen(8)\n"
              "while True:\n"
              "    c, _ = s.accept()\n"
              "    while (d := c.recv(65536)):\n"
              "        print('got', d, flush=True)\n")
    paths = python_from_the_host()
    td = register(cl, name, [
        {"name": "app", "image": IMAGE, "memory": 16, "stopTimeout": 1,
         "command": ["sh", "-c", "echo hello firelens; exec sleep 600"],
         "logConfiguration": {"logDriver": "awsfirelens", "options": {
             "Name": "cloudwatch", "region": "us-east-1", "log_group_name": f"/ecs/{name}"}}},
        {"name": "log_router", "image": IMAGE, "memory": 128, "essential": True, "stopTimeout": 1,
         "firelensConfiguration": {"type": "fluentbit"},
         "mountPoints": [{"sourceVolume": k, "containerPath": p, "readOnly": True} for k, p in paths.items()],
         "command": [os.path.join(sys.prefix, "bin", "python"), "-c", router]}],
        volumes=[{"name": k, "host": {"sourcePath": p}} for k, p in paths.items()])
    assert {"name": "ecs.capability.firelens.fluentbit"} in td["requiresAttributes"]
    assert {"name": "com.amazonaws.ecs.capability.logging-driver.awsfirelens"} in td["requiresAttributes"]
    t = cl.wait_status(run(cl, name)[0]["taskArn"], "RUNNING")
    task_id = t["taskArn"].rsplit("/", 1)[1]

    def routed():
        out = subprocess.run([BERTH, "logs", t["taskArn"], "--cluster", cl.name, "--server", cl.server.url],
                             capture_output=True, text=True, timeout=30).stdout
        return out if "hello firelens" in out else None

    out = wait_for("the app's line at the router", routed, timeout=30)
    assert f"app-firelens-{task_id}" in out, out
    assert "Match app-firelens*" in out and "log_group_name /ecs/" + name in out, out
    assert f"Record ecs_task_arn {t['taskArn']}" in out, out
    by_name = {c["name"]: c for c in t["containers"]}
    app = docker_inspect(by_name["app"]["runtimeId"])
    assert app["HostConfig"]["LogConfig"]["Type"] == "fluentd"
    assert docker_inspect(by_name["log_router"]["runtimeId"])["State"]["StartedAt"] <= app["State"]["StartedAt"]
    files = glob.glob(os.path.join(cl.tmp, "*", "firelens", task_id))
    assert len(files) == 1, files
    cl.ecs.stop_task(cluster=cl.name, task=t["taskArn"])
    cl.wait_status(t["taskArn"], "STOPPED")
    wait_for("the router's configuration and socket to go", lambda: not os.path.exists(files[0]))


def test_a_private_registry_pulls_with_repository_credentials(cl, name, tmp_path):
    url, account = cl.server.url, "000000000000"
    registry = Registry(str(tmp_path / "registry"), user=("puller", "s3cret-pw")).start()
    ref = registry.push(IMAGE, f"private/{name}:1")
    docker("rmi", ref)
    try:
        sm, iam = make_client(url, "secretsmanager"), make_client(url, "iam")
        good = sm.create_secret(Name=f"{name}/registry", SecretString=json.dumps(
            {"username": "puller", "password": "s3cret-pw"}))["ARN"]
        bad = sm.create_secret(Name=f"{name}/broken", SecretString=json.dumps({"username": "puller"}))["ARN"]
        trust = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole",
                                                         "Principal": {"Service": "ecs-tasks.amazonaws.com"}}]}
        role = iam.create_role(RoleName=f"{name}-pull", AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"]
        iam.put_role_policy(RoleName=f"{name}-pull", PolicyName="read", PolicyDocument=json.dumps({
            "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "secretsmanager:GetSecretValue",
                                                    "Resource": f"arn:aws:secretsmanager:us-east-1:{account}:secret:{name}/*"}]}))

        def started(family, **container):
            td = register(cl, family, [{"name": "c", "image": ref, "memory": 16, "command": ["true"], **container}],
                          executionRoleArn=role)
            return td, cl.wait_status(run(cl, family)[0]["taskArn"], "STOPPED")

        # Without credentials the registry turns the engine away.
        _, t = started(name + "-anon")
        assert "CannotPullContainerError" in t["stoppedReason"], t["stoppedReason"]
        # A secret without a password is refused in ECS's words.
        _, t = started(name + "-broken", repositoryCredentials={"credentialsParameter": bad})
        assert "AuthorizationData is malformed" in t["stoppedReason"], t["stoppedReason"]
        # With them the image comes.
        td, t = started(name + "-auth", repositoryCredentials={"credentialsParameter": good})
        assert {"name": "com.amazonaws.ecs.capability.private-registry-authentication.secretsmanager"} \
            in td["requiresAttributes"]
        assert t["containers"][0].get("exitCode") == 0, t
        assert registry.manifest_gets(f"private/{name}:1") >= 1
        # The password is in no agent's state or log, nor the server's.
        for path in files_under(cl.tmp):
            with open(path, "rb") as fh:
                assert b"s3cret-pw" not in fh.read(), path
    finally:
        registry.stop()
        subprocess.run(["docker", "rmi", "-f", ref], capture_output=True)


def test_pid_and_ipc_namespaces_are_the_tasks_or_the_hosts(cl, name):
    # `task`: the containers see each other's processes through the pause
    # container that holds the namespaces.
    look = "for i in $(seq 50); do cat /proc/*/cmdline 2>/dev/null | tr '\\0' ' ' | grep -q 'sleep 6543' " \
           "&& { echo shared; break; }; sleep 0.1; done; sleep 600"
    register(cl, name, [{"name": "a", "image": IMAGE, "memory": 16, "command": ["sleep", "6543"]},
                        {"name": "b", "image": IMAGE, "memory": 16, "command": ["sh", "-c", look]}],
             pidMode="task", ipcMode="task")
    t = cl.wait_status(run(cl, name)[0]["taskArn"], "RUNNING")
    modes = {c["name"]: docker_inspect(c["runtimeId"])["HostConfig"] for c in t["containers"]}
    assert modes["a"]["PidMode"] == modes["b"]["PidMode"] and modes["a"]["PidMode"].startswith("container:")
    assert modes["a"]["IpcMode"] == modes["a"]["PidMode"]
    wait_for("b to see a's process", lambda: "b | shared" in subprocess.run(
        [BERTH, "logs", t["taskArn"], "--cluster", cl.name, "--server", cl.server.url],
        capture_output=True, text=True, timeout=30).stdout)
    cl.ecs.stop_task(cluster=cl.name, task=t["taskArn"])
    # `host` and `none` go to the engine as they are.
    register(cl, name + "-host", [{"name": "c", "image": IMAGE, "memory": 16, "command": ["sleep", "600"]}],
             pidMode="host", ipcMode="none")
    h = cl.wait_status(run(cl, name + "-host")[0]["taskArn"], "RUNNING")
    config = docker_inspect(h["containers"][0]["runtimeId"])["HostConfig"]
    assert (config["PidMode"], config["IpcMode"]) == ("host", "none"), config
    cl.ecs.stop_task(cluster=cl.name, task=h["taskArn"])
    t = cl.wait_status(t["taskArn"], "STOPPED")
    # The pause container goes with the task.
    wait_for("the pause container to go", lambda: not docker(
        "ps", "-a", "-q", "--filter", f"label=com.amazonaws.ecs.task-arn={t['taskArn']}").strip())

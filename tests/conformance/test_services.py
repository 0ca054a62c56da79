"""Services end to end: real agents on the local Docker Engine, driven by
boto3 and the aws CLI. A service keeps its desired count through container
deaths, scales, rolls out new task definitions within its bounds, trips its
circuit breaker and rolls back, follows drained and lost hosts, and runs one
task per instance in DAEMON mode."""

import os
import time
import uuid

import botocore.exceptions
import pytest

from conftest import IMAGE, Agent, Cluster, agents_connected, aws_cli, docker, wait_for

ENV = {"BERTH_AGENT_TIMEOUT": "3", "BERTH_SERVICE_SETTLE": "1", "BERTH_HOST_LOSS_GRACE": "2"}


@pytest.fixture(scope="module")
def cl(tmp_path_factory):
    c = Cluster(str(tmp_path_factory.mktemp("services")), "svc", [[], []], extra_env=ENV).start()
    yield c
    c.stop()


def register(cl, family, command=("sleep", "3600"), **kw):
    c = {"name": "app", "image": IMAGE, "memory": 16, "command": list(command), "stopTimeout": 1}
    c.update(kw)
    return cl.ecs.register_task_definition(family=family, containerDefinitions=[c])["taskDefinition"]["taskDefinitionArn"]


def describe(cl, name):
    return cl.ecs.describe_services(cluster=cl.name, services=[name])["services"][0]


def live_tasks(cl, name):
    """The service's tasks that are not STOPPED, described."""
    arns = cl.ecs.list_tasks(cluster=cl.name, serviceName=name)["taskArns"]
    if not arns:
        return []
    return [t for t in cl.ecs.describe_tasks(cluster=cl.name, tasks=arns)["tasks"] if t["lastStatus"] != "STOPPED"]


def stable(cl, name, count, taskdef=None):
    """The service is steady with `count` RUNNING tasks (of `taskdef`) and
    its deployment completed."""
    s = describe(cl, name)
    tasks = live_tasks(cl, name)
    ok = (len(s["deployments"]) == 1 and s["runningCount"] == count and s["pendingCount"] == 0
          and s["deployments"][0]["rolloutState"] == "COMPLETED"
          and len(tasks) == count and all(t["lastStatus"] == "RUNNING" for t in tasks)
          and (taskdef is None or all(t["taskDefinitionArn"] == taskdef for t in tasks)))
    return s if ok else None


def messages(s):
    return [e["message"] for e in s["events"]]


def error_of(call, **kw):
    with pytest.raises(botocore.exceptions.ClientError) as e:
        call(**kw)
    return e.value.response["Error"]["Code"], e.value.response["Error"]["Message"]


def test_bad_input_gets_ecs_errors_and_changes_nothing(cl):
    td = register(cl, "svc-bad")
    ecs = cl.ecs
    assert error_of(ecs.create_service, cluster="nope", serviceName="a", taskDefinition=td, desiredCount=1)[0] == "ClusterNotFoundException"
    code, msg = error_of(ecs.create_service, cluster=cl.name, serviceName="a", taskDefinition="missing:1", desiredCount=1)
    assert code == "ClientException"
    code, msg = error_of(ecs.create_service, cluster=cl.name, serviceName="a", taskDefinition=td, desiredCount=-1)
    assert (code, "desiredCount" in msg) == ("InvalidParameterException", True)
    code, msg = error_of(ecs.create_service, cluster=cl.name, serviceName="bad name!", taskDefinition=td, desiredCount=1)
    assert (code, "serviceName" in msg) == ("InvalidParameterException", True)
    code, msg = error_of(ecs.create_service, cluster=cl.name, serviceName="a", taskDefinition=td, desiredCount=1,
                         schedulingStrategy="DAEMON")
    assert code == "InvalidParameterException" and "does not support a desired count" in msg
    code, msg = error_of(ecs.create_service, cluster=cl.name, serviceName="a", taskDefinition=td,
                         schedulingStrategy="DAEMON", placementStrategy=[{"type": "random"}])
    assert "does not support placement strategies" in msg
    code, msg = error_of(ecs.create_service, cluster=cl.name, serviceName="a", taskDefinition=td,
                         schedulingStrategy="DAEMON", launchType="FARGATE")
    assert code == "InvalidParameterException" and "Fargate" in msg
    code, msg = error_of(ecs.create_service, cluster=cl.name, serviceName="a", taskDefinition=td, desiredCount=1,
                         deploymentConfiguration={"maximumPercent": 90, "minimumHealthyPercent": 100})
    assert code == "InvalidParameterException" and "maximumPercent" in msg
    # What Berth does not have is refused, never accepted and ignored.
    for extra, code, words in (
            ({"platformVersion": "1.4.0"}, "InvalidParameterException", "platform version must be null"),
            ({"availabilityZoneRebalancing": "ENABLED"}, "UnsupportedFeatureException", "availabilityZoneRebalancing"),
            ({"volumeConfigurations": [{"name": "v", "managedEBSVolume": {"roleArn": "arn:aws:iam::000000000000:role/r"}}]},
             "UnsupportedFeatureException", "volumeConfigurations"),
            ({"deploymentConfiguration": {"deploymentCircuitBreaker": {
                "enable": True, "rollback": True, "resetOnHealthyTask": True}}},
             "UnsupportedFeatureException", "resetOnHealthyTask")):
        got = error_of(ecs.create_service, cluster=cl.name, serviceName="a", taskDefinition=td, desiredCount=1, **extra)
        assert got[0] == code and words in got[1], (extra, got)
    got = error_of(ecs.run_task, cluster=cl.name, taskDefinition=td, platformVersion="LATEST")
    assert got[0] == "InvalidParameterException" and "platform version must be null" in got[1]
    assert "a" not in [x.rsplit("/", 1)[1] for x in ecs.list_services(cluster=cl.name)["serviceArns"]]
    # A name in use.
    ecs.create_service(cluster=cl.name, serviceName="dup", taskDefinition=td, desiredCount=0)
    code, msg = error_of(ecs.create_service, cluster=cl.name, serviceName="dup", taskDefinition=td, desiredCount=0)
    assert (code, msg) == ("InvalidParameterException", "Creation of service was not idempotent.")
    # Unknown services.
    d = ecs.describe_services(cluster=cl.name, services=["ghost"])
    assert d["services"] == [] and d["failures"][0]["reason"] == "MISSING"
    assert error_of(ecs.update_service, cluster=cl.name, service="ghost", desiredCount=1)[0] == "ServiceNotFoundException"
    assert error_of(ecs.delete_service, cluster=cl.name, service="ghost")[0] == "ServiceNotFoundException"
    # Bad updates leave the service as it was.
    assert error_of(ecs.update_service, cluster=cl.name, service="dup", desiredCount=-3)[0] == "InvalidParameterException"
    assert error_of(ecs.update_service, cluster=cl.name, service="dup", taskDefinition="missing:9")[0] == "ClientException"
    s = describe(cl, "dup")
    assert (s["desiredCount"], s["taskDefinition"], s["status"]) == (0, td, "ACTIVE")
    ecs.delete_service(cluster=cl.name, service="dup")
    # Nothing already running is disturbed by a rejected update.
    ecs.create_service(cluster=cl.name, serviceName="steady", taskDefinition=td, desiredCount=1)
    before = wait_for("steady", lambda: stable(cl, "steady", 1))
    task = live_tasks(cl, "steady")[0]["taskArn"]
    for bad in ({"desiredCount": -1}, {"taskDefinition": "missing:1"},
                {"deploymentConfiguration": {"maximumPercent": 50}},
                {"placementConstraints": [{"type": "memberOf", "expression": "(("}]}):
        code, _ = error_of(ecs.update_service, cluster=cl.name, service="steady", **bad)
        assert code in ("InvalidParameterException", "ClientException"), (bad, code)
    time.sleep(1)
    after = stable(cl, "steady", 1)
    assert after and after["deployments"][0]["id"] == before["deployments"][0]["id"]
    assert [t["taskArn"] for t in live_tasks(cl, "steady")] == [task]
    ecs.delete_service(cluster=cl.name, service="steady", force=True)


def test_a_service_runs_its_count_spread_and_replaces_a_killed_container(cl):
    td = register(cl, "svc-web")
    created = aws_cli(cl.server, "ecs", "create-service", "--cluster", cl.name, "--service-name", "web",
                      "--task-definition", td, "--desired-count", "4")["service"]
    assert created["status"] == "ACTIVE" and created["desiredCount"] == 4
    assert created["deployments"][0]["id"].startswith("ecs-svc/")
    aws_cli(cl.server, "ecs", "wait", "services-stable", "--cluster", cl.name, "--services", "web")
    s = wait_for("web to be stable", lambda: stable(cl, "web", 4))
    tasks = live_tasks(cl, "web")
    # Spread over the two instances (and their zones) by default.
    per_instance = {}
    for t in tasks:
        per_instance[t["containerInstanceArn"]] = per_instance.get(t["containerInstanceArn"], 0) + 1
        assert t["group"] == "service:web" and t["startedBy"] == s["deployments"][0]["id"]
    assert sorted(per_instance.values()) == [2, 2]
    said = messages(s)
    assert any(m.startswith("(service web) has started 4 tasks: (task ") for m in said), said
    assert "(service web) has reached a steady state." in said
    assert s["deployments"][0]["rolloutState"] == "COMPLETED"
    assert cl.ecs.list_services(cluster=cl.name)["serviceArns"].count(s["serviceArn"]) == 1

    # A container dies: the task stops by itself and is replaced.
    victim = tasks[0]
    docker("kill", victim["containers"][0]["runtimeId"])
    wait_for("the killed task to stop", lambda: cl.task(victim["taskArn"])["lastStatus"] == "STOPPED")
    wait_for("a replacement", lambda: stable(cl, "web", 4) and victim["taskArn"] not in
             [t["taskArn"] for t in live_tasks(cl, "web")])
    s = describe(cl, "web")
    assert s["deployments"][0]["failedTasks"] == 0, "the deployment had completed before the kill"
    assert cl.task(victim["taskArn"])["stopCode"] == "EssentialContainerExited"


def test_scaling_out_and_in(cl):
    td = register(cl, "svc-scale")
    cl.ecs.create_service(cluster=cl.name, serviceName="scale", taskDefinition=td, desiredCount=1)
    wait_for("one task", lambda: stable(cl, "scale", 1))
    cl.ecs.update_service(cluster=cl.name, service="scale", desiredCount=5)
    wait_for("five tasks", lambda: stable(cl, "scale", 5))
    cl.ecs.update_service(cluster=cl.name, service="scale", desiredCount=2)
    # The stop event is written after the stops themselves (as in ECS, events
    # trail the change), so a busy machine can show two tasks first.
    wait_for("two tasks", lambda: stable(cl, "scale", 2))
    s = wait_for("the scale-in event",
                 lambda: (lambda s: s if any("has stopped 3 running tasks" in m for m in messages(s)) else None)(
                     describe(cl, "scale")))
    # What is left stays spread.
    instances = {t["containerInstanceArn"] for t in live_tasks(cl, "scale")}
    assert len(instances) == 2
    stopped = cl.ecs.list_tasks(cluster=cl.name, serviceName="scale", desiredStatus="STOPPED")["taskArns"]
    d = cl.ecs.describe_tasks(cluster=cl.name, tasks=stopped)["tasks"]
    assert {t["stopCode"] for t in d} == {"ServiceSchedulerInitiated"}
    cl.ecs.update_service(cluster=cl.name, service="scale", desiredCount=0)
    wait_for("no tasks", lambda: stable(cl, "scale", 0))
    cl.ecs.delete_service(cluster=cl.name, service="scale")


def test_a_rolling_update_replaces_every_task_and_is_recorded(cl):
    v1 = register(cl, "svc-roll")
    cl.ecs.create_service(cluster=cl.name, serviceName="roll", taskDefinition=v1, desiredCount=3,
                          deploymentConfiguration={"minimumHealthyPercent": 50, "maximumPercent": 150})
    first = wait_for("v1 stable", lambda: stable(cl, "roll", 3, v1))["deployments"][0]
    v2 = register(cl, "svc-roll", command=("sleep", "3601"))
    before = time.time()
    updated = cl.ecs.update_service(cluster=cl.name, service="roll", taskDefinition=v2)["service"]
    assert [d["status"] for d in updated["deployments"]] == ["PRIMARY", "ACTIVE"]
    most = 0
    deadline = time.time() + 60
    while time.time() < deadline:
        live = live_tasks(cl, "roll")
        most = max(most, len(live))
        if stable(cl, "roll", 3, v2):
            break
        time.sleep(0.1)
    s = wait_for("v2 stable", lambda: stable(cl, "roll", 3, v2))
    # maximumPercent 150 of 3 rounds down to 4 tasks at once.
    assert most <= 4, most
    primary = s["deployments"][0]
    assert (primary["taskDefinition"], primary["rolloutState"]) == (v2, "COMPLETED")
    assert primary["id"] != first["id"]
    # The service-deployment API tells the same story (what Terraform's
    # wait_for_steady_state reads).
    digits = primary["id"].split("/")[1]
    listed = cl.ecs.list_service_deployments(cluster=cl.name, service="roll",
                                             createdAt={"after": before - 1})["serviceDeployments"]
    assert [b["status"] for b in listed] == ["SUCCESSFUL"]
    assert listed[0]["targetServiceRevisionArn"].endswith(digits)
    full = cl.ecs.describe_service_deployments(serviceDeploymentArns=[listed[0]["serviceDeploymentArn"]])
    dep = full["serviceDeployments"][0]
    assert dep["status"] == "SUCCESSFUL" and dep["targetServiceRevision"]["runningTaskCount"] == 3
    assert dep["sourceServiceRevisions"][0]["arn"].endswith(first["id"].split("/")[1])
    rev = cl.ecs.describe_service_revisions(serviceRevisionArns=[listed[0]["targetServiceRevisionArn"]])
    assert rev["serviceRevisions"][0]["taskDefinition"] == v2
    assert len(cl.ecs.list_service_deployments(cluster=cl.name, service="roll")["serviceDeployments"]) == 2
    # forceNewDeployment: a new deployment of the same definition.
    # The tasks before the update: read after it, they could already
    # include the new deployment's.
    old = {t["taskArn"] for t in live_tasks(cl, "roll")}
    forced = cl.ecs.update_service(cluster=cl.name, service="roll", forceNewDeployment=True)["service"]
    assert forced["deployments"][0]["id"] != primary["id"] and forced["taskDefinition"] == v2
    wait_for("forced rollout", lambda: stable(cl, "roll", 3, v2) and not old & {t["taskArn"] for t in live_tasks(cl, "roll")})
    cl.ecs.delete_service(cluster=cl.name, service="roll", force=True)


def test_the_circuit_breaker_rolls_a_failing_deployment_back(cl):
    good = register(cl, "svc-cb")
    cl.ecs.create_service(cluster=cl.name, serviceName="cb", taskDefinition=good, desiredCount=2,
                          deploymentConfiguration={"deploymentCircuitBreaker": {"enable": True, "rollback": True}})
    wait_for("good stable", lambda: stable(cl, "cb", 2, good))
    bad = register(cl, "svc-cb", command=("false",))
    before = time.time()
    cl.ecs.update_service(cluster=cl.name, service="cb", taskDefinition=bad)

    def rolled_back():
        s = describe(cl, "cb")
        return s if s["taskDefinition"] == good and stable(cl, "cb", 2, good) else None
    s = wait_for("the rollback", rolled_back, timeout=90)
    said = messages(s)
    assert any("deployment failed: tasks failed to start." in m for m in said), said
    assert any("rolling back to deployment" in m for m in said), said
    assert s["deployments"][0]["rolloutState"] == "COMPLETED"
    listed = cl.ecs.list_service_deployments(cluster=cl.name, service="cb", createdAt={"after": before - 1})
    assert [b["status"] for b in listed["serviceDeployments"]] == ["ROLLBACK_SUCCESSFUL"]
    dep = cl.ecs.describe_service_deployments(
        serviceDeploymentArns=[listed["serviceDeployments"][0]["serviceDeploymentArn"]])["serviceDeployments"][0]
    assert dep["deploymentCircuitBreaker"]["status"] == "TRIGGERED"
    assert dep["deploymentCircuitBreaker"]["failureCount"] >= dep["deploymentCircuitBreaker"]["threshold"] == 3
    assert dep["rollback"]["serviceRevisionArn"]
    # The bad tasks stopped by themselves; the good ones never went away.
    assert all(t["taskDefinitionArn"] == good for t in live_tasks(cl, "cb"))
    cl.ecs.delete_service(cluster=cl.name, service="cb", force=True)


def test_unhealthy_tasks_are_replaced(cl):
    td = register(cl, "svc-sick", healthCheck={"command": ["CMD-SHELL", "exit 1"], "interval": 5, "retries": 1,
                                               "timeout": 2})
    cl.ecs.create_service(cluster=cl.name, serviceName="sick", taskDefinition=td, desiredCount=1)
    first = wait_for("a task", lambda: live_tasks(cl, "sick"))[0]["taskArn"]

    def replaced():
        t = cl.task(first)
        return t if t["lastStatus"] == "STOPPED" else None
    t = wait_for("the unhealthy task to be stopped", replaced, timeout=60)
    assert t["stopCode"] == "ServiceSchedulerInitiated" and t["stoppedReason"] == "Task failed container health checks"
    assert t["healthStatus"] == "UNHEALTHY"
    wait_for("a replacement", lambda: [x for x in live_tasks(cl, "sick") if x["taskArn"] != first])
    s = describe(cl, "sick")
    assert s["deployments"][0]["failedTasks"] >= 1
    cl.ecs.delete_service(cluster=cl.name, service="sick", force=True)


def test_stop_service_deployment_rolls_back_on_request(cl):
    v1 = register(cl, "svc-stop")
    cl.ecs.create_service(cluster=cl.name, serviceName="stopme", taskDefinition=v1, desiredCount=1)
    wait_for("v1 stable", lambda: stable(cl, "stopme", 1, v1))
    # A deployment that never settles: its task never becomes healthy.
    v2 = register(cl, "svc-stop", healthCheck={"command": ["CMD-SHELL", "exit 1"], "interval": 5, "retries": 10,
                                               "startPeriod": 300})
    s = cl.ecs.update_service(cluster=cl.name, service="stopme", taskDefinition=v2)["service"]
    arn = s["currentServiceDeployment"]
    assert cl.ecs.describe_service_deployments(serviceDeploymentArns=[arn])["serviceDeployments"][0]["status"] == "IN_PROGRESS"
    cl.ecs.stop_service_deployment(serviceDeploymentArn=arn, stopType="ROLLBACK")
    wait_for("the rollback", lambda: stable(cl, "stopme", 1, v1))
    assert wait_for("rollback recorded", lambda: cl.ecs.describe_service_deployments(
        serviceDeploymentArns=[arn])["serviceDeployments"][0]["status"] == "ROLLBACK_SUCCESSFUL")
    code, _ = error_of(cl.ecs.stop_service_deployment, serviceDeploymentArn=arn)
    assert code == "ConflictException"
    cl.ecs.delete_service(cluster=cl.name, service="stopme", force=True)


def test_deleting_a_service_drains_it_to_inactive(cl):
    td = register(cl, "svc-del")
    cl.ecs.create_service(cluster=cl.name, serviceName="gone", taskDefinition=td, desiredCount=2,
                          tags=[{"key": "team", "value": "a"}])
    wait_for("stable", lambda: stable(cl, "gone", 2))
    code, msg = error_of(cl.ecs.delete_service, cluster=cl.name, service="gone")
    assert (code, msg) == ("InvalidParameterException", "The service cannot be stopped while it is scaled above 0.")
    d = cl.ecs.delete_service(cluster=cl.name, service="gone", force=True)["service"]
    assert d["status"] == "DRAINING"
    s = wait_for("INACTIVE", lambda: (lambda s: s if s["status"] == "INACTIVE" else None)(describe(cl, "gone")))
    assert s["runningCount"] == 0 and s["desiredCount"] == 0
    assert live_tasks(cl, "gone") == []
    assert s["serviceArn"] not in cl.ecs.list_services(cluster=cl.name)["serviceArns"]
    with_tags = cl.ecs.describe_services(cluster=cl.name, services=["gone"], include=["TAGS"])["services"][0]
    assert with_tags["tags"] == [{"key": "team", "value": "a"}]
    # The name can be used again.
    again = cl.ecs.create_service(cluster=cl.name, serviceName="gone", taskDefinition=td, desiredCount=0)["service"]
    assert again["status"] == "ACTIVE"
    cl.ecs.delete_service(cluster=cl.name, service="gone")


def test_draining_an_instance_moves_its_service_tasks_first(cl):
    td = register(cl, "svc-drain")
    cl.ecs.create_service(cluster=cl.name, serviceName="drain", taskDefinition=td, desiredCount=2)
    wait_for("stable", lambda: stable(cl, "drain", 2))
    victim = live_tasks(cl, "drain")[0]["containerInstanceArn"]
    cl.ecs.update_container_instances_state(cluster=cl.name, containerInstances=[victim], status="DRAINING")
    try:
        s = wait_for("tasks moved", lambda: stable(cl, "drain", 2) and all(
            t["containerInstanceArn"] != victim for t in live_tasks(cl, "drain")), timeout=40)
        assert s
    finally:
        cl.ecs.update_container_instances_state(cluster=cl.name, containerInstances=[victim], status="ACTIVE")
    cl.ecs.delete_service(cluster=cl.name, service="drain", force=True)


def test_list_services_filters_and_pages(cl):
    td = register(cl, "svc-list")
    for n in ("la", "lb", "lc"):
        cl.ecs.create_service(cluster=cl.name, serviceName=n, taskDefinition=td, desiredCount=0)
    page = cl.ecs.list_services(cluster=cl.name, maxResults=1)
    assert len(page["serviceArns"]) == 1 and page["nextToken"]
    seen = page["serviceArns"]
    while page.get("nextToken"):
        page = cl.ecs.list_services(cluster=cl.name, maxResults=1, nextToken=page["nextToken"])
        seen += page["serviceArns"]
    assert {a.rsplit("/", 1)[1] for a in seen} >= {"la", "lb", "lc"}
    assert cl.ecs.list_services(cluster=cl.name, schedulingStrategy="DAEMON")["serviceArns"] == []
    assert len(cl.ecs.list_services(cluster=cl.name, launchType="EC2", maxResults=100)["serviceArns"]) >= 3
    for n in ("la", "lb", "lc"):
        cl.ecs.delete_service(cluster=cl.name, service=n)


@pytest.fixture
def own(tmp_path):
    """A cluster of its own (two agents) for tests that add or kill hosts."""
    c = Cluster(str(tmp_path), "own-" + uuid.uuid4().hex[:6], [[], []], extra_env=ENV).start()
    yield c
    c.stop()


def test_a_daemon_service_follows_instances_as_they_join_and_drain(own, tmp_path):
    td = register(own, "daemon")
    own.ecs.create_service(cluster=own.name, serviceName="d", taskDefinition=td, schedulingStrategy="DAEMON")

    def per_instance(n):
        tasks = [t for t in live_tasks(own, "d") if t["lastStatus"] == "RUNNING"]
        s = describe(own, "d")
        places = {t["containerInstanceArn"] for t in tasks}
        return s if len(tasks) == n and len(places) == n and s["desiredCount"] == n else None
    s = wait_for("one task per instance", lambda: per_instance(2))
    assert s["schedulingStrategy"] == "DAEMON"
    # A host joins: it gets its task.
    third = Agent(own.server, own.name, str(tmp_path / "agent-new"), "i-" + uuid.uuid4().hex[:17]).start()
    own.agents.append(third)
    wait_for("third agent", lambda: agents_connected(own.ecs, own.name, 3))
    wait_for("three daemon tasks", lambda: per_instance(3))
    # A host drains: its task goes and is not replaced elsewhere.
    victim = own.instances()[third.instance_id]
    own.ecs.update_container_instances_state(cluster=own.name, containerInstances=[victim], status="DRAINING")
    wait_for("back to two", lambda: per_instance(2))
    assert all(t["containerInstanceArn"] != victim for t in live_tasks(own, "d"))
    # A new revision rolls over every instance.
    v2 = register(own, "daemon", command=("sleep", "3602"))
    own.ecs.update_service(cluster=own.name, service="d", taskDefinition=v2)
    wait_for("v2 everywhere", lambda: per_instance(2) and all(t["taskDefinitionArn"] == v2 for t in live_tasks(own, "d"))
             and describe(own, "d")["deployments"][0]["rolloutState"] == "COMPLETED")
    own.ecs.delete_service(cluster=own.name, service="d")
    wait_for("INACTIVE", lambda: describe(own, "d")["status"] == "INACTIVE")


def test_a_lost_host_is_replaced_and_leaves_no_duplicates_when_it_returns(own):
    td = register(own, "lost")
    own.ecs.create_service(cluster=own.name, serviceName="l", taskDefinition=td, desiredCount=2)
    wait_for("stable", lambda: stable(own, "l", 2))
    by_instance = {v: k for k, v in own.instances().items()}
    victim_arn = live_tasks(own, "l")[0]["containerInstanceArn"]
    agent = next(a for a in own.agents if a.instance_id == by_instance[victim_arn])
    lost_tasks = [t["taskArn"] for t in live_tasks(own, "l") if t["containerInstanceArn"] == victim_arn]
    # The agent dies; its containers keep running, as on a partitioned host.
    agent.kill9()
    s = wait_for("replacements elsewhere", lambda: stable(own, "l", 2) and all(
        t["containerInstanceArn"] != victim_arn for t in live_tasks(own, "l")), timeout=40)
    for arn in lost_tasks:
        t = own.task(arn)
        assert t["lastStatus"] == "STOPPED" and t["stoppedReason"].startswith("Host lost"), t["stoppedReason"]
    # Only task containers count: the hosts' warm-address pause containers
    # carry the cluster label too.
    def task_containers(*status):
        return docker("ps", "-q", *status, "--filter", f"label=com.amazonaws.ecs.cluster={own.name}",
                      "--filter", "label=com.amazonaws.ecs.task-arn").split()
    for arn in lost_tasks:
        alive = docker("ps", "-q", "--filter", f"label=com.amazonaws.ecs.task-arn={arn}").split()
        assert alive, ("the lost host's containers still run while it is away",
                       docker("ps", "-a", "--format", "{{.Names}} {{.Status}}"))
    assert len(task_containers()) == 2 + len(lost_tasks), (
        [(t["taskArn"][-6:], t["containerInstanceArn"][-6:], t["lastStatus"], (t.get("stoppedReason") or "")[:50])
         for t in own.ecs.describe_tasks(cluster=own.name, tasks=own.ecs.list_tasks(
             cluster=own.name, serviceName="l", desiredStatus="STOPPED")["taskArns"] + [
             t["taskArn"] for t in live_tasks(own, "l")])["tasks"]], victim_arn[-6:],
        docker("ps", "-a", "--format", "{{.ID}} {{.Status}} {{.Label \"berth.instance\"}}"))
    # The host comes back: its stale containers are stopped, and the
    # service still runs exactly its desired count.
    agent.start()
    wait_for("agent back", lambda: agents_connected(own.ecs, own.name, 2))
    wait_for("stale containers gone", lambda: len(task_containers()) == 2)
    assert stable(own, "l", 2)
    assert s


def test_services_are_taggable(cl):
    td = register(cl, "svc-tag")
    arn = cl.ecs.create_service(cluster=cl.name, serviceName="tagged", taskDefinition=td, desiredCount=0,
                                tags=[{"key": "a", "value": "1"}])["service"]["serviceArn"]
    cl.ecs.tag_resource(resourceArn=arn, tags=[{"key": "b", "value": "2"}])
    cl.ecs.untag_resource(resourceArn=arn, tagKeys=["a"])
    assert cl.ecs.list_tags_for_resource(resourceArn=arn)["tags"] == [{"key": "b", "value": "2"}]
    d = cl.ecs.describe_services(cluster=cl.name, services=[arn], include=["TAGS"])["services"][0]
    assert d["tags"] == [{"key": "b", "value": "2"}]
    assert "tags" not in describe(cl, "tagged")
    cl.ecs.delete_service(cluster=cl.name, service=arn)
    code, _ = error_of(cl.ecs.tag_resource, resourceArn=arn.replace("tagged", "nobody"), tags=[{"key": "x", "value": "y"}])
    assert code == "ServiceNotFoundException"


def test_service_tasks_get_the_service_tags_when_asked(cl):
    td = register(cl, "svc-prop")
    cl.ecs.create_service(cluster=cl.name, serviceName="prop", taskDefinition=td, desiredCount=1,
                          tags=[{"key": "owner", "value": "svc"}], propagateTags="SERVICE")
    wait_for("stable", lambda: stable(cl, "prop", 1))
    t = live_tasks(cl, "prop")[0]
    tagged = cl.ecs.describe_tasks(cluster=cl.name, tasks=[t["taskArn"]], include=["TAGS"])["tasks"][0]
    assert tagged["tags"] == [{"key": "owner", "value": "svc"}]
    cl.ecs.delete_service(cluster=cl.name, service="prop", force=True)


def berth(cl, *args, timeout=120):
    import subprocess
    from conftest import BERTH
    p = subprocess.run([BERTH, *args, "--server", cl.server.url, "--cluster", cl.name], capture_output=True,
                       text=True, stdin=subprocess.DEVNULL, timeout=timeout)
    return p.returncode, p.stdout + p.stderr


def test_the_cli_lists_services_shows_events_and_follows_a_deploy(cl):
    v1 = register(cl, "svc-cli")
    cl.ecs.create_service(cluster=cl.name, serviceName="cli", taskDefinition=v1, desiredCount=2,
                          deploymentConfiguration={"deploymentCircuitBreaker": {"enable": True, "rollback": True}})
    wait_for("stable", lambda: stable(cl, "cli", 2, v1))
    rc, out = berth(cl, "service", "ls")
    assert rc == 0, out
    row = next(line for line in out.splitlines() if line.startswith("cli "))
    assert row.split()[1:5] == ["ACTIVE", "2", "2", "0"] and "svc-cli:" in row, row
    rc, out = berth(cl, "service", "events", "cli")
    assert rc == 0 and out.strip().splitlines()[-1].endswith("(service cli) has reached a steady state."), out
    # A good deploy: followed to the end, exit 0.
    v2 = register(cl, "svc-cli", command=("sleep", "3601"))
    rc, out = berth(cl, "service", "deploy", "cli", "--task-definition", v2)
    assert rc == 0, out
    assert "new: 2/2 running" in out and "completed in" in out, out
    assert stable(cl, "cli", 2, v2)
    # A bad one: the circuit breaker rolls it back, exit 1.
    bad = register(cl, "svc-cli", command=("false",))
    rc, out = berth(cl, "service", "deploy", "cli", "--task-definition", bad)
    assert rc == 1, out
    assert "deployment failed: tasks failed to start." in out and "rolled back" in out, out
    wait_for("back on v2", lambda: stable(cl, "cli", 2, v2))
    cl.ecs.delete_service(cluster=cl.name, service="cli", force=True)


def test_services_honour_placement_constraints_and_strategies(cl):
    td = register(cl, "svc-place")
    by_iid = cl.instances()
    target = sorted(by_iid)[0]
    cl.ecs.create_service(cluster=cl.name, serviceName="pinned", taskDefinition=td, desiredCount=3,
                          placementConstraints=[{"type": "memberOf", "expression": f"ec2InstanceId == {target}"}])
    wait_for("pinned stable", lambda: stable(cl, "pinned", 3))
    assert {t["containerInstanceArn"] for t in live_tasks(cl, "pinned")} == {by_iid[target]}
    cl.ecs.create_service(cluster=cl.name, serviceName="packed", taskDefinition=td, desiredCount=3,
                          placementStrategy=[{"type": "binpack", "field": "memory"}])
    wait_for("packed stable", lambda: stable(cl, "packed", 3))
    assert len({t["containerInstanceArn"] for t in live_tasks(cl, "packed")}) == 1
    # distinctInstance with more tasks than instances: what fits runs, the
    # rest is reported.
    cl.ecs.create_service(cluster=cl.name, serviceName="distinct", taskDefinition=td, desiredCount=3,
                          placementConstraints=[{"type": "distinctInstance"}])

    def two_and_a_complaint():
        s = describe(cl, "distinct")
        tasks = [t for t in live_tasks(cl, "distinct") if t["lastStatus"] == "RUNNING"]
        complained = any("was unable to place a task because no container instance met all of its requirements"
                         in m for m in messages(s))
        return s if len(tasks) == 2 and len({t["containerInstanceArn"] for t in tasks}) == 2 and complained else None
    wait_for("two tasks and an event", two_and_a_complaint)
    for n in ("pinned", "packed", "distinct"):
        cl.ecs.delete_service(cluster=cl.name, service=n, force=True)


def test_stopped_tasks_are_forgotten_after_the_retention(tmp_path):
    c = Cluster(str(tmp_path), "forget", [[]], extra_env={**ENV, "BERTH_STOPPED_TASK_RETENTION": "2"}).start()
    try:
        td = register(c, "forget", command=("true",))
        arn = c.ecs.run_task(cluster=c.name, taskDefinition=td)["tasks"][0]["taskArn"]
        c.wait_status(arn, "STOPPED")
        assert arn in c.ecs.list_tasks(cluster=c.name, desiredStatus="STOPPED")["taskArns"]
        wait_for("the stopped task to be forgotten", lambda: c.ecs.describe_tasks(
            cluster=c.name, tasks=[arn])["failures"], timeout=30)
        assert c.ecs.describe_tasks(cluster=c.name, tasks=[arn])["failures"][0]["reason"] == "MISSING"
        assert arn not in c.ecs.list_tasks(cluster=c.name, desiredStatus="STOPPED")["taskArns"]
        # A running one is kept however long it runs.
        keep = c.ecs.run_task(cluster=c.name, taskDefinition=register(c, "keep"))["tasks"][0]["taskArn"]
        c.wait_status(keep, "RUNNING")
        time.sleep(4)
        assert c.task(keep)["lastStatus"] == "RUNNING"
    finally:
        c.stop()

"""Auto Scaling groups that launch real hosts: EC2 launch templates and
the Auto Scaling API through the aws CLI and boto3; a group whose
instances are `berth agent`s in network namespaces of this machine (the
netns launcher) or started by an operator's script (the exec launcher),
registering in the cluster their user data names, running tasks, held by
a termination lifecycle hook and terminated with their containers; a
launch that never registers failing after the launch timeout; Auto
Scaling's and EC2's errors."""

import base64
import json
import os
import subprocess
import time

import pytest

from conftest import BERTH, IMAGE, Server, aws_cli, wait_for
from test_iam import client, error_of


def user_data(cluster):
    script = f"#!/bin/bash\necho ECS_CLUSTER={cluster} >> /etc/ecs/ecs.config\n"
    return base64.b64encode(script.encode()).decode()


def remove_launched(data_dir):
    """Hosts the netns launcher left (a machine outlives the server that
    launched it): their agents, namespaces, links and forwarding rules."""
    launched = os.path.join(data_dir, "launched")
    for iid in os.listdir(launched) if os.path.isdir(launched) else []:
        try:
            rec = json.load(open(os.path.join(launched, iid, "launch.json")))
        except OSError:
            continue
        subprocess.run(["kill", "-KILL", "--", f"-{rec['pid']}"], capture_output=True)
        # Its containers (tasks' and warm addresses' pause containers),
        # which would hold their subnet addresses for the next server.
        try:
            state = json.load(open(os.path.join(launched, iid, "agent", "agent-state.json")))
            ci = (state.get("container_instance_arn") or "").rsplit("/", 1)[-1]
        except (OSError, ValueError):
            ci = ""
        if ci:
            ids = subprocess.run(["docker", "ps", "-aq", "--filter", f"label=berth.instance={ci}"],
                                 capture_output=True, text=True).stdout.split()
            if ids:
                subprocess.run(["docker", "rm", "-f", *ids], capture_output=True)
        if "ns" in rec:
            subprocess.run(["iptables", "-t", "nat", "-D", *rec["forward"]], capture_output=True)
            subprocess.run(["ip", "link", "del", rec["outside"]], capture_output=True)
            subprocess.run(["ip", "netns", "del", rec["ns"]], capture_output=True)


@pytest.fixture(scope="module")
def netns_server(tmp_path_factory):
    s = Server(str(tmp_path_factory.mktemp("asg")), extra_env={
        "BERTH_LAUNCHER": "netns", "BERTH_LAUNCH_TIMEOUT": "15", "BERTH_MANAGED_SCALE_IN_AFTER": "3",
        "BERTH_FARGATE_POOL_MAX": "2", "BERTH_FARGATE_POOL_IDLE": "2"}).start()
    yield s
    s.stop()
    remove_launched(s.data_dir)


def group_of(asg, name):
    return asg.describe_auto_scaling_groups(AutoScalingGroupNames=[name])["AutoScalingGroups"][0]


def test_a_group_launches_netns_hosts_that_join_run_tasks_and_are_terminated(netns_server, name):
    s = netns_server
    ec2, asg, ecs = client(s, "ec2"), client(s, "autoscaling"), client(s, "ecs")
    ecs.create_cluster(clusterName=name)
    lt = aws_cli(s, "ec2", "create-launch-template", "--launch-template-name", name, "--launch-template-data",
                 json.dumps({"InstanceType": "t3.small", "UserData": user_data(name)}),
                 "--tag-specifications", "ResourceType=launch-template,Tags=[{Key=team,Value=a}]")["LaunchTemplate"]
    assert lt["LaunchTemplateId"].startswith("lt-") and lt["LatestVersionNumber"] == 1
    got = ec2.describe_launch_templates(LaunchTemplateNames=[name])["LaunchTemplates"][0]
    assert got["Tags"] == [{"Key": "team", "Value": "a"}]
    asg.create_auto_scaling_group(AutoScalingGroupName=name, MinSize=0, MaxSize=2, DesiredCapacity=1,
                                  LaunchTemplate={"LaunchTemplateName": name, "Version": "$Latest"},
                                  AvailabilityZones=["local-1a"],
                                  Tags=[{"Key": "env", "Value": "test", "PropagateAtLaunch": True}])

    def in_service():
        g = group_of(asg, name)
        live = [i for i in g["Instances"] if i["LifecycleState"] == "InService"]
        return live[0] if live else None

    inst = wait_for("an instance in service", in_service, timeout=60)
    iid = inst["InstanceId"]
    assert inst["InstanceType"] == "t3.small" and inst["AvailabilityZone"] == "local-1a"
    ci = ecs.describe_container_instances(cluster=name, containerInstances=ecs.list_container_instances(
        cluster=name)["containerInstanceArns"])["containerInstances"][0]
    assert ci["ec2InstanceId"] == iid and ci["agentConnected"]
    assert subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.count(f"berth-{iid}") == 1
    ecs.register_task_definition(family=name, containerDefinitions=[
        {"name": "c", "image": IMAGE, "memory": 16, "command": ["sleep", "600"]}])
    task = ecs.run_task(cluster=name, taskDefinition=name)["tasks"][0]
    wait_for("the task running on the launched host", lambda: ecs.describe_tasks(
        cluster=name, tasks=[task["taskArn"]])["tasks"][0]["lastStatus"] == "RUNNING", timeout=60)

    # A termination hook holds the instance until its action completes.
    asg.put_lifecycle_hook(AutoScalingGroupName=name, LifecycleHookName="drain",
                           LifecycleTransition="autoscaling:EC2_INSTANCE_TERMINATING", HeartbeatTimeout=300)
    asg.set_desired_capacity(AutoScalingGroupName=name, DesiredCapacity=0)
    wait_for("the instance held by its hook",
             lambda: group_of(asg, name)["Instances"][0]["LifecycleState"] == "Terminating:Wait", timeout=30)
    asg.record_lifecycle_action_heartbeat(AutoScalingGroupName=name, LifecycleHookName="drain", InstanceId=iid)
    asg.complete_lifecycle_action(AutoScalingGroupName=name, LifecycleHookName="drain", InstanceId=iid,
                                  LifecycleActionResult="CONTINUE")
    wait_for("the instance terminated", lambda: all(
        i["LifecycleState"] == "Terminated" for i in group_of(asg, name)["Instances"]), timeout=30)
    # Its machine goes, with its containers: the task stops, the container
    # instance is deregistered, the namespace is gone.
    wait_for("the task stopped", lambda: ecs.describe_tasks(
        cluster=name, tasks=[task["taskArn"]])["tasks"][0]["lastStatus"] == "STOPPED", timeout=60)
    assert ecs.list_container_instances(cluster=name)["containerInstanceArns"] == []
    assert f"berth-{iid}" not in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    acts = asg.describe_scaling_activities(AutoScalingGroupName=name)["Activities"]
    assert [(a["Description"], a["StatusCode"]) for a in acts] == [
        (f"Terminating EC2 instance: {iid}", "Successful"), (f"Launching a new EC2 instance: {iid}", "Successful")]
    assert "changing the desired capacity from 1 to 0" in acts[0]["Cause"]
    asg.delete_auto_scaling_group(AutoScalingGroupName=name)
    wait_for("the group gone", lambda: not asg.describe_auto_scaling_groups(
        AutoScalingGroupNames=[name])["AutoScalingGroups"], timeout=30)


def test_a_launch_that_never_registers_fails_and_bad_input_is_refused(netns_server, name):
    s = netns_server
    ec2, asg = client(s, "ec2"), client(s, "autoscaling")
    # User data names a cluster that does not exist: the agent cannot
    # register, and the launch fails after the launch timeout.
    lt = ec2.create_launch_template(LaunchTemplateName=name, LaunchTemplateData={
        "UserData": user_data(name + "-missing")})["LaunchTemplate"]
    assert error_of(ec2.create_launch_template, LaunchTemplateName=name, LaunchTemplateData={"InstanceType": "t3.micro"})[1] == \
        "InvalidLaunchTemplateName.AlreadyExistsException"
    v2 = ec2.create_launch_template_version(LaunchTemplateId=lt["LaunchTemplateId"], SourceVersion="1",
                                            LaunchTemplateData={"InstanceType": "m5.large"})["LaunchTemplateVersion"]
    assert v2["VersionNumber"] == 2 and v2["LaunchTemplateData"]["UserData"] == user_data(name + "-missing")
    ec2.modify_launch_template(LaunchTemplateId=lt["LaunchTemplateId"], DefaultVersion="2")
    versions = ec2.describe_launch_template_versions(LaunchTemplateId=lt["LaunchTemplateId"],
                                                     Versions=["$Default"])["LaunchTemplateVersions"]
    assert [(v["VersionNumber"], v["DefaultVersion"]) for v in versions] == [(2, True)]
    assert error_of(ec2.describe_launch_templates, LaunchTemplateIds=["lt-0000000000000000f"])[1] == \
        "InvalidLaunchTemplateId.NotFound"

    key = dict(AutoScalingGroupName=name, LaunchTemplate={"LaunchTemplateId": lt["LaunchTemplateId"]},
               AvailabilityZones=["local-1a"])
    assert error_of(asg.create_auto_scaling_group, MinSize=2, MaxSize=1, **key)[1:] == (
        "ValidationError", "Max bound, 1, must be greater than or equal to min bound, 2")
    assert "does not exist" in error_of(asg.create_auto_scaling_group, MinSize=0, MaxSize=1, AutoScalingGroupName=name,
                                        LaunchTemplate={"LaunchTemplateName": "nope-" + name},
                                        AvailabilityZones=["local-1a"])[2]
    assert error_of(asg.create_auto_scaling_group, MinSize=0, MaxSize=1, AutoScalingGroupName=name,
                    LaunchConfigurationName="old")[1] == "ValidationError"
    assert not asg.describe_auto_scaling_groups(AutoScalingGroupNames=[name])["AutoScalingGroups"]
    asg.create_auto_scaling_group(MinSize=1, MaxSize=2, **key)
    assert error_of(asg.create_auto_scaling_group, MinSize=1, MaxSize=2, **key)[1] == "AlreadyExists"
    assert error_of(asg.set_desired_capacity, AutoScalingGroupName=name, DesiredCapacity=3)[2] == \
        "New SetDesiredCapacity value 3 is above max value 2 for the AutoScalingGroup."

    def failed():
        acts = asg.describe_scaling_activities(AutoScalingGroupName=name)["Activities"]
        return [a for a in acts if a["StatusCode"] == "Failed"]

    bad = wait_for("the launch to fail", failed, timeout=60)[0]
    assert "did not register its agent within 15 seconds" in bad["StatusMessage"]
    iid = bad["Description"].rsplit(" ", 1)[1]
    wait_for("its namespace gone", lambda: f"berth-{iid}" not in subprocess.run(
        ["ip", "netns", "list"], capture_output=True, text=True).stdout, timeout=20)
    # It keeps trying: the group wants one instance.
    wait_for("another launch", lambda: any(i["InstanceId"] != iid for i in group_of(asg, name)["Instances"]),
             timeout=60)
    assert error_of(asg.delete_auto_scaling_group, AutoScalingGroupName=name)[1] == "ResourceInUse"
    asg.delete_auto_scaling_group(AutoScalingGroupName=name, ForceDelete=True)
    wait_for("the group gone", lambda: not asg.describe_auto_scaling_groups(
        AutoScalingGroupNames=[name])["AutoScalingGroups"], timeout=60)
    ec2.delete_launch_template(LaunchTemplateName=name)
    assert error_of(ec2.describe_launch_templates, LaunchTemplateNames=[name])[1] == \
        "InvalidLaunchTemplateName.NotFoundException"


LAUNCH_SCRIPT = r'''#!/bin/sh
# An operator's launcher: "machines" are agents on this host's network,
# one per instance, and an instance type of x9.none has no capacity.
d="$LAUNCH_STATE/$BERTH_INSTANCE_ID"
case "$1" in
launch)
  if [ "$BERTH_INSTANCE_TYPE" = "x9.none" ]; then echo "no capacity for $BERTH_INSTANCE_TYPE" >&2; exit 3; fi
  mkdir -p "$d"
  env | grep ^BERTH_ | sort > "$d/env"
  setsid "$LAUNCH_BERTH" agent --server "$BERTH_SERVER" --cluster "$BERTH_CLUSTER" --data-dir "$d/agent" \
    --instance-id "$BERTH_INSTANCE_ID" --availability-zone "$BERTH_AVAILABILITY_ZONE" --token "$BERTH_JOIN_TOKEN" \
    --endpoint-port 0 > "$d/agent.log" 2>&1 < /dev/null &
  echo $! > "$LAUNCH_STATE/$BERTH_INSTANCE_ID.pid" ;;
terminate)
  p="$LAUNCH_STATE/$BERTH_INSTANCE_ID.pid"
  [ -f "$p" ] && kill "$(cat "$p")" 2>/dev/null
  # The machine's containers go with it.
  [ -n "$BERTH_CONTAINER_INSTANCE" ] && docker ps -aq --filter "label=berth.instance=$BERTH_CONTAINER_INSTANCE" | xargs -r docker rm -f >/dev/null
  echo "$BERTH_INSTANCE_ID $BERTH_CONTAINER_INSTANCE" >> "$LAUNCH_STATE/terminated" ;;
esac
'''


def test_an_exec_launcher_script_starts_and_stops_machines_and_its_failures_are_reported(tmp_path, name):
    script = tmp_path / "launch.sh"
    script.write_text(LAUNCH_SCRIPT)
    script.chmod(0o755)
    state = tmp_path / "machines"
    state.mkdir()
    s = Server(str(tmp_path / "server"), extra_env={
        "BERTH_LAUNCHER": f"exec:{script}", "BERTH_LAUNCH_TIMEOUT": "30",
        "LAUNCH_STATE": str(state), "LAUNCH_BERTH": BERTH})
    os.makedirs(s.data_dir, exist_ok=True)
    s.start()
    try:
        ec2, asg, ecs = client(s, "ec2"), client(s, "autoscaling"), client(s, "ecs")
        ecs.create_cluster(clusterName=name)
        ec2.create_launch_template(LaunchTemplateName=name, LaunchTemplateData={
            "InstanceType": "t3.micro", "ImageId": "ami-12345678", "UserData": user_data(name)})
        ec2.create_launch_template(LaunchTemplateName=name + "-none", LaunchTemplateData={
            "InstanceType": "x9.none", "UserData": user_data(name)})
        asg.create_auto_scaling_group(AutoScalingGroupName=name, MinSize=0, MaxSize=1, DesiredCapacity=1,
                                      LaunchTemplate={"LaunchTemplateName": name}, AvailabilityZones=["local-1b"],
                                      Tags=[{"Key": "team", "Value": "a", "PropagateAtLaunch": True}])
        asg.create_auto_scaling_group(AutoScalingGroupName=name + "-none", MinSize=0, MaxSize=1, DesiredCapacity=1,
                                      LaunchTemplate={"LaunchTemplateName": name + "-none"},
                                      AvailabilityZones=["local-1b"])
        inst = wait_for("an instance in service", lambda: [
            i for i in group_of(asg, name)["Instances"] if i["LifecycleState"] == "InService"], timeout=60)[0]
        env = (state / inst["InstanceId"] / "env").read_text()
        for want in [f"BERTH_CLUSTER={name}", "BERTH_IMAGE_ID=ami-12345678", "BERTH_AVAILABILITY_ZONE=local-1b",
                     f'BERTH_TAGS={{"aws:autoscaling:groupName":"{name}","team":"a"}}', f"BERTH_SERVER={s.url}"]:
            assert want in env, (want, env)
        ci = ecs.describe_container_instances(cluster=name, containerInstances=ecs.list_container_instances(
            cluster=name)["containerInstanceArns"])["containerInstances"][0]
        assert ci["ec2InstanceId"] == inst["InstanceId"]

        def failed():
            acts = asg.describe_scaling_activities(AutoScalingGroupName=name + "-none")["Activities"]
            return [a for a in acts if a["StatusCode"] == "Failed"]

        bad = wait_for("the launch to fail", failed, timeout=30)[0]
        assert bad["StatusMessage"] == "the launcher script exited with 3: no capacity for x9.none", bad
        asg.set_desired_capacity(AutoScalingGroupName=name, DesiredCapacity=0)
        wait_for("the instance terminated", lambda: group_of(asg, name)["Instances"][0]["LifecycleState"]
                 == "Terminated", timeout=30)
        assert (state / "terminated").read_text().split() == [inst["InstanceId"], ci["containerInstanceArn"].rsplit("/", 1)[1]]
        asg.delete_auto_scaling_group(AutoScalingGroupName=name + "-none", ForceDelete=True)
    finally:
        s.stop()
        for pid in state.glob("*.pid"):
            subprocess.run(["kill", "-9", pid.read_text().strip()], capture_output=True)


def test_capacity_providers_over_groups_are_checked_recorded_and_guarded(netns_server, name):
    s = netns_server
    ec2, asg, ecs = client(s, "ec2"), client(s, "autoscaling"), client(s, "ecs")
    ec2.create_launch_template(LaunchTemplateName=name, LaunchTemplateData={"InstanceType": "t3.micro"})
    for g, protect in ((name, True), (name + "-open", False)):
        asg.create_auto_scaling_group(AutoScalingGroupName=g, MinSize=0, MaxSize=3, LaunchTemplate={
            "LaunchTemplateName": name}, AvailabilityZones=["local-1a"], NewInstancesProtectedFromScaleIn=protect)
    arn = group_of(asg, name)["AutoScalingGroupARN"]
    open_arn = group_of(asg, name + "-open")["AutoScalingGroupARN"]
    assert error_of(ecs.create_capacity_provider, name="ecs-" + name,
                    autoScalingGroupProvider={"autoScalingGroupArn": arn})[1] == "InvalidParameterException"
    assert "instance protection from scale in" in error_of(
        ecs.create_capacity_provider, name=name, autoScalingGroupProvider={
            "autoScalingGroupArn": open_arn, "managedTerminationProtection": "ENABLED"})[2]
    assert "only for capacity providers of ECS Managed Instances" in error_of(
        ecs.create_capacity_provider, name=name, cluster="x", autoScalingGroupProvider={"autoScalingGroupArn": arn})[2]
    assert "does not exist" in error_of(ecs.create_capacity_provider, name=name, autoScalingGroupProvider={
        "autoScalingGroupArn": arn.replace(name, name + "-nope")})[2]
    p = ecs.create_capacity_provider(name=name, autoScalingGroupProvider={
        "autoScalingGroupArn": arn, "managedTerminationProtection": "ENABLED",
        "managedScaling": {"targetCapacity": 90}}, tags=[{"key": "team", "value": "a"}])["capacityProvider"]
    assert (p["type"], p["status"]) == ("EC2_AUTOSCALING", "ACTIVE")
    m = p["autoScalingGroupProvider"]["managedScaling"]
    assert (m["status"], m["targetCapacity"], m["instanceWarmupPeriod"]) == ("ENABLED", 90, 300)
    assert p["autoScalingGroupProvider"]["managedDraining"] == "ENABLED"
    assert "already associated" in error_of(ecs.create_capacity_provider, name=name + "-2", autoScalingGroupProvider={
        "autoScalingGroupArn": arn})[2]
    ecs.update_capacity_provider(name=name, autoScalingGroupProvider={"managedScaling": {"targetCapacity": 100}})
    got = ecs.describe_capacity_providers(capacityProviders=[name, "FARGATE"])["capacityProviders"]
    assert [x["name"] for x in got] == ["FARGATE", name] or [x["name"] for x in got] == [name, "FARGATE"]
    assert [x for x in got if x["name"] == name][0]["autoScalingGroupProvider"]["managedScaling"]["targetCapacity"] == 100
    ecs.create_cluster(clusterName=name, capacityProviders=[name])
    assert "in use" in error_of(ecs.delete_capacity_provider, capacityProvider=name)[2]
    ecs.put_cluster_capacity_providers(cluster=name, capacityProviders=[], defaultCapacityProviderStrategy=[])
    gone = ecs.delete_capacity_provider(capacityProvider=name)["capacityProvider"]
    assert gone["status"] == "INACTIVE"
    assert ecs.describe_capacity_providers(capacityProviders=[name])["failures"][0]["reason"] == "MISSING"
    for g in (name, name + "-open"):
        asg.delete_auto_scaling_group(AutoScalingGroupName=g)


def test_a_capacity_provider_launches_hosts_for_provisioning_tasks_and_retires_empty_ones(netns_server, name):
    s = netns_server
    ec2, asg, ecs, cw = client(s, "ec2"), client(s, "autoscaling"), client(s, "ecs"), client(s, "cloudwatch")
    ec2.create_launch_template(LaunchTemplateName=name, LaunchTemplateData={
        "InstanceType": "t3.small", "UserData": user_data(name)})
    asg.create_auto_scaling_group(AutoScalingGroupName=name, MinSize=0, MaxSize=2, DesiredCapacity=0,
                                  LaunchTemplate={"LaunchTemplateName": name}, AvailabilityZones=["local-1a"],
                                  NewInstancesProtectedFromScaleIn=True)
    arn = group_of(asg, name)["AutoScalingGroupARN"]
    ecs.create_capacity_provider(name=name, autoScalingGroupProvider={
        "autoScalingGroupArn": arn, "managedTerminationProtection": "ENABLED",
        "managedScaling": {"status": "ENABLED", "targetCapacity": 100, "instanceWarmupPeriod": 0}})
    # Managed draining (on by default) holds terminating instances with ECS's hook.
    hooks = asg.describe_lifecycle_hooks(AutoScalingGroupName=name)["LifecycleHooks"]
    assert [(h["LifecycleHookName"], h["LifecycleTransition"]) for h in hooks] == [
        ("ecs-managed-draining-termination-hook", "autoscaling:EC2_INSTANCE_TERMINATING")]
    ecs.create_cluster(clusterName=name, capacityProviders=[name, "FARGATE"],
                       defaultCapacityProviderStrategy=[{"capacityProvider": name, "weight": 1}])
    ecs.register_task_definition(family=name, containerDefinitions=[
        {"name": "c", "image": IMAGE, "memory": 16, "command": ["sleep", "600"], "stopTimeout": 1}])
    _, code, msg = error_of(ecs.run_task, cluster=name, taskDefinition=name, capacityProviderStrategy=[
        {"capacityProvider": name, "weight": 1}, {"capacityProvider": "FARGATE", "weight": 1}])
    assert code == "InvalidParameterException" and "mix" in msg
    # No host yet: the tasks wait in PROVISIONING, placed nowhere.
    ran = ecs.run_task(cluster=name, taskDefinition=name)
    assert ran["failures"] == []
    task = ran["tasks"][0]
    assert (task["lastStatus"], task["capacityProviderName"], task["launchType"]) == ("PROVISIONING", name, "EC2")
    assert "containerInstanceArn" not in task
    # A service on the cluster's default strategy waits the same way.
    svc = ecs.create_service(cluster=name, serviceName="s", taskDefinition=name, desiredCount=1)["service"]
    assert svc["capacityProviderStrategy"] == [{"capacityProvider": name, "weight": 1, "base": 0}]
    # One stopped while it waits stops at once: no host ever had it.
    gone = ecs.run_task(cluster=name, taskDefinition=name)["tasks"][0]["taskArn"]
    ecs.stop_task(cluster=name, task=gone, reason="changed my mind")
    t = ecs.describe_tasks(cluster=name, tasks=[gone])["tasks"][0]
    assert (t["lastStatus"], t["stoppedReason"]) == ("STOPPED", "changed my mind")
    # Managed scaling grows the group, the host joins, the task runs there.
    t = wait_for("the task running on a launched host", lambda: (lambda t: t if t["lastStatus"] == "RUNNING" else None)(
        ecs.describe_tasks(cluster=name, tasks=[task["taskArn"]])["tasks"][0]), timeout=90)
    wait_for("the service's task running", lambda: ecs.describe_services(cluster=name, services=["s"])[
        "services"][0]["runningCount"] == 1, timeout=30)
    inst = [i for i in group_of(asg, name)["Instances"] if i["LifecycleState"] == "InService"]
    assert len(inst) == 1 and group_of(asg, name)["DesiredCapacity"] == 1
    ci = ecs.describe_container_instances(cluster=name, containerInstances=[t["containerInstanceArn"]])[
        "containerInstances"][0]
    assert ci["ec2InstanceId"] == inst[0]["InstanceId"]
    cause = asg.describe_scaling_activities(AutoScalingGroupName=name)["Activities"][0]["Cause"]
    assert "managed scaling" in cause and "from 0 to 1" in cause, cause
    # Managed termination protection: the busy instance is protected.
    wait_for("the busy instance protected",
             lambda: group_of(asg, name)["Instances"][0]["ProtectedFromScaleIn"], timeout=20)
    dims = [{"Name": "CapacityProviderName", "Value": name}, {"Name": "ClusterName", "Value": name}]
    wait_for("CapacityProviderReservation published", lambda: cw.list_metrics(
        Namespace="AWS/ECS/ManagedScaling", MetricName="CapacityProviderReservation", Dimensions=dims)["Metrics"],
        timeout=30)
    # Managed draining: the busy host, terminated, waits DRAINING while its
    # service's task moves to a replacement host, then goes.
    ecs.stop_task(cluster=name, task=task["taskArn"])
    first = inst[0]["InstanceId"]
    asg.terminate_instance_in_auto_scaling_group(InstanceId=first, ShouldDecrementDesiredCapacity=False)
    wait_for("the host draining", lambda: ecs.describe_container_instances(
        cluster=name, containerInstances=[t["containerInstanceArn"]])["containerInstances"][0]["status"] == "DRAINING",
        timeout=30)

    def moved():
        live = [x for x in ecs.describe_tasks(cluster=name, tasks=ecs.list_tasks(
            cluster=name, serviceName="s")["taskArns"] or ["none"])["tasks"] if x["lastStatus"] == "RUNNING"]
        return live and live[0]["containerInstanceArn"] != t["containerInstanceArn"]
    wait_for("the service's task on the replacement host", moved, timeout=90)
    wait_for("the drained host terminated", lambda: [i["LifecycleState"] for i in group_of(asg, name)[
        "Instances"] if i["InstanceId"] == first] in ([], ["Terminated"]), timeout=40)
    # The service goes: the empty host is unprotected and retired.
    ecs.delete_service(cluster=name, service="s", force=True)
    wait_for("the empty instance terminated", lambda: group_of(asg, name)["DesiredCapacity"] == 0 and all(
        i["LifecycleState"] == "Terminated" for i in group_of(asg, name)["Instances"]), timeout=60)
    wait_for("its container instance gone",
             lambda: ecs.list_container_instances(cluster=name)["containerInstanceArns"] == [], timeout=30)
    ecs.put_cluster_capacity_providers(cluster=name, capacityProviders=[], defaultCapacityProviderStrategy=[])
    ecs.delete_capacity_provider(capacityProvider=name)
    asg.delete_auto_scaling_group(AutoScalingGroupName=name, ForceDelete=True)


def test_the_fargate_pool_grows_through_the_launcher_for_waiting_tasks_and_shrinks_when_idle(netns_server, name):
    s = netns_server
    asg, ecs = client(s, "autoscaling"), client(s, "ecs")
    ecs.create_cluster(clusterName=name)
    ecs.register_task_definition(
        family=name, networkMode="awsvpc", requiresCompatibilities=["FARGATE"], cpu="256", memory="512",
        containerDefinitions=[{"name": "c", "image": IMAGE, "command": ["sleep", "600"], "stopTimeout": 1}])

    def pool_hosts():
        """Launched Fargate hosts: agents on this machine, outside any namespace."""
        launched = os.path.join(s.data_dir, "launched")
        out = []
        for iid in os.listdir(launched) if os.path.isdir(launched) else []:
            try:
                rec = json.load(open(os.path.join(launched, iid, "launch.json")))
            except OSError:
                continue
            if "ns" not in rec:
                out.append(iid)
        return out
    before = len(pool_hosts())
    # No Fargate host at all: the task waits for the pool to grow.
    task = ecs.run_task(cluster=name, taskDefinition=name, launchType="FARGATE", networkConfiguration={
        "awsvpcConfiguration": {"subnets": ["subnet-local-1b"], "securityGroups": ["sg-default"]}})
    assert task["failures"] == [] and task["tasks"][0]["lastStatus"] == "PROVISIONING"
    arn = task["tasks"][0]["taskArn"]
    t = wait_for("the task running on a launched pool host", lambda: (lambda t: t if t["lastStatus"] == "RUNNING"
                 else None)(ecs.describe_tasks(cluster=name, tasks=[arn])["tasks"][0]), timeout=90)
    assert t["availabilityZone"] == "local-1b" and "containerInstanceArn" not in t
    assert len(pool_hosts()) == before + 1
    # Users see no group and no host of the pool.
    assert all(g["AutoScalingGroupName"] != "berth:fargate-pool"
               for g in asg.describe_auto_scaling_groups()["AutoScalingGroups"])
    assert ecs.list_container_instances(cluster=name)["containerInstanceArns"] == []
    _, code, _ = error_of(asg.create_auto_scaling_group, AutoScalingGroupName="berth:fargate-pool", MinSize=0,
                          MaxSize=1, LaunchTemplate={"LaunchTemplateName": name})
    assert code == "ValidationError"
    # Idle, the launched host is retired.
    ecs.stop_task(cluster=name, task=arn)
    wait_for("the idle pool host retired", lambda: len(pool_hosts()) == before, timeout=60)

"""Application Auto Scaling moving real services: boto3 and the aws CLI
against a server whose agent samples real containers. Target tracking on
CPU scales a service out while its tasks burn CPU and back in once they
stop; step scaling follows an alarm on a custom metric; targets,
policies, activities and their errors."""

import datetime
import json
import subprocess
import time

import pytest

from conftest import BERTH, IMAGE, Cluster, aws_cli, wait_for
from test_iam import client, error_of

SERVICE_NS = "ecs"
DIM = "ecs:service:DesiredCount"


@pytest.fixture(scope="module")
def scl(tmp_path_factory):
    # No warm awsvpc addresses: this module runs beside the others in CI
    # (scripts/test.sh), and two servers would claim the same subnet
    # addresses on this machine's one engine.
    c = Cluster(str(tmp_path_factory.mktemp("scaling")), "scaling", [[]],
                agent_extra=["--stats-interval", "2"], extra_env={"BERTH_WARM_ADDRESSES": "0"}).start()
    yield c
    c.stop()


def service(cl, name, command, desired=1):
    cl.ecs.register_task_definition(family=name, cpu="256", memory="64", containerDefinitions=[
        {"name": "app", "image": IMAGE, "essential": True, "stopTimeout": 1, "command": ["sh", "-c", command]}])
    cl.ecs.create_service(cluster=cl.name, serviceName=name, taskDefinition=name, desiredCount=desired)
    return f"service/{cl.name}/{name}"


def desired(cl, name):
    return cl.ecs.describe_services(cluster=cl.name, services=[name])["services"][0]["desiredCount"]


def test_target_tracking_on_cpu_scales_out_under_load_and_back_in(scl, name):
    """Tasks burn all their 256 CPU units until 45 s from now (the ones
    scaling adds too), then idle. With a 50% target, three 10-second
    periods above it add tasks; fifteen below 45% (150 s) take them away
    again."""
    aas = client(scl.server, "application-autoscaling")
    until = int(time.time()) + 45
    burn = f"while [ $(date +%s) -lt {until} ]; do :; done; exec sleep 3600"
    resource = service(scl, name, burn)
    aas.register_scalable_target(ServiceNamespace=SERVICE_NS, ResourceId=resource, ScalableDimension=DIM,
                                 MinCapacity=1, MaxCapacity=3)
    r = aas.put_scaling_policy(
        PolicyName="cpu50", ServiceNamespace=SERVICE_NS, ResourceId=resource, ScalableDimension=DIM,
        PolicyType="TargetTrackingScaling",
        TargetTrackingScalingPolicyConfiguration={
            "TargetValue": 50.0, "ScaleOutCooldown": 0, "ScaleInCooldown": 0,
            "PredefinedMetricSpecification": {"PredefinedMetricType": "ECSServiceAverageCPUUtilization"}})
    assert r["PolicyARN"].startswith("arn:aws:autoscaling:us-east-1:000000000000:scalingPolicy:")
    assert r["PolicyARN"].endswith(f":resource/ecs/{resource}:policyName/cpu50")
    names = sorted(a["AlarmName"] for a in r["Alarms"])
    assert names[0].startswith(f"TargetTracking-{resource}-AlarmHigh-") and "-AlarmLow-" in names[1], names
    cw = client(scl.server, "cloudwatch")
    high, low = cw.describe_alarms(AlarmNames=names)["MetricAlarms"]
    assert (high["Threshold"], high["EvaluationPeriods"], high["ComparisonOperator"]) == \
        (50.0, 3, "GreaterThanThreshold")
    assert (low["Threshold"], low["EvaluationPeriods"], low["ComparisonOperator"]) == (45.0, 15, "LessThanThreshold")
    assert high["AlarmDescription"] == f"DO NOT EDIT OR DELETE. For TargetTrackingScaling policy {r['PolicyARN']}."
    assert high["AlarmActions"][0].startswith(r["PolicyARN"] + ":createdBy/")

    wait_for("a scale-out", lambda: desired(scl, name) >= 2, timeout=120)
    acts = aas.describe_scaling_activities(ServiceNamespace=SERVICE_NS, ResourceId=resource)["ScalingActivities"]
    out = acts[-1]
    assert out["StatusCode"] == "Successful" and out["Description"].startswith("Setting desired count to ")
    assert "-AlarmHigh-" in out["Cause"] and out["Cause"].endswith("in state ALARM triggered policy cpu50"), out
    assert out["StatusMessage"].endswith("Change successfully fulfilled by ecs.")
    events = scl.ecs.describe_services(cluster=scl.name, services=[name])["services"][0]["events"]
    assert any("by Application Auto Scaling" in e["message"] for e in events), events[:3]
    wait_for("the new tasks running", lambda: len(scl.ecs.list_tasks(
        cluster=scl.name, serviceName=name, desiredStatus="RUNNING")["taskArns"]) >= 2, timeout=60)
    # The burn ends; fifteen quiet periods later the service shrinks.
    wait_for("a scale-in", lambda: desired(scl, name) == 1, timeout=300)
    acts = aas.describe_scaling_activities(ServiceNamespace=SERVICE_NS, ResourceId=resource)["ScalingActivities"]
    assert "-AlarmLow-" in acts[0]["Cause"] and acts[0]["Description"] == "Setting desired count to 1.", acts[0]
    scl.ecs.update_service(cluster=scl.name, service=name, desiredCount=0)
    aas.deregister_scalable_target(ServiceNamespace=SERVICE_NS, ResourceId=resource, ScalableDimension=DIM)
    # Its policy and the policy's alarms went with it.
    assert cw.describe_alarms(AlarmNames=names)["MetricAlarms"] == []
    assert aas.describe_scaling_policies(ServiceNamespace=SERVICE_NS, ResourceId=resource)["ScalingPolicies"] == []


def test_step_scaling_follows_an_alarm_on_a_custom_metric(scl, name):
    """A queue-depth style alarm the user makes (2 of 2 ten-second periods
    of a custom metric above 100) runs a step policy: +1 task between 100
    and 200 over the threshold... here the depth is 350, so +3, capped at
    the maximum; at the maximum, activities say why nothing changed."""
    aas = client(scl.server, "application-autoscaling")
    cw = client(scl.server, "cloudwatch")
    resource = service(scl, name, "exec sleep 3600")
    aas.register_scalable_target(ServiceNamespace=SERVICE_NS, ResourceId=resource, ScalableDimension=DIM,
                                 MinCapacity=1, MaxCapacity=3)
    policy = aas.put_scaling_policy(
        PolicyName="depth", ServiceNamespace=SERVICE_NS, ResourceId=resource, ScalableDimension=DIM,
        PolicyType="StepScaling", StepScalingPolicyConfiguration={
            "AdjustmentType": "ChangeInCapacity", "Cooldown": 0, "MetricAggregationType": "Maximum",
            "StepAdjustments": [
                {"MetricIntervalLowerBound": 0, "MetricIntervalUpperBound": 100, "ScalingAdjustment": 1},
                {"MetricIntervalLowerBound": 100, "ScalingAdjustment": 3}]})["PolicyARN"]
    assert aas.describe_scaling_policies(ServiceNamespace=SERVICE_NS, PolicyNames=["depth"],
                                         ResourceId=resource)["ScalingPolicies"][0]["Alarms"] == []
    ns = f"Queue/{name}"
    cw.put_metric_alarm(AlarmName=f"{name}-depth", Namespace=ns, MetricName="Depth", Statistic="Maximum",
                        Period=10, EvaluationPeriods=2, Threshold=100.0,
                        ComparisonOperator="GreaterThanThreshold", AlarmActions=[policy])
    now = int(time.time())
    cw.put_metric_data(Namespace=ns, MetricData=[
        {"MetricName": "Depth", "Value": 350.0, "StorageResolution": 1,
         "Timestamp": datetime.datetime.fromtimestamp(t, tz=datetime.timezone.utc)}
        for t in range(now - 30, now + 120)])
    wait_for("the step's capacity", lambda: desired(scl, name) == 3, timeout=60)
    # The alarm stays in ALARM and runs the policy again each minute: at the
    # maximum, that is a not-scaled activity.
    wait_for("a not-scaled activity", lambda: [
        a for a in aas.describe_scaling_activities(ServiceNamespace=SERVICE_NS, ResourceId=resource,
                                                   IncludeNotScaledActivities=True)["ScalingActivities"]
        if a.get("NotScaledReasons", [{}])[0].get("Code") == "AlreadyAtMaxCapacity"], timeout=90)
    plain = aas.describe_scaling_activities(ServiceNamespace=SERVICE_NS, ResourceId=resource)["ScalingActivities"]
    assert all("NotScaledReasons" not in a for a in plain)
    scl.ecs.update_service(cluster=scl.name, service=name, desiredCount=0)
    aas.deregister_scalable_target(ServiceNamespace=SERVICE_NS, ResourceId=resource, ScalableDimension=DIM)


def test_targets_policies_and_their_errors(scl, name):
    aas = client(scl.server, "application-autoscaling")
    resource = service(scl, name, "exec sleep 3600", desired=5)
    key = dict(ServiceNamespace=SERVICE_NS, ResourceId=resource, ScalableDimension=DIM)
    # Registering clamps the desired count into [min, max] at once.
    arn = aas.register_scalable_target(**key, MinCapacity=0, MaxCapacity=2,
                                       Tags={"team": "a"})["ScalableTargetARN"]
    assert arn.startswith("arn:aws:application-autoscaling:us-east-1:000000000000:scalable-target/")
    assert desired(scl, name) == 2
    t = aas.describe_scalable_targets(ServiceNamespace=SERVICE_NS, ResourceIds=[resource])["ScalableTargets"][0]
    assert (t["MinCapacity"], t["MaxCapacity"]) == (0, 2)
    assert t["RoleARN"].endswith("/AWSServiceRoleForApplicationAutoScaling_ECSService")
    # An update changes only what it names.
    aas.register_scalable_target(**key, MaxCapacity=4, SuspendedState={"DynamicScalingInSuspended": True})
    t = aas.describe_scalable_targets(ServiceNamespace=SERVICE_NS, ResourceIds=[resource])["ScalableTargets"][0]
    assert (t["MinCapacity"], t["MaxCapacity"], t["SuspendedState"]["DynamicScalingInSuspended"]) == (0, 4, True)
    assert aas.list_tags_for_resource(ResourceARN=arn)["Tags"] == {"team": "a"}
    aas.tag_resource(ResourceARN=arn, Tags={"env": "prod"})
    aas.untag_resource(ResourceARN=arn, TagKeys=["team"])
    assert aas.list_tags_for_resource(ResourceARN=arn)["Tags"] == {"env": "prod"}

    cases = [
        (aas.register_scalable_target, dict(ServiceNamespace=SERVICE_NS, ResourceId=f"service/{scl.name}/nope",
                                            ScalableDimension=DIM, MinCapacity=1, MaxCapacity=2),
         "ValidationException", f"ECS service doesn't exist: service/{scl.name}/nope"),
        (aas.register_scalable_target, dict(**key, MinCapacity=3, MaxCapacity=1), "ValidationException",
         "Minimum capacity cannot be greater than maximum capacity"),
        (aas.register_scalable_target, dict(ServiceNamespace="dynamodb", ResourceId="table/t",
                                            ScalableDimension="dynamodb:table:ReadCapacityUnits",
                                            MinCapacity=1, MaxCapacity=2), "ValidationException", "ECS services only"),
        (aas.put_scaling_policy, dict(**key, PolicyName="p", PolicyType="Bogus"), "ValidationException",
         "Member must satisfy enum value set: [PredictiveScaling, StepScaling, TargetTrackingScaling]"),
        (aas.put_scaling_policy, dict(**key, PolicyName="p", PolicyType="StepScaling",
                                      StepScalingPolicyConfiguration={
                                          "AdjustmentType": "ChangeInCapacity", "StepAdjustments": [
                                              {"MetricIntervalLowerBound": 0, "MetricIntervalUpperBound": 10,
                                               "ScalingAdjustment": 1},
                                              {"MetricIntervalLowerBound": 20, "ScalingAdjustment": 2}]}),
         "ValidationException", "gaps"),
        (aas.put_scaling_policy, dict(ServiceNamespace=SERVICE_NS, ResourceId=f"service/{scl.name}/other",
                                      ScalableDimension=DIM, PolicyName="p", PolicyType="TargetTrackingScaling",
                                      TargetTrackingScalingPolicyConfiguration={
                                          "TargetValue": 50.0, "PredefinedMetricSpecification": {
                                              "PredefinedMetricType": "ECSServiceAverageCPUUtilization"}}),
         "ObjectNotFoundException", "No scalable target registered"),
        (aas.delete_scaling_policy, dict(**key, PolicyName="none"), "ObjectNotFoundException",
         "No scaling policy found"),
    ]
    high = dict(**key, PolicyName="hi", PolicyType="TargetTrackingScaling",
                TargetTrackingScalingPolicyConfiguration={"TargetValue": 50.0, "PredefinedMetricSpecification": {
                    "PredefinedMetricType": "ECSServiceAverageCPUUtilizationHighResolution"}})
    cases.append((aas.put_scaling_policy, high, "ValidationException", "20-second resolution"))
    for call, kw, code, words in cases:
        got = error_of(call, **kw)
        assert got[1] == code and words in got[2], (kw, got)
    assert aas.describe_scaling_policies(ServiceNamespace=SERVICE_NS, ResourceId=resource)["ScalingPolicies"] == []
    # The service's monitoring configuration: checked, then the
    # high-resolution metric can be tracked.
    for bad, words in (([{"metricNames": ["DiskUtilization"], "resolutionSeconds": 20}], "DiskUtilization"),
                       ([{"metricNames": ["CPUUtilization"], "resolutionSeconds": 30}], "20 or 60"),
                       ([{"metricNames": ["CPUUtilization"], "resolutionSeconds": 20},
                         {"metricNames": ["CPUUtilization"], "resolutionSeconds": 60}], "more than once")):
        got = error_of(scl.ecs.update_service, cluster=scl.name, service=name,
                       monitoring={"metricConfigurations": bad})
        assert got[1] == "InvalidParameterException" and words in got[2], got
    monitoring = {"metricConfigurations": [{"metricNames": ["CPUUtilization"], "resolutionSeconds": 20}]}
    scl.ecs.update_service(cluster=scl.name, service=name, monitoring=monitoring)
    aas.put_scaling_policy(**high)
    listed = scl.ecs.list_service_deployments(cluster=scl.name, service=name)["serviceDeployments"]
    rev = scl.ecs.describe_service_revisions(serviceRevisionArns=[listed[0]["targetServiceRevisionArn"]])
    assert rev["serviceRevisions"][0]["monitoring"] == monitoring
    aas.delete_scaling_policy(**key, PolicyName="hi")
    # The aws CLI reads the same.
    out = aws_cli(scl.server, "application-autoscaling", "describe-scalable-targets",
                  "--service-namespace", "ecs", "--resource-ids", resource)
    assert out["ScalableTargets"][0]["MaxCapacity"] == 4
    aas.deregister_scalable_target(**key)
    assert error_of(aas.deregister_scalable_target, **key)[1] == "ObjectNotFoundException"
    scl.ecs.update_service(cluster=scl.name, service=name, desiredCount=0)


def test_protected_tasks_survive_scale_in(scl, name):
    """Each task protects itself from inside, through $ECS_AGENT_URI with
    its role; scaling the service in then stops nothing until a task's
    protection is lifted, and that task is the one that goes."""
    iam = client(scl.server, "iam")
    trust = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole",
                                                     "Principal": {"Service": "ecs-tasks.amazonaws.com"}}]}
    role = iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"]
    iam.put_role_policy(RoleName=name, PolicyName="protect", PolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Resource": "*",
                                                "Action": ["ecs:UpdateTaskProtection", "ecs:GetTaskProtection"]}]}))
    # busybox's nc: stdin stays open a moment so the answer is read.
    protect = ('sleep 1; body=\'{"ProtectionEnabled":true,"ExpiresInMinutes":60}\'; '
               'p=${ECS_AGENT_URI#http://169.254.170.2}; '
               '{ printf "PUT $p/task-protection/v1/state HTTP/1.0\\r\\nHost: 169.254.170.2\\r\\n'
               'Content-Length: ${#body}\\r\\n\\r\\n$body"; sleep 2; } | nc 169.254.170.2 80; echo; '
               'exec sleep 3600')
    scl.ecs.register_task_definition(family=name, taskRoleArn=role, containerDefinitions=[
        {"name": "worker", "image": IMAGE, "memory": 32, "stopTimeout": 1, "command": ["sh", "-c", protect]}])
    scl.ecs.create_service(cluster=scl.name, serviceName=name, taskDefinition=name, desiredCount=2)

    def tasks():
        return scl.ecs.list_tasks(cluster=scl.name, serviceName=name, desiredStatus="RUNNING")["taskArns"]

    arns = wait_for("two tasks", lambda: len(tasks()) == 2 and tasks(), timeout=60)

    def protected():
        r = scl.ecs.get_task_protection(cluster=scl.name, tasks=arns)["protectedTasks"]
        return [t for t in r if t["protectionEnabled"]]

    got = wait_for("both tasks protected from inside", lambda: len(protected()) == 2 and protected(), timeout=30)
    assert all(t["expirationDate"] > datetime.datetime.now(tz=datetime.timezone.utc) for t in got)

    def answer():
        out = subprocess.run([BERTH, "logs", arns[0], "--cluster", scl.name, "--server", scl.server.url],
                             capture_output=True, text=True, timeout=30).stdout
        return '"ProtectionEnabled":true' in out and out

    assert '"TaskArn":"' + arns[0] in wait_for("the endpoint's answer in the task's output", answer, timeout=20)
    scl.ecs.update_service(cluster=scl.name, service=name, desiredCount=1)
    time.sleep(3)
    assert len(tasks()) == 2, "protected tasks are not stopped by scale-in"
    events = scl.ecs.describe_services(cluster=scl.name, services=[name])["services"][0]
    assert events["desiredCount"] == 1 and events["runningCount"] == 2
    r = scl.ecs.update_task_protection(cluster=scl.name, tasks=[arns[1]], protectionEnabled=False)
    assert r["protectedTasks"][0]["protectionEnabled"] is False and "expirationDate" not in r["protectedTasks"][0]
    wait_for("the unprotected task stopped", lambda: tasks() == [arns[0]], timeout=30)
    # Standalone tasks cannot be protected; unknown ones are missing.
    r = scl.ecs.update_task_protection(cluster=scl.name, tasks=["0" * 32], protectionEnabled=True)
    assert r["failures"][0]["reason"] == "MISSING"
    assert error_of(scl.ecs.update_task_protection, cluster=scl.name, tasks=arns,
                    protectionEnabled=True, expiresInMinutes=3000)[1] == "InvalidParameterException"
    scl.ecs.update_task_protection(cluster=scl.name, tasks=[arns[0]], protectionEnabled=False)
    scl.ecs.update_service(cluster=scl.name, service=name, desiredCount=0)


def test_scheduled_actions_change_the_bounds_in_their_time_zone(scl, name):
    """A scheduled action at a New York wall-clock time a few seconds away
    raises the target's minimum, and the service's desired count follows;
    schedules and zones that do not parse are refused."""
    from zoneinfo import ZoneInfo
    aas = client(scl.server, "application-autoscaling")
    resource = service(scl, name, "exec sleep 3600")
    key = dict(ServiceNamespace=SERVICE_NS, ResourceId=resource, ScalableDimension=DIM)
    aas.register_scalable_target(**key, MinCapacity=1, MaxCapacity=4)
    when = datetime.datetime.now(tz=ZoneInfo("America/New_York")) + datetime.timedelta(seconds=6)
    at = f"at({when.strftime('%Y-%m-%dT%H:%M:%S')})"
    aas.put_scheduled_action(**key, ScheduledActionName="morning", Schedule=at, Timezone="America/New_York",
                             ScalableTargetAction={"MinCapacity": 2, "MaxCapacity": 3})
    got = aas.describe_scheduled_actions(ServiceNamespace=SERVICE_NS, ResourceId=resource)["ScheduledActions"][0]
    assert (got["Schedule"], got["Timezone"], got["ScalableTargetAction"]) == \
        (at, "America/New_York", {"MinCapacity": 2, "MaxCapacity": 3})
    assert got["ScheduledActionARN"].endswith(f":resource/ecs/{resource}:scheduledActionName/morning")
    wait_for("the scheduled minimum", lambda: desired(scl, name) == 2, timeout=40)
    t = aas.describe_scalable_targets(ServiceNamespace=SERVICE_NS, ResourceIds=[resource])["ScalableTargets"][0]
    assert (t["MinCapacity"], t["MaxCapacity"]) == (2, 3)
    causes = [a["Cause"] for a in aas.describe_scaling_activities(
        ServiceNamespace=SERVICE_NS, ResourceId=resource)["ScalingActivities"]]
    assert "scheduled action name morning was triggered" in causes, causes
    for schedule, zone, words in [("cron(0 9 * * * *)", None, "?"), ("every morning", None, "schedule"),
                                  ("rate(5 minutes)", "Mars/Olympus_Mons", "Timezone"),
                                  ("cron(0 9 L * ? *)", None, "not supported")]:
        kw = dict(Timezone=zone) if zone else {}
        got = error_of(aas.put_scheduled_action, **key, ScheduledActionName="bad", Schedule=schedule,
                       ScalableTargetAction={"MinCapacity": 1}, **kw)
        assert got[1] == "ValidationException" and words in got[2], (schedule, got)
    assert [a["ScheduledActionName"] for a in aas.describe_scheduled_actions(
        ServiceNamespace=SERVICE_NS, ResourceId=resource)["ScheduledActions"]] == ["morning"]
    aas.delete_scheduled_action(**key, ScheduledActionName="morning")
    assert error_of(aas.delete_scheduled_action, **key, ScheduledActionName="morning")[1] == "ObjectNotFoundException"
    aas.deregister_scalable_target(**key)
    scl.ecs.update_service(cluster=scl.name, service=name, desiredCount=0)


# A queue worker in busybox sh: it talks to SQS through the task endpoint,
# which signs its unsigned requests with the task's role, and protects
# itself through $ECS_AGENT_URI while it works on a message. A message
# `holdN` takes N seconds, the others two.
WORKER = r'''
call() { wget -q -O- --header "Content-Type: application/x-amz-json-1.0" --header "X-Amz-Target: AmazonSQS.$1" --post-data "$2" http://169.254.170.2/; }
protect() {
  body="{\"ProtectionEnabled\":$1,\"ExpiresInMinutes\":10}"; p=${ECS_AGENT_URI#http://169.254.170.2}
  { printf "PUT $p/task-protection/v1/state HTTP/1.0\r\nHost: 169.254.170.2\r\nContent-Length: ${#body}\r\n\r\n$body"; sleep 1; } | nc 169.254.170.2 80 >/dev/null
}
while true; do
  r=$(call ReceiveMessage "{\"QueueUrl\":\"$QUEUE_URL\",\"WaitTimeSeconds\":2,\"VisibilityTimeout\":120}") || { sleep 1; continue; }
  h=$(echo "$r" | sed -n 's/.*"ReceiptHandle":"\([^"]*\)".*/\1/p')
  [ -z "$h" ] && continue
  b=$(echo "$r" | sed -n 's/.*"Body":"\([^"]*\)".*/\1/p')
  protect true
  echo "working on $b"
  case "$b" in hold*) sleep ${b#hold};; *) sleep 2;; esac
  call DeleteMessage "{\"QueueUrl\":\"$QUEUE_URL\",\"ReceiptHandle\":\"$h\"}" >/dev/null && echo "done $b"
  protect false
done
'''


def test_queue_workers_scale_from_zero_drain_and_scale_in_around_a_protected_task(scl, name):
    """The seeds' queue scenario on real containers: a worker service at
    zero tasks; a step policy on ApproximateNumberOfMessagesVisible starts
    one worker, target tracking on the backlog per task (metric math over
    the queue's depth and the running task count) adds more, the workers
    drain the queue, and a scale-in to zero stops the idle workers while
    the one working on a long message, protected, finishes it first."""
    iam, sqs = client(scl.server, "iam"), client(scl.server, "sqs")
    aas, cw = client(scl.server, "application-autoscaling"), client(scl.server, "cloudwatch")
    queue = sqs.create_queue(QueueName=name)["QueueUrl"]
    trust = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole",
                                                     "Principal": {"Service": "ecs-tasks.amazonaws.com"}}]}
    role = iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"]
    iam.put_role_policy(RoleName=name, PolicyName="work", PolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": ["sqs:ReceiveMessage", "sqs:DeleteMessage"],
             "Resource": f"arn:aws:sqs:us-east-1:000000000000:{name}"},
            {"Effect": "Allow", "Action": "ecs:UpdateTaskProtection", "Resource": "*"}]}))
    scl.ecs.register_task_definition(family=name, taskRoleArn=role, cpu="128", memory="32", containerDefinitions=[
        {"name": "worker", "image": IMAGE, "stopTimeout": 1, "command": ["sh", "-c", WORKER],
         "environment": [{"name": "QUEUE_URL", "value": queue}]}])
    scl.ecs.create_service(cluster=scl.name, serviceName=name, taskDefinition=name, desiredCount=0)
    resource = f"service/{scl.name}/{name}"
    key = dict(ServiceNamespace=SERVICE_NS, ResourceId=resource, ScalableDimension=DIM)
    aas.register_scalable_target(**key, MinCapacity=0, MaxCapacity=3)

    def step(policy, capacity):
        return aas.put_scaling_policy(**key, PolicyName=policy, PolicyType="StepScaling",
                                      StepScalingPolicyConfiguration={
                                          "AdjustmentType": "ExactCapacity", "Cooldown": 0,
                                          "StepAdjustments": [{"MetricIntervalLowerBound": 0,
                                                               "ScalingAdjustment": capacity}]})["PolicyARN"]

    depth = dict(Namespace="AWS/SQS", MetricName="ApproximateNumberOfMessagesVisible",
                 Dimensions=[{"Name": "QueueName", "Value": name}], Statistic="Maximum", Period=10)
    cw.put_metric_alarm(AlarmName=f"{name}-out", **depth, EvaluationPeriods=1, Threshold=0.0,
                        ComparisonOperator="GreaterThanThreshold", AlarmActions=[step("from-zero", 1)])
    aas.put_scaling_policy(**key, PolicyName="backlog", PolicyType="TargetTrackingScaling",
                           TargetTrackingScalingPolicyConfiguration={
                               "TargetValue": 3.0, "ScaleOutCooldown": 0, "DisableScaleIn": True,
                               "CustomizedMetricSpecification": {"Metrics": [
                                   {"Id": "visible", "ReturnData": False, "MetricStat": {"Stat": "Maximum", "Metric": {
                                       "Namespace": "AWS/SQS", "MetricName": "ApproximateNumberOfMessagesVisible",
                                       "Dimensions": [{"Name": "QueueName", "Value": name}]}}},
                                   {"Id": "tasks", "ReturnData": False, "MetricStat": {"Stat": "Average", "Metric": {
                                       "Namespace": "ECS/ContainerInsights", "MetricName": "RunningTaskCount",
                                       "Dimensions": [{"Name": "ClusterName", "Value": scl.name},
                                                      {"Name": "ServiceName", "Value": name}]}}},
                                   {"Id": "backlog", "Expression": "visible / tasks", "ReturnData": True,
                                    "Label": "Backlog per task"}]}})
    sqs.send_message_batch(QueueUrl=queue, Entries=[{"Id": f"m{i}", "MessageBody": f"m{i}"} for i in range(10)])
    sqs.send_message_batch(QueueUrl=queue, Entries=[{"Id": f"n{i}", "MessageBody": f"n{i}"} for i in range(10)])
    sqs.send_message(QueueUrl=queue, MessageBody="hold40")

    wait_for("one worker from zero", lambda: desired(scl, name) >= 1, timeout=60)
    wait_for("more workers for the backlog", lambda: desired(scl, name) == 3, timeout=90)
    causes = [a["Cause"] for a in aas.describe_scaling_activities(**{
        k: key[k] for k in ("ServiceNamespace", "ResourceId")})["ScalingActivities"]]
    assert any("triggered policy from-zero" in c for c in causes) and any("triggered policy backlog" in c
                                                                          for c in causes), causes

    def held():
        tasks = scl.ecs.list_tasks(cluster=scl.name, serviceName=name, desiredStatus="RUNNING")["taskArns"]
        prot = scl.ecs.get_task_protection(cluster=scl.name, tasks=tasks)["protectedTasks"] if tasks else []
        return [t["taskArn"] for t in prot if t["protectionEnabled"]]

    def depth_now():
        a = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["All"])["Attributes"]
        return int(a["ApproximateNumberOfMessages"]), int(a["ApproximateNumberOfMessagesNotVisible"])

    # Drained but for the long message, which one protected worker holds.
    wait_for("the queue drained", lambda: depth_now() == (0, 1), timeout=120)
    holder = wait_for("the worker on the long message protected", lambda: len(held()) == 1 and held()[0], timeout=30)
    cw.put_metric_alarm(AlarmName=f"{name}-in", **depth, EvaluationPeriods=2, Threshold=0.0,
                        ComparisonOperator="LessThanOrEqualToThreshold", AlarmActions=[step("to-zero", 0)])
    wait_for("scale-in to zero", lambda: desired(scl, name) == 0, timeout=60)

    def running():
        return scl.ecs.list_tasks(cluster=scl.name, serviceName=name, desiredStatus="RUNNING")["taskArns"]

    wait_for("the idle workers stopped", lambda: running() == [holder], timeout=60)
    assert depth_now() == (0, 1), "the long message is still being worked on"
    # It finishes, deletes its message, drops its protection, and goes.
    wait_for("the protected worker done and stopped", lambda: running() == [], timeout=90)
    assert depth_now() == (0, 0)
    deleted = cw.get_metric_statistics(Namespace="AWS/SQS", MetricName="NumberOfMessagesDeleted",
                                    Dimensions=[{"Name": "QueueName", "Value": name}],
                                    StartTime=datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(hours=1),
                                    EndTime=datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(minutes=5),
                                    Period=7200, Statistics=["Sum"])["Datapoints"]
    # (Periods align on the epoch: the test may span two.)
    assert sum(d["Sum"] for d in deleted) == 21.0
    aas.deregister_scalable_target(**key)

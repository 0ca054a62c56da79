"""Issue 19 benchmark 11: how fast a service's task count follows its load,
end to end on real containers, with Berth's defaults and with AWS's
documented timing side by side in the same run.

(a) a CPU load step: a service of one task under target tracking at 50%
    CPU; at t0 its task starts burning all its CPU; measured until a new
    task is RUNNING. Berth's defaults: agents sample every 10 s, target
    tracking watches 10-second periods (AlarmHigh: 3 of 3). AWS's timing:
    `--target-tracking-period 60` (1-minute periods, 3 of 3), as ECS's
    CPUUtilization is published each minute.
(b) a queue of 1,000 messages at zero tasks: a worker service at zero
    with a step policy on an alarm on ApproximateNumberOfMessagesVisible
    (1 of 1 period above 0); at t0 the messages are sent; measured until
    the first message is deleted by a worker. Berth: a 10-second alarm
    period; AWS's timing: 60 s (SQS's metrics are per minute).

(c) hosts following tasks: ten tasks of a capacity provider with managed
    scaling at zero hosts (netns launcher); at t0 RunTask; measured until
    all ten are RUNNING on the launched host. The peer is the same work
    by hand on the same server: SetDesiredCapacity 1, wait for the
    instance InService, then RunTask, until all ten are RUNNING.

Each side is its own `berth server` and `berth agent` on this machine's
engine, started fresh. Prints markdown tables with ratios; raw numbers go
to bench/results/scaling-*.jsonl.
"""

import base64
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid

import boto3
import botocore.config

BERTH = os.environ.get("BERTH_BIN", "target/release/berth")
IMAGE = "berth-test/busybox:latest"
RUNS = int(os.environ.get("RUNS", "1"))
KEY, SECRET = "AKIABERTHBENCHROOT01", "berthBenchRootSecretKey000000000000000000"
ENV = dict(os.environ, BERTH_ROOT_ACCESS_KEY_ID=KEY, BERTH_ROOT_SECRET_ACCESS_KEY=SECRET,
           AWS_ACCESS_KEY_ID=KEY, AWS_SECRET_ACCESS_KEY=SECRET, AWS_DEFAULT_REGION="us-east-1")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Side:
    """A server and one agent, fresh, with `server_args`."""

    def __init__(self, label, server_args):
        self.label = label
        self.dir = tempfile.mkdtemp(prefix=f"berth-bench-{label}-")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        log = open(os.path.join(self.dir, "server.log"), "ab")
        self.server = subprocess.Popen(
            [BERTH, "server", "--listen", f"127.0.0.1:{self.port}", "--data-dir", os.path.join(self.dir, "s"),
             "--log", "warn", "--lb", "false", *server_args], stdout=subprocess.DEVNULL, stderr=log, env=ENV)
        for _ in range(300):
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        cfg = botocore.config.Config(retries={"max_attempts": 3})
        mk = lambda svc: boto3.client(svc, endpoint_url=self.url, region_name="us-east-1",
                                      aws_access_key_id=KEY, aws_secret_access_key=SECRET, config=cfg)
        self.client = mk
        self.ecs, self.aas, self.cw, self.sqs, self.iam = (mk(s) for s in (
            "ecs", "application-autoscaling", "cloudwatch", "sqs", "iam"))
        self.cluster = "bench"
        self.ecs.create_cluster(clusterName=self.cluster)
        token = subprocess.run([BERTH, "token", "create", "--cluster", self.cluster, "--server", self.url],
                               capture_output=True, text=True, env=ENV, check=True).stdout.strip()
        self.agent = subprocess.Popen(
            [BERTH, "agent", "--server", self.url, "--cluster", self.cluster, "--data-dir",
             os.path.join(self.dir, "a"), "--instance-id", "i-" + uuid.uuid4().hex[:17], "--token", token,
             "--endpoint-port", "0", "--log", "warn"],
            stdout=subprocess.DEVNULL, stderr=open(os.path.join(self.dir, "agent.log"), "ab"), env=ENV)
        wait(lambda: self.ecs.list_container_instances(cluster=self.cluster)["containerInstanceArns"], 30)

    def running(self, service):
        return self.ecs.list_tasks(cluster=self.cluster, serviceName=service, desiredStatus="RUNNING")["taskArns"]

    def stop(self):
        for svc in self.ecs.list_services(cluster=self.cluster)["serviceArns"]:
            self.ecs.delete_service(cluster=self.cluster, service=svc, force=True)
        time.sleep(2)
        for p in (self.agent, self.server):
            p.terminate()
            p.wait(timeout=20)
        subprocess.run(f"docker ps -aq --filter label=com.amazonaws.ecs.cluster={self.cluster} | xargs -r docker rm -f",
                       shell=True, capture_output=True)


def wait(check, timeout, interval=0.05):
    deadline = time.time() + timeout
    while time.time() < deadline:
        got = check()
        if got:
            return got
        time.sleep(interval)
    raise RuntimeError("timed out")


def cpu_step(side):
    """(a): seconds from the load step to a second task RUNNING."""
    load = os.path.join(side.dir, "load")
    os.makedirs(load)
    name = "cpu" + uuid.uuid4().hex[:6]
    burn = "while [ ! -e /load/go ]; do sleep 0.2; done; while :; do :; done"
    side.ecs.register_task_definition(
        family=name, cpu="256", memory="64",
        volumes=[{"name": "load", "host": {"sourcePath": load}}],
        containerDefinitions=[{"name": "app", "image": IMAGE, "essential": True, "stopTimeout": 1,
                               "mountPoints": [{"sourceVolume": "load", "containerPath": "/load"}],
                               "command": ["sh", "-c", burn]}])
    side.ecs.create_service(cluster=side.cluster, serviceName=name, taskDefinition=name, desiredCount=1)
    resource = f"service/{side.cluster}/{name}"
    key = dict(ServiceNamespace="ecs", ResourceId=resource, ScalableDimension="ecs:service:DesiredCount")
    side.aas.register_scalable_target(**key, MinCapacity=1, MaxCapacity=3)
    side.aas.put_scaling_policy(**key, PolicyName="cpu50", PolicyType="TargetTrackingScaling",
                                TargetTrackingScalingPolicyConfiguration={
                                    "TargetValue": 50.0, "ScaleOutCooldown": 0, "DisableScaleIn": True,
                                    "PredefinedMetricSpecification": {
                                        "PredefinedMetricType": "ECSServiceAverageCPUUtilization"}})
    wait(lambda: len(side.running(name)) == 1, 60)
    # Quiet first, so that the alarm starts from OK with data.
    time.sleep(15)
    t0 = time.time()
    open(os.path.join(load, "go"), "w").close()
    wait(lambda: len(side.running(name)) >= 2, 900, interval=0.2)
    took = time.time() - t0
    side.aas.deregister_scalable_target(**key)
    side.ecs.update_service(cluster=side.cluster, service=name, desiredCount=0)
    return took


WORKER = r'''
call() { wget -q -O- --header "Content-Type: application/x-amz-json-1.0" --header "X-Amz-Target: AmazonSQS.$1" --post-data "$2" http://169.254.170.2/; }
while true; do
  r=$(call ReceiveMessage "{\"QueueUrl\":\"$QUEUE_URL\",\"WaitTimeSeconds\":5,\"MaxNumberOfMessages\":10}") || { sleep 1; continue; }
  for h in $(echo "$r" | grep -o '"ReceiptHandle":"[^"]*"' | cut -d'"' -f4); do
    call DeleteMessage "{\"QueueUrl\":\"$QUEUE_URL\",\"ReceiptHandle\":\"$h\"}" >/dev/null
  done
done
'''


def queue_from_zero(side, period):
    """(b): seconds from 1,000 messages sent at zero tasks to the first
    one deleted by a worker."""
    name = "q" + uuid.uuid4().hex[:6]
    url = side.sqs.create_queue(QueueName=name)["QueueUrl"]
    trust = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole",
                                                     "Principal": {"Service": "ecs-tasks.amazonaws.com"}}]}
    role = side.iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"]
    side.iam.put_role_policy(RoleName=name, PolicyName="work", PolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Resource": "*",
                                                "Action": ["sqs:ReceiveMessage", "sqs:DeleteMessage"]}]}))
    side.ecs.register_task_definition(family=name, taskRoleArn=role, cpu="128", memory="32", containerDefinitions=[
        {"name": "worker", "image": IMAGE, "stopTimeout": 1, "command": ["sh", "-c", WORKER],
         "environment": [{"name": "QUEUE_URL", "value": url}]}])
    side.ecs.create_service(cluster=side.cluster, serviceName=name, taskDefinition=name, desiredCount=0)
    resource = f"service/{side.cluster}/{name}"
    key = dict(ServiceNamespace="ecs", ResourceId=resource, ScalableDimension="ecs:service:DesiredCount")
    side.aas.register_scalable_target(**key, MinCapacity=0, MaxCapacity=2)
    policy = side.aas.put_scaling_policy(**key, PolicyName="from-zero", PolicyType="StepScaling",
                                         StepScalingPolicyConfiguration={
                                             "AdjustmentType": "ExactCapacity", "Cooldown": 0,
                                             "StepAdjustments": [{"MetricIntervalLowerBound": 0,
                                                                  "ScalingAdjustment": 1}]})["PolicyARN"]
    side.cw.put_metric_alarm(AlarmName=name, Namespace="AWS/SQS", MetricName="ApproximateNumberOfMessagesVisible",
                             Dimensions=[{"Name": "QueueName", "Value": name}], Statistic="Maximum",
                             Period=period, EvaluationPeriods=1, Threshold=0.0,
                             ComparisonOperator="GreaterThanThreshold", AlarmActions=[policy])
    # The empty queue's depth is published a while first, as in life.
    time.sleep(20)
    t0 = time.time()
    for b in range(100):
        side.sqs.send_message_batch(QueueUrl=url, Entries=[
            {"Id": str(i), "MessageBody": f"m{b}-{i}"} for i in range(10)])
    sent = time.time() - t0

    def first_deleted():
        a = side.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages",
                                                                         "ApproximateNumberOfMessagesNotVisible"])
        a = a["Attributes"]
        return int(a["ApproximateNumberOfMessages"]) + int(a["ApproximateNumberOfMessagesNotVisible"]) < 1000

    wait(first_deleted, 900, interval=0.2)
    took = time.time() - t0
    side.aas.deregister_scalable_target(**key)
    side.ecs.update_service(cluster=side.cluster, service=name, desiredCount=0)
    return took, sent


def hosts_from_zero(side, manual):
    """Seconds from t0 to ten tasks RUNNING on a host launched for them."""
    name = "hosts-" + uuid.uuid4().hex[:6]
    ec2, asg = side.client("ec2"), side.client("autoscaling")
    cluster = side.cluster
    data = f"#!/bin/bash\necho ECS_CLUSTER={cluster} >> /etc/ecs/ecs.config\n"
    ec2.create_launch_template(LaunchTemplateName=name, LaunchTemplateData={
        "InstanceType": "t3.small", "UserData": base64.b64encode(data.encode()).decode()})
    asg.create_auto_scaling_group(AutoScalingGroupName=name, MinSize=0, MaxSize=1, DesiredCapacity=0,
                                  LaunchTemplate={"LaunchTemplateName": name}, AvailabilityZones=["local-1a"],
                                  NewInstancesProtectedFromScaleIn=True)
    arn = asg.describe_auto_scaling_groups(AutoScalingGroupNames=[name])["AutoScalingGroups"][0][
        "AutoScalingGroupARN"]
    side.ecs.register_task_definition(family=name, containerDefinitions=[
        {"name": "c", "image": IMAGE, "memory": 16, "command": ["sleep", "600"], "stopTimeout": 1}])
    if not manual:
        side.ecs.create_capacity_provider(name=name, autoScalingGroupProvider={
            "autoScalingGroupArn": arn, "managedTerminationProtection": "ENABLED",
            "managedScaling": {"status": "ENABLED", "targetCapacity": 100, "instanceWarmupPeriod": 0}})
        side.ecs.put_cluster_capacity_providers(cluster=cluster, capacityProviders=[name],
                                                defaultCapacityProviderStrategy=[])
    t0 = time.time()
    if manual:
        asg.set_desired_capacity(AutoScalingGroupName=name, DesiredCapacity=1)
        wait(lambda: any(i["LifecycleState"] == "InService" for i in asg.describe_auto_scaling_groups(
            AutoScalingGroupNames=[name])["AutoScalingGroups"][0]["Instances"]), 120, 0.02)
        iid = asg.describe_auto_scaling_groups(AutoScalingGroupNames=[name])["AutoScalingGroups"][0][
            "Instances"][0]["InstanceId"]
        cis = side.ecs.describe_container_instances(cluster=cluster, containerInstances=side.ecs.list_container_instances(
            cluster=cluster)["containerInstanceArns"])["containerInstances"]
        target = [c["containerInstanceArn"] for c in cis if c["ec2InstanceId"] == iid]
        arns = [t["taskArn"] for t in side.ecs.start_task(cluster=cluster, taskDefinition=name,
                                                          containerInstances=target * 10)["tasks"]]
    else:
        arns = [t["taskArn"] for t in side.ecs.run_task(cluster=cluster, taskDefinition=name, count=10,
                capacityProviderStrategy=[{"capacityProvider": name, "weight": 1}])["tasks"]]
    assert len(arns) == 10, arns
    wait(lambda: all(t["lastStatus"] == "RUNNING" for t in side.ecs.describe_tasks(
        cluster=cluster, tasks=arns)["tasks"]), 180, 0.05)
    took = time.time() - t0
    for a in arns:
        side.ecs.stop_task(cluster=cluster, task=a)
    asg.delete_auto_scaling_group(AutoScalingGroupName=name, ForceDelete=True)
    wait(lambda: not asg.describe_auto_scaling_groups(AutoScalingGroupNames=[name])["AutoScalingGroups"], 120)
    return took


def main():
    which = sys.argv[1:] or ["a", "b", "c"]
    os.makedirs("bench/results", exist_ok=True)
    out = f"bench/results/scaling-{time.strftime('%Y%m%d-%H%M%S')}.jsonl"
    rows = []
    sides = [("berth-defaults", ["--target-tracking-period", "10"], 10),
             ("aws-timing", ["--target-tracking-period", "60"], 60)]
    for run in range(RUNS):
        for label, args, period in sides:
            side = Side(label, args)
            try:
                if "a" in which:
                    r = {"bench": "cpu-step", "side": label, "run": run, "seconds": cpu_step(side)}
                    print(json.dumps(r), flush=True)
                    rows.append(r)
                if "b" in which:
                    took, sent = queue_from_zero(side, period)
                    r = {"bench": "queue-from-zero", "side": label, "run": run, "seconds": took,
                         "send_seconds": sent, "alarm_period": period}
                    print(json.dumps(r), flush=True)
                    rows.append(r)
            finally:
                side.stop()
        if "c" in which:
            side = Side("hosts", ["--launcher", "netns"])
            try:
                for label, manual in (("capacity-provider", False), ("by-hand", True)):
                    r = {"bench": "hosts-from-zero", "side": label, "run": run,
                         "seconds": hosts_from_zero(side, manual)}
                    print(json.dumps(r), flush=True)
                    rows.append(r)
            finally:
                side.stop()
    with open(out, "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    for bench, title in (("cpu-step", "CPU load step to a new task RUNNING"),
                         ("queue-from-zero", "1,000 messages at zero tasks to the first processed")):
        got = {s: [r["seconds"] for r in rows if r["bench"] == bench and r["side"] == s] for s, _, _ in sides}
        if not got["berth-defaults"]:
            continue
        b = sorted(got["berth-defaults"])[len(got["berth-defaults"]) // 2]
        a = sorted(got["aws-timing"])[len(got["aws-timing"]) // 2]
        print(f"\n| {title} | Berth defaults s | AWS timing s | AWS / Berth | runs |")
        print("|---|---|---|---|---|")
        print(f"| median | {b:.1f} | {a:.1f} | {a / b:.1f}x | {len(got['berth-defaults'])} |")
    cp = sorted(r["seconds"] for r in rows if r["bench"] == "hosts-from-zero" and r["side"] == "capacity-provider")
    hand = sorted(r["seconds"] for r in rows if r["bench"] == "hosts-from-zero" and r["side"] == "by-hand")
    if cp and hand:
        c, h = cp[len(cp) // 2], hand[len(hand) // 2]
        print("\n| 10 PROVISIONING tasks at zero hosts to RUNNING | capacity provider s | by hand s | by hand / provider | runs |")
        print("|---|---|---|---|---|")
        print(f"| median | {c:.2f} | {h:.2f} | {h / c:.2f}x | {len(cp)} |")
    print(f"\nraw: {out}")


if __name__ == "__main__":
    main()

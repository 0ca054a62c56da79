"""CloudWatch metrics with real clients: boto3 (JSON 1.0, gzip for large
PutMetricData bodies), the pip aws CLI and Debian's aws CLI v2 (awsQuery);
statistics, percentiles, metric math, listing, CloudWatch's errors in both
protocols, IAM on namespaces, and data surviving a restart."""

import datetime
import json
import os
import subprocess
import time

from conftest import AWS_ENV, IMAGE, Cluster, Server, aws_cli, wait_for
from test_iam import allow, client, error_of, user_with


def minute(offset=0):
    """The start of the current minute, moved by `offset` minutes (UTC)."""
    now = int(time.time()) // 60 * 60
    return datetime.datetime.fromtimestamp(now + offset * 60, tz=datetime.timezone.utc)


def dims(**kw):
    return [{"Name": k, "Value": v} for k, v in kw.items()]


def test_statistics_percentiles_and_listing(server, name):
    cw = client(server, "cloudwatch")
    ns = f"App/{name}"
    t0 = minute(-10)
    # Ten minutes of one value a second per minute, 1..60, and a statistic
    # set (whose values are unknown) in the last minute.
    data = [{"MetricName": "Latency", "Dimensions": dims(Service="web"), "Timestamp": t0 + datetime.timedelta(minutes=m),
             "Values": [float(v) for v in range(1, 61)], "Unit": "Milliseconds"} for m in range(9)]
    data.append({"MetricName": "Latency", "Dimensions": dims(Service="web"),
                 "Timestamp": t0 + datetime.timedelta(minutes=9), "Unit": "Milliseconds",
                 "StatisticValues": {"SampleCount": 4, "Sum": 40, "Minimum": 5, "Maximum": 15}})
    cw.put_metric_data(Namespace=ns, MetricData=data)
    cw.put_metric_data(Namespace=ns, MetricData=[
        {"MetricName": "Latency", "Dimensions": dims(Service="api"), "Timestamp": t0, "Value": 7.0}])
    r = cw.get_metric_statistics(Namespace=ns, MetricName="Latency", Dimensions=dims(Service="web"),
                                 StartTime=t0, EndTime=t0 + datetime.timedelta(minutes=10), Period=60,
                                 Statistics=["Average", "SampleCount", "Maximum", "Minimum", "Sum"],
                                 ExtendedStatistics=["p90"])
    points = sorted(r["Datapoints"], key=lambda d: d["Timestamp"])
    assert len(points) == 10 and r["Label"] == "Latency"
    assert points[0]["Timestamp"] == t0
    assert (points[0]["Average"], points[0]["SampleCount"], points[0]["Minimum"], points[0]["Maximum"],
            points[0]["Sum"]) == (30.5, 60.0, 1.0, 60.0, 1830.0)
    assert points[0]["Unit"] == "Milliseconds"
    assert abs(points[0]["ExtendedStatistics"]["p90"] - 54) <= 1.0, points[0]
    # A statistic set hides its values: no percentile for that minute.
    assert "ExtendedStatistics" not in points[9] and points[9]["Average"] == 10.0
    # Five-minute periods (aligned on the epoch) merge the minutes.
    r = cw.get_metric_statistics(Namespace=ns, MetricName="Latency", Dimensions=dims(Service="web"),
                                 StartTime=t0, EndTime=t0 + datetime.timedelta(minutes=10), Period=300,
                                 Statistics=["SampleCount"])
    counts = [p["SampleCount"] for p in r["Datapoints"]]
    assert sum(counts) == 544.0 and len(counts) in (2, 3), counts
    # Dimensions must match exactly; a unit filter keeps only its data.
    r = cw.get_metric_statistics(Namespace=ns, MetricName="Latency", StartTime=t0,
                                 EndTime=t0 + datetime.timedelta(minutes=10), Period=60, Statistics=["Sum"])
    assert r["Datapoints"] == []
    r = cw.get_metric_statistics(Namespace=ns, MetricName="Latency", Dimensions=dims(Service="web"), StartTime=t0,
                                 EndTime=t0 + datetime.timedelta(minutes=10), Period=60, Statistics=["Sum"],
                                 Unit="Seconds")
    assert r["Datapoints"] == []

    listed = cw.list_metrics(Namespace=ns)["Metrics"]
    assert sorted(m["Dimensions"][0]["Value"] for m in listed) == ["api", "web"]
    assert cw.list_metrics(Namespace=ns, Dimensions=[{"Name": "Service", "Value": "api"}])["Metrics"] == [
        {"Namespace": ns, "MetricName": "Latency", "Dimensions": dims(Service="api")}]
    assert len(cw.list_metrics(Namespace=ns, Dimensions=[{"Name": "Service"}])["Metrics"]) == 2
    assert len(cw.list_metrics(Namespace=ns, RecentlyActive="PT3H")["Metrics"]) == 2
    pages = cw.get_paginator("list_metrics").paginate(Namespace=ns)
    assert sum(len(p["Metrics"]) for p in pages) == 2


def test_get_metric_data_with_metric_math(server, name):
    cw = client(server, "cloudwatch")
    ns = f"Queue/{name}"
    t0 = minute(-5)
    visible = [300.0, 200.0, 100.0, 50.0, 0.0]
    tasks = [1.0, 2.0, 4.0, 5.0]
    cw.put_metric_data(Namespace=ns, MetricData=[
        {"MetricName": "Visible", "Timestamp": t0 + datetime.timedelta(minutes=i), "Value": v}
        for i, v in enumerate(visible)] + [
        {"MetricName": "Tasks", "Timestamp": t0 + datetime.timedelta(minutes=i), "Value": v}
        for i, v in enumerate(tasks)])

    def stat(metric):
        return {"Metric": {"Namespace": ns, "MetricName": metric}, "Period": 60, "Stat": "Average"}

    r = cw.get_metric_data(StartTime=t0, EndTime=t0 + datetime.timedelta(minutes=5), ScanBy="TimestampAscending",
                           MetricDataQueries=[
                               {"Id": "visible", "MetricStat": stat("Visible"), "ReturnData": False},
                               {"Id": "tasks", "MetricStat": stat("Tasks"), "ReturnData": False},
                               {"Id": "backlog", "Expression": "visible / FILL(tasks, REPEAT)",
                                "Label": "Backlog per task"},
                               {"Id": "total", "Expression": "SUM(METRICS())"}])
    results = {x["Id"]: x for x in r["MetricDataResults"]}
    assert set(results) == {"backlog", "total"}
    assert results["backlog"]["Label"] == "Backlog per task"
    assert results["backlog"]["Values"] == [300.0, 100.0, 25.0, 10.0, 0.0]
    assert results["backlog"]["Timestamps"][0] == t0 and results["backlog"]["StatusCode"] == "Complete"
    assert results["total"]["Values"] == [301.0, 202.0, 104.0, 55.0, 0.0]
    # Newest first by default; MaxDatapoints pages with a token.
    r = cw.get_metric_data(StartTime=t0, EndTime=t0 + datetime.timedelta(minutes=5), MaxDatapoints=3,
                           MetricDataQueries=[{"Id": "v", "MetricStat": stat("Visible")}])
    assert r["MetricDataResults"][0]["Values"] == [0.0, 50.0, 100.0] and r["NextToken"]
    r = cw.get_metric_data(StartTime=t0, EndTime=t0 + datetime.timedelta(minutes=5), MaxDatapoints=3,
                           NextToken=r["NextToken"], MetricDataQueries=[{"Id": "v", "MetricStat": stat("Visible")}])
    assert r["MetricDataResults"][0]["Values"] == [200.0, 300.0] and "NextToken" not in r
    # An expression that does not parse names its query.
    code = error_of(cw.get_metric_data, StartTime=t0, EndTime=t0 + datetime.timedelta(minutes=5),
                    MetricDataQueries=[{"Id": "v", "MetricStat": stat("Visible")}, {"Id": "e", "Expression": "v +"}])
    assert code[1] == "ValidationError" and "MetricDataQueries.member.2.Expression" in code[2], code
    code = error_of(cw.get_metric_data, StartTime=t0, EndTime=t0 + datetime.timedelta(minutes=5),
                    MetricDataQueries=[{"Id": "Bad", "MetricStat": stat("Visible")}])
    assert code[1] == "ValidationError" and "^[a-z][a-zA-Z0-9_]*$" in code[2], code


def test_bad_input_gets_cloudwatchs_errors_and_stores_nothing(server, name):
    cw = client(server, "cloudwatch")
    ns = f"Bad/{name}"
    old = datetime.datetime.now(tz=datetime.timezone.utc) - datetime.timedelta(days=15)
    cases = [
        (dict(Namespace=ns, MetricData=[{"MetricName": "m", "Value": 1.0},
                                         {"MetricName": "m", "Value": 1.0, "Timestamp": old}]),
         "InvalidParameterValue", "The parameter MetricData.member.2.Timestamp must specify a time within the past two weeks."),
        (dict(Namespace="AWS/ECS", MetricData=[{"MetricName": "m", "Value": 1.0}]),
         "InvalidParameterValue", "The value AWS/ECS for parameter Namespace is invalid."),
        (dict(Namespace=ns, MetricData=[{"MetricName": "m"}]), "InvalidParameterCombination",
         "MetricData.member.1.Value"),
        (dict(Namespace=ns, MetricData=[{"MetricName": "m", "Value": 1.0, "StorageResolution": 5}]),
         "InvalidParameterValue", "StorageResolution"),
        (dict(Namespace=ns, MetricData=[{"MetricName": "m", "Values": [1.0, 2.0], "Counts": [1.0]}]),
         "InvalidParameterCombination", "Counts"),
    ]
    for kw, code, words in cases:
        status, got, message = error_of(cw.put_metric_data, **kw)
        assert (status, got) == (400, code) and words in message, (kw, got, message)
    assert cw.list_metrics(Namespace=ns)["Metrics"] == []
    t0 = minute(-60)
    status, code, message = error_of(cw.get_metric_statistics, Namespace=ns, MetricName="m", StartTime=t0,
                                     EndTime=t0 + datetime.timedelta(days=2), Period=60, Statistics=["Average"])
    assert (status, code) == (400, "InvalidParameterCombination") and "exceeds the limit of 1,440" in message
    assert error_of(cw.get_metric_statistics, Namespace=ns, MetricName="m", StartTime=t0, EndTime=t0,
                    Period=60, Statistics=["Average"])[2] == "The parameter StartTime must not equal parameter EndTime."
    assert error_of(cw.get_metric_statistics, Namespace=ns, MetricName="m", StartTime=t0,
                    EndTime=t0 + datetime.timedelta(hours=1), Period=45, Statistics=["Average"])[2] == \
        "The value 45 for parameter Period is invalid."


def test_the_aws_clis_and_gzip_bodies(server, name):
    ns = f"Cli/{name}"
    at = minute(-2).strftime("%Y-%m-%dT%H:%M:%SZ")
    # The pip aws CLI (current botocore: JSON 1.0).
    aws_cli(server, "cloudwatch", "put-metric-data", "--namespace", ns, "--metric-name", "Hits",
            "--value", "5", "--unit", "Count", "--timestamp", at)
    # Debian's aws CLI v2 speaks awsQuery to CloudWatch.
    env = dict(os.environ, **AWS_ENV)
    v2 = ["/usr/bin/aws", "--endpoint-url", server.url, "--output", "json", "cloudwatch"]
    p = subprocess.run(v2 + ["put-metric-data", "--namespace", ns, "--metric-name", "Hits", "--value", "7",
                             "--unit", "Count", "--timestamp", at], capture_output=True, text=True, env=env,
                       stdin=subprocess.DEVNULL, timeout=60)
    assert p.returncode == 0, p.stderr
    p = subprocess.run(v2 + ["get-metric-statistics", "--namespace", ns, "--metric-name", "Hits",
                             "--start-time", minute(-3).isoformat(), "--end-time", minute(1).isoformat(),
                             "--period", "60", "--statistics", "Sum", "SampleCount"],
                       capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL, timeout=60)
    assert p.returncode == 0, p.stderr
    points = json.loads(p.stdout)["Datapoints"]
    assert [(d["Sum"], d["SampleCount"], d["Unit"]) for d in points] == [(12.0, 2.0, "Count")], points
    # Errors over query carry CloudWatch's query codes.
    p = subprocess.run(v2 + ["put-metric-data", "--namespace", "AWS/X", "--metric-name", "m", "--value", "1"],
                       capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL, timeout=60)
    assert p.returncode != 0 and "(InvalidParameterValue)" in p.stderr, p.stderr
    listed = aws_cli(server, "cloudwatch", "list-metrics", "--namespace", ns)["Metrics"]
    assert [m["MetricName"] for m in listed] == ["Hits"]
    # boto3 gzips PutMetricData bodies of 10 KiB or more.
    cw = client(server, "cloudwatch")
    big = [{"MetricName": f"m{i}", "Dimensions": dims(Host=f"h{i}" * 20), "Value": float(i)} for i in range(300)]
    cw.put_metric_data(Namespace=ns, MetricData=big)
    assert len(cw.list_metrics(Namespace=ns)["Metrics"]) == 301


def test_iam_decides_who_publishes_to_which_namespace(server, name):
    iam = client(server, "iam")
    key, secret = user_with(server, iam, name, inline=allow(
        ["cloudwatch:PutMetricData"], condition={"StringEquals": {"cloudwatch:namespace": f"Mine/{name}"}}))
    cw = client(server, "cloudwatch", key, secret)
    cw.put_metric_data(Namespace=f"Mine/{name}", MetricData=[{"MetricName": "m", "Value": 1.0}])
    status, code, _ = error_of(cw.put_metric_data, Namespace=f"Theirs/{name}",
                               MetricData=[{"MetricName": "m", "Value": 1.0}])
    assert (status, code) == (400, "AccessDenied") or code == "AccessDeniedException", (status, code)
    assert error_of(cw.list_metrics)[1] in ("AccessDenied", "AccessDeniedException")


def test_metrics_survive_kill_9(tmp_path, name):
    server = Server(str(tmp_path)).start()
    cw = client(server, "cloudwatch")
    ns = f"Durable/{name}"
    t0 = minute(-3)
    cw.put_metric_data(Namespace=ns, MetricData=[{"MetricName": "m", "Timestamp": t0, "Value": 4.0}])
    server.kill9()
    server.start()
    cw = client(server, "cloudwatch")
    r = cw.get_metric_statistics(Namespace=ns, MetricName="m", StartTime=t0, EndTime=minute(1), Period=60,
                                 Statistics=["Sum"])
    assert [d["Sum"] for d in r["Datapoints"]] == [4.0]
    assert os.path.isdir(os.path.join(server.data_dir, "metrics"))
    server.stop()


def test_services_publish_ecs_metrics_from_their_tasks_use(tmp_path, name):
    """An agent sampling every second: a service whose task burns all the
    CPU its 256 units allow (task-level cpu is a hard limit on EC2, as
    ECS's is) shows near 100% in AWS/ECS CPUUtilization, Container
    Insights counts its tasks, and counts go on while it has none."""
    cl = Cluster(str(tmp_path), name, [[]], agent_extra=["--stats-interval", "1"]).start()
    try:
        cl.ecs.register_task_definition(family=name, cpu="256", memory="128", containerDefinitions=[
            {"name": "burn", "image": IMAGE, "essential": True, "stopTimeout": 1,
             "command": ["sh", "-c", "while :; do :; done"]}])
        cl.ecs.create_service(cluster=name, serviceName="web", taskDefinition=name, desiredCount=1)
        cw = client(cl.server, "cloudwatch")
        service = dims(ClusterName=name, ServiceName="web")

        def stats(ns, metric, stat, d=service):
            r = cw.get_metric_statistics(Namespace=ns, MetricName=metric, Dimensions=d, Period=60,
                                         StartTime=minute(-5), EndTime=minute(2), Statistics=[stat])
            return [p[stat] for p in r["Datapoints"]]

        peak = wait_for("CPUUtilization near the reservation",
                        lambda: [v for v in stats("AWS/ECS", "CPUUtilization", "Maximum") if v > 50], timeout=60)
        assert max(peak) < 150, peak
        assert stats("AWS/ECS", "MemoryUtilization", "Average"), "memory too"
        wait_for("a running task counted",
                 lambda: 1.0 in stats("ECS/ContainerInsights", "RunningTaskCount", "Maximum"), timeout=30)
        assert 1.0 in stats("ECS/ContainerInsights", "DesiredTaskCount", "Maximum")
        task_id = cl.ecs.list_tasks(cluster=name, serviceName="web")["taskArns"][0].rsplit("/", 1)[1]
        per_task = dims(ClusterName=name, TaskDefinitionFamily=name, TaskId=task_id)
        assert [v for v in stats("ECS/ContainerInsights", "CpuUtilized", "Maximum", per_task) if v > 128]
        assert cw.list_metrics(Namespace="AWS/ECS", Dimensions=[{"Name": "ClusterName", "Value": name}])["Metrics"]
        # At zero tasks the counts go on, so scaling from zero can read them.
        cl.ecs.update_service(cluster=name, service="web", desiredCount=0)
        wait_for("no task counted", lambda: stats("ECS/ContainerInsights", "RunningTaskCount", "Minimum")
                 and min(stats("ECS/ContainerInsights", "RunningTaskCount", "Minimum")) == 0.0, timeout=60)
    finally:
        cl.stop()


def test_alarms_follow_their_data_and_keep_history(server, name):
    """A high-resolution alarm (10 s periods, 2 of 2) starts with
    insufficient data, goes to ALARM on breaching data and back to OK when
    the data (sent ahead of time) fall, adopts SetAlarmState until its next
    evaluation, and records its configuration, states and actions."""
    cw = client(server, "cloudwatch")
    ns = f"Alarm/{name}"
    now = int(time.time())
    at = lambda t: datetime.datetime.fromtimestamp(t, tz=datetime.timezone.utc)
    policy = (f"arn:aws:autoscaling:us-east-1:000000000000:scalingPolicy:{name}:"
              f"resource/ecs/service/c/web:policyName/out")
    cw.put_metric_alarm(AlarmName=f"{name}/hot", Namespace=ns, MetricName="Load", Statistic="Average", Period=10,
                        EvaluationPeriods=2, DatapointsToAlarm=2, Threshold=50.0,
                        ComparisonOperator="GreaterThanThreshold", AlarmActions=[policy],
                        Tags=[{"Key": "team", "Value": "a"}])
    a = cw.describe_alarms(AlarmNames=[f"{name}/hot"])["MetricAlarms"][0]
    assert a["StateValue"] == "INSUFFICIENT_DATA" and a["TreatMissingData"] == "missing"
    assert a["AlarmArn"] == f"arn:aws:cloudwatch:us-east-1:000000000000:alarm:{name}/hot"
    assert a["ActionsEnabled"] is True and a["AlarmActions"] == [policy]
    # Breaching from 40 s ago to 10 s ahead (so the next two periods to end
    # breach whenever this lands in a period), falling for 40 s after.
    cw.put_metric_data(Namespace=ns, MetricData=[
        {"MetricName": "Load", "Timestamp": at(t), "Value": 80.0, "StorageResolution": 1}
        for t in range(now - 40, now + 10)] + [
        {"MetricName": "Load", "Timestamp": at(t), "Value": 10.0, "StorageResolution": 1}
        for t in range(now + 10, now + 50)])

    def state():
        return cw.describe_alarms(AlarmNames=[f"{name}/hot"])["MetricAlarms"][0]

    hot = wait_for("ALARM", lambda: (s := state())["StateValue"] == "ALARM" and s, timeout=30)
    assert hot["StateReason"].startswith("Threshold Crossed: 2 datapoints [") and \
        hot["StateReason"].endswith("were greater than the threshold (50.0)."), hot["StateReason"]
    assert json.loads(hot["StateReasonData"])["threshold"] == 50.0
    cool = wait_for("OK", lambda: (s := state())["StateValue"] == "OK" and s, timeout=60)
    assert "not greater than the threshold (50.0)" in cool["StateReason"], cool["StateReason"]
    cw.set_alarm_state(AlarmName=f"{name}/hot", StateValue="ALARM", StateReason="testing the pager")
    wait_for("the state asked for", lambda: state()["StateReason"] == "testing the pager", timeout=20)
    history = cw.describe_alarm_history(AlarmName=f"{name}/hot", ScanBy="TimestampAscending")["AlarmHistoryItems"]
    kinds = [h["HistoryItemType"] for h in history]
    assert kinds[0] == "ConfigurationUpdate" and kinds.count("StateUpdate") >= 2, kinds
    summaries = [h["HistorySummary"] for h in history]
    assert "Alarm updated from INSUFFICIENT_DATA to ALARM" in summaries, summaries
    # No scaling policy of that ARN exists: the action is recorded as failed.
    actions = [h for h in history if h["HistoryItemType"] == "Action"]
    assert actions and policy in actions[0]["HistorySummary"] and "Failed" in actions[0]["HistorySummary"]
    assert cw.describe_alarms(StateValue="ALARM", AlarmNamePrefix=name)["MetricAlarms"][0]["AlarmName"] == f"{name}/hot"
    assert [x["AlarmName"] for x in cw.describe_alarms_for_metric(Namespace=ns, MetricName="Load")["MetricAlarms"]] \
        == [f"{name}/hot"]
    cw.disable_alarm_actions(AlarmNames=[f"{name}/hot"])
    assert state()["ActionsEnabled"] is False
    arn = hot["AlarmArn"]
    cw.tag_resource(ResourceARN=arn, Tags=[{"Key": "env", "Value": "prod"}])
    cw.untag_resource(ResourceARN=arn, TagKeys=["team"])
    assert cw.list_tags_for_resource(ResourceARN=arn)["Tags"] == [{"Key": "env", "Value": "prod"}]
    # Deleting names one that is not there: nothing is deleted.
    code = error_of(cw.delete_alarms, AlarmNames=[f"{name}/hot", f"{name}/nope"])
    assert code[:2] == (404, "ResourceNotFound"), code
    assert state()
    cw.delete_alarms(AlarmNames=[f"{name}/hot"])
    assert cw.describe_alarms(AlarmNamePrefix=name)["MetricAlarms"] == []
    assert error_of(cw.list_tags_for_resource, ResourceARN=arn)[:2] == (404, "ResourceNotFoundException")


def test_bad_alarms_are_refused_and_debian_cli_reads_alarms(server, name):
    cw = client(server, "cloudwatch")
    base = dict(AlarmName=name, Namespace="App", MetricName="m", Statistic="Average", Period=60,
                EvaluationPeriods=3, Threshold=1.0, ComparisonOperator="GreaterThanThreshold")
    for change, code, words in [
        (dict(Period=45), "InvalidParameterValue", "The value 45 for parameter Period is invalid."),
        (dict(DatapointsToAlarm=4), "ValidationError", "DatapointsToAlarm"),
        (dict(ExtendedStatistic="p99"), "InvalidParameterCombination", "mutually exclusive"),
        (dict(ComparisonOperator="LessThanLowerThreshold"), "InvalidParameterValue", "anomaly detection"),
        (dict(TreatMissingData="sometimes"), "InvalidParameterValue", "TreatMissingData"),
        (dict(AlarmActions=["nonsense"]), "ValidationError", "Invalid arn syntax"),
    ]:
        got = error_of(cw.put_metric_alarm, **dict(base, **change))
        assert got[1] == code and words in got[2], (change, got)
    assert cw.describe_alarms(AlarmNames=[name])["MetricAlarms"] == []
    cw.put_metric_alarm(**base)
    env = dict(os.environ, **AWS_ENV)
    p = subprocess.run(["/usr/bin/aws", "--endpoint-url", server.url, "--output", "json", "cloudwatch",
                        "describe-alarms", "--alarm-names", name], capture_output=True, text=True, env=env,
                       stdin=subprocess.DEVNULL, timeout=60)
    assert p.returncode == 0, p.stderr
    alarm = json.loads(p.stdout)["MetricAlarms"][0]
    assert alarm["StateValue"] == "INSUFFICIENT_DATA" and alarm["Period"] == 60, alarm
    assert alarm["StateUpdatedTimestamp"].startswith(str(datetime.datetime.now(tz=datetime.timezone.utc).year))

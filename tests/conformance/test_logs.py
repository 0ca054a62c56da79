"""CloudWatch Logs with real clients: groups, streams, events with their
tokens, retention, filter patterns, tags, Logs' errors, IAM deciding who
writes where, and `aws logs tail` (the aws CLI v2) following a group."""

import os
import subprocess
import threading
import time

from conftest import AWS_ENV, wait_for
from test_iam import allow, client, error_of, user_with

ACCOUNT = "000000000000"


def now_ms():
    return int(time.time() * 1000)


def test_groups_streams_events_and_their_errors(server, name):
    logs = client(server, "logs")
    g = f"/ecs/{name}"
    logs.create_log_group(logGroupName=g, tags={"team": "a"})
    assert error_of(logs.create_log_group, logGroupName=g)[:2] == (400, "ResourceAlreadyExistsException")
    # What Berth does not do is refused, not ignored.
    code = error_of(logs.create_log_group, logGroupName=g + "-p", deletionProtectionEnabled=True)
    assert code[1] == "InvalidParameterException" and "deletionProtectionEnabled" in code[2], code
    assert logs.describe_log_groups(logGroupNamePrefix=g, logGroupClass="INFREQUENT_ACCESS")["logGroups"] == []
    code = error_of(logs.create_log_group, logGroupName="bad name")
    assert code[1] == "InvalidParameterException" and "'logGroupName'" in code[2], code
    groups = logs.describe_log_groups(logGroupNamePrefix=g)["logGroups"]
    assert [x["logGroupName"] for x in groups] == [g]
    assert groups[0]["arn"] == f"arn:aws:logs:us-east-1:{ACCOUNT}:log-group:{g}:*"
    assert groups[0]["logGroupArn"] == f"arn:aws:logs:us-east-1:{ACCOUNT}:log-group:{g}"
    assert "retentionInDays" not in groups[0]
    logs.put_retention_policy(logGroupName=g, retentionInDays=7)
    assert logs.describe_log_groups(logGroupNamePrefix=g)["logGroups"][0]["retentionInDays"] == 7
    code = error_of(logs.put_retention_policy, logGroupName=g, retentionInDays=2)
    assert code[1] == "InvalidParameterException" and "retentionInDays" in code[2]
    assert logs.list_tags_for_resource(resourceArn=groups[0]["logGroupArn"])["tags"] == {"team": "a"}
    logs.tag_resource(resourceArn=groups[0]["logGroupArn"], tags={"env": "prod"})
    assert logs.list_tags_log_group(logGroupName=g)["tags"] == {"team": "a", "env": "prod"}

    logs.create_log_stream(logGroupName=g, logStreamName="web/app/1")
    assert error_of(logs.create_log_stream, logGroupName=g, logStreamName="web/app/1")[1] == \
        "ResourceAlreadyExistsException"
    assert error_of(logs.create_log_stream, logGroupName=g + "x", logStreamName="s")[1:] == (
        "ResourceNotFoundException", "The specified log group does not exist.")
    t = now_ms()
    events = [{"timestamp": t - 5000 + i, "message": f"line {i}"} for i in range(5)]
    r = logs.put_log_events(logGroupName=g, logStreamName="web/app/1", logEvents=events)
    assert "rejectedLogEventsInfo" not in r, r
    # Out of order: the whole batch is refused and nothing is stored.
    code = error_of(logs.put_log_events, logGroupName=g, logStreamName="web/app/1",
                    logEvents=[{"timestamp": t, "message": "b"}, {"timestamp": t - 1, "message": "a"}])
    assert code[1] == "InvalidParameterException" and "chronological" in code[2], code
    assert error_of(logs.put_log_events, logGroupName=g, logStreamName="nope",
                    logEvents=[{"timestamp": t, "message": "x"}])[2] == "The specified log stream does not exist."
    # Older than the retention, or too far ahead: rejected one by one.
    r = logs.put_log_events(logGroupName=g, logStreamName="web/app/1", logEvents=[
        {"timestamp": t, "message": "kept"}, {"timestamp": t + 3 * 3600000, "message": "future"}])
    assert r["rejectedLogEventsInfo"] == {"tooNewLogEventStartIndex": 1}, r
    logs.create_log_stream(logGroupName=g, logStreamName="old")
    week = 7 * 86400000
    r = logs.put_log_events(logGroupName=g, logStreamName="old", logEvents=[
        {"timestamp": t - week - 3600000, "message": "expired"}, {"timestamp": t - week + 3600000, "message": "in"}])
    assert r["rejectedLogEventsInfo"] == {"expiredLogEventEndIndex": 1}, r
    assert [e["message"] for e in logs.get_log_events(logGroupName=g, logStreamName="old")["events"]] == ["in"]
    code = error_of(logs.put_log_events, logGroupName=g, logStreamName="old", logEvents=[
        {"timestamp": t - 86400000 - 1, "message": "a"}, {"timestamp": t, "message": "b"}])
    assert "cannot span more than 24 hours" in code[2], code

    def get(**kw):
        return logs.get_log_events(logGroupName=g, logStreamName="web/app/1", **kw)

    first = get(startFromHead=True, limit=2)
    assert [e["message"] for e in first["events"]] == ["line 0", "line 1"]
    assert first["events"][0]["ingestionTime"] >= first["events"][0]["timestamp"]
    rest = get(startFromHead=True, nextToken=first["nextForwardToken"])
    assert [e["message"] for e in rest["events"]] == ["line 2", "line 3", "line 4", "kept"]
    end = get(startFromHead=True, nextToken=rest["nextForwardToken"])
    assert end["events"] == [] and end["nextForwardToken"] == rest["nextForwardToken"]
    newest = get(limit=2)
    assert [e["message"] for e in newest["events"]] == ["line 4", "kept"]
    older = get(nextToken=newest["nextBackwardToken"], limit=2)
    assert [e["message"] for e in older["events"]] == ["line 2", "line 3"]
    streams = logs.describe_log_streams(logGroupName=g, logStreamNamePrefix="web/")["logStreams"]
    assert [x["logStreamName"] for x in streams] == ["web/app/1"]
    assert (streams[0]["firstEventTimestamp"], streams[0]["lastEventTimestamp"]) == (t - 5000, t)
    assert streams[0]["storedBytes"] > 0
    by_arn = logs.get_log_events(logGroupIdentifier=groups[0]["logGroupArn"], logStreamName="web/app/1",
                                 startFromHead=True, limit=1)
    assert by_arn["events"][0]["message"] == "line 0"

    logs.delete_log_stream(logGroupName=g, logStreamName="web/app/1")
    assert [x["logStreamName"] for x in logs.describe_log_streams(logGroupName=g)["logStreams"]] == ["old"]
    logs.delete_log_group(logGroupName=g)
    assert error_of(logs.delete_log_group, logGroupName=g)[1] == "ResourceNotFoundException"
    assert logs.describe_log_groups(logGroupNamePrefix=g)["logGroups"] == []


def test_filter_patterns_pages_and_stable_ids(server, name):
    logs = client(server, "logs")
    g = f"/{name}/app"
    logs.create_log_group(logGroupName=g)
    t = now_ms() - 10000
    for s, lines in {"a": ["ERROR disk full", "INFO ok", '{"level":"error","code":503}'],
                     "b": ["WARN slow", "ERROR timeout", '{"level":"info","code":200}']}.items():
        logs.create_log_stream(logGroupName=g, logStreamName=s)
        logs.put_log_events(logGroupName=g, logStreamName=s, logEvents=[
            {"timestamp": t + 10 * i + (s == "b"), "message": m} for i, m in enumerate(lines)])

    def messages(**kw):
        return [e["message"] for e in logs.filter_log_events(logGroupName=g, **kw)["events"]]

    # Interleaved by time across streams.
    assert messages(filterPattern="ERROR") == ["ERROR disk full", "ERROR timeout"]
    assert messages(filterPattern='"disk full"') == ["ERROR disk full"]
    assert messages(filterPattern="?WARN ?timeout") == ["WARN slow", "ERROR timeout"]
    assert messages(filterPattern="ERROR -disk") == ["ERROR timeout"]
    assert messages(filterPattern='{ $.code >= 500 }') == ['{"level":"error","code":503}']
    assert messages(filterPattern="ERROR", logStreamNames=["b"]) == ["ERROR timeout"]
    # FilterLogEvents' time range includes both ends.
    assert messages(startTime=t + 20, endTime=t + 21) == ['{"level":"error","code":503}', '{"level":"info","code":200}']
    assert error_of(logs.filter_log_events, logGroupName=g, filterPattern='"open')[1] == "InvalidParameterException"
    # Pages of two: the same events, with the same ids, as one page.
    whole = logs.filter_log_events(logGroupName=g)["events"]
    paged, token = [], None
    while True:
        kw = {"nextToken": token} if token else {}
        r = logs.filter_log_events(logGroupName=g, limit=2, **kw)
        paged += r["events"]
        token = r.get("nextToken")
        if not token:
            break
    assert [(e["eventId"], e["logStreamName"]) for e in paged] == [(e["eventId"], e["logStreamName"]) for e in whole]
    assert len(whole) == 6 and len({e["eventId"] for e in whole}) == 6


def test_iam_decides_who_writes_to_which_group(server, name):
    logs, iam = client(server, "logs"), client(server, "iam")
    mine, other = f"/{name}/mine", f"/{name}/other"
    for g in (mine, other):
        logs.create_log_group(logGroupName=g)
        logs.create_log_stream(logGroupName=g, logStreamName="s")
    key, secret = user_with(server, iam, name, inline=allow(
        ["logs:PutLogEvents", "logs:CreateLogStream"],
        f"arn:aws:logs:us-east-1:{ACCOUNT}:log-group:{mine}:*"))
    as_user = client(server, "logs", key, secret)
    event = [{"timestamp": now_ms(), "message": "hello"}]
    as_user.put_log_events(logGroupName=mine, logStreamName="s", logEvents=event)
    as_user.create_log_stream(logGroupName=mine, logStreamName="t")
    code = error_of(as_user.put_log_events, logGroupName=other, logStreamName="s", logEvents=event)
    assert code[1] == "AccessDeniedException" and "logs:PutLogEvents" in code[2], code
    assert error_of(as_user.delete_log_group, logGroupName=mine)[1] == "AccessDeniedException"
    assert logs.get_log_events(logGroupName=other, logStreamName="s")["events"] == []


def test_aws_logs_tail_follows_a_group(server, name):
    """The aws CLI v2's `logs tail --follow` polls FilterLogEvents every 5 s
    and prints each event once."""
    logs = client(server, "logs")
    g = f"/{name}/tail"
    logs.create_log_group(logGroupName=g)
    logs.create_log_stream(logGroupName=g, logStreamName="web/1")
    logs.put_log_events(logGroupName=g, logStreamName="web/1",
                        logEvents=[{"timestamp": now_ms() - 1000, "message": "before"}])
    env = dict(os.environ, **AWS_ENV)
    cli = ["/usr/bin/aws", "--endpoint-url", server.url, "logs", "tail", g, "--since", "5m", "--format", "short"]
    once = subprocess.run(cli, capture_output=True, text=True, env=env, timeout=60, stdin=subprocess.DEVNULL)
    assert once.returncode == 0, once.stderr
    assert once.stdout.split() [-1:] == ["before"], once.stdout
    follow = subprocess.Popen(cli + ["--follow"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                              stdin=subprocess.DEVNULL)
    seen = []
    reader = threading.Thread(target=lambda: seen.extend(line.strip() for line in follow.stdout), daemon=True)
    reader.start()
    try:
        wait_for("tail to print what was there", lambda: seen, timeout=20)
        logs.put_log_events(logGroupName=g, logStreamName="web/1",
                            logEvents=[{"timestamp": now_ms(), "message": "after"}])
        wait_for("tail to print the new event", lambda: len(seen) >= 2, timeout=20)
        time.sleep(0.5)
        assert [s.split()[-1] for s in seen] == ["before", "after"], seen
    finally:
        follow.kill()
        follow.wait()
    # The stored data is a log store of its own, not the key-value store.
    assert os.path.isdir(os.path.join(server.data_dir, "cwlogs")), server.data_dir

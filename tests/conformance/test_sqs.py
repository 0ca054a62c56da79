"""SQS with real clients: boto3 (JSON 1.0), the pip aws CLI and Debian's aws
CLI v2 (awsQuery); queues and their attributes, messages with attributes
and the digests SDKs check, visibility, long polling, dead-letter redrive,
FIFO order and deduplication, SQS's errors in both protocols, IAM on queue
ARNs, AWS/SQS metrics, and messages surviving kill -9."""

import datetime
import hashlib
import json
import struct
import subprocess
import threading
import time

from conftest import Server, aws_cli, wait_for
from test_iam import allow, client, error_of, user_with

ACCOUNT = "000000000000"


def md5_of_attributes(attrs):
    """MD5OfMessageAttributes as the SDKs compute it, written here from
    AWS's description rather than taken from Berth."""
    h = hashlib.md5()
    for name in sorted(attrs):
        v = attrs[name]
        for part in (name, v["DataType"]):
            b = part.encode()
            h.update(struct.pack(">I", len(b)) + b)
        if "BinaryValue" in v:
            b = v["BinaryValue"]
            h.update(b"\x02" + struct.pack(">I", len(b)) + b)
        else:
            b = v["StringValue"].encode()
            h.update(b"\x01" + struct.pack(">I", len(b)) + b)
    return h.hexdigest()


def test_queues_messages_visibility_and_errors(server, name):
    sqs = client(server, "sqs")
    url = sqs.create_queue(QueueName=name, Attributes={"VisibilityTimeout": "40"},
                           tags={"team": "a"})["QueueUrl"]
    assert url == f"{server.url}/{ACCOUNT}/{name}"
    # The same attributes answer the same queue; others are refused.
    assert sqs.create_queue(QueueName=name, Attributes={"VisibilityTimeout": "40"})["QueueUrl"] == url
    assert error_of(sqs.create_queue, QueueName=name, Attributes={"VisibilityTimeout": "41"})[1] == "QueueAlreadyExists"
    assert sqs.get_queue_url(QueueName=name)["QueueUrl"] == url
    for i in range(3):
        sqs.create_queue(QueueName=f"{name}-p{i}")
    page = sqs.list_queues(QueueNamePrefix=f"{name}-p", MaxResults=2)
    rest = sqs.list_queues(QueueNamePrefix=f"{name}-p", MaxResults=2, NextToken=page["NextToken"])
    assert len(page["QueueUrls"]) == 2 and len(rest["QueueUrls"]) == 1 and "NextToken" not in rest
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert attrs["VisibilityTimeout"] == "40" and attrs["MessageRetentionPeriod"] == "345600"
    assert attrs["MaximumMessageSize"] == "1048576" and attrs["ApproximateNumberOfMessages"] == "0"
    assert attrs["QueueArn"] == f"arn:aws:sqs:us-east-1:{ACCOUNT}:{name}"
    assert sqs.list_queue_tags(QueueUrl=url)["Tags"] == {"team": "a"}
    sqs.tag_queue(QueueUrl=url, Tags={"env": "test"})
    sqs.untag_queue(QueueUrl=url, TagKeys=["team"])
    assert sqs.list_queue_tags(QueueUrl=url)["Tags"] == {"env": "test"}

    mattrs = {"kind": {"DataType": "String", "StringValue": "order"},
              "n": {"DataType": "Number", "StringValue": "42"},
              "raw": {"DataType": "Binary", "BinaryValue": b"\x00\x01"}}
    sent = sqs.send_message(QueueUrl=url, MessageBody="hello", MessageAttributes=mattrs)
    assert sent["MD5OfMessageBody"] == hashlib.md5(b"hello").hexdigest()
    assert sent["MD5OfMessageAttributes"] == md5_of_attributes(mattrs)
    got = sqs.receive_message(QueueUrl=url, MessageAttributeNames=["All"], AttributeNames=["All"],
                              VisibilityTimeout=1)["Messages"]
    assert len(got) == 1 and got[0]["Body"] == "hello" and got[0]["MessageId"] == sent["MessageId"]
    assert got[0]["MessageAttributes"]["raw"]["BinaryValue"] == b"\x00\x01"
    assert got[0]["MD5OfMessageAttributes"] == sent["MD5OfMessageAttributes"]
    assert got[0]["Attributes"]["ApproximateReceiveCount"] == "1"
    # Hidden while in flight, back after its visibility timeout.
    assert "Messages" not in sqs.receive_message(QueueUrl=url)
    again = sqs.receive_message(QueueUrl=url, WaitTimeSeconds=5, AttributeNames=["ApproximateReceiveCount"])["Messages"]
    assert again[0]["Attributes"]["ApproximateReceiveCount"] == "2"
    # The first receipt handle is outdated: deleting with it deletes nothing.
    sqs.delete_message(QueueUrl=url, ReceiptHandle=got[0]["ReceiptHandle"])
    assert sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessagesNotVisible"])[
        "Attributes"]["ApproximateNumberOfMessagesNotVisible"] == "1"
    sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=again[0]["ReceiptHandle"], VisibilityTimeout=0)
    third = sqs.receive_message(QueueUrl=url)["Messages"][0]
    sqs.delete_message(QueueUrl=url, ReceiptHandle=third["ReceiptHandle"])
    assert error_of(sqs.change_message_visibility, QueueUrl=url, ReceiptHandle=third["ReceiptHandle"],
                    VisibilityTimeout=5)[1] == "InvalidParameterValue"

    batch = sqs.send_message_batch(QueueUrl=url, Entries=[
        {"Id": "a", "MessageBody": "one"}, {"Id": "b", "MessageBody": "two", "DelaySeconds": 1000},
        {"Id": "c", "MessageBody": "three", "DelaySeconds": 2}])
    assert [e["Id"] for e in batch["Successful"]] == ["a", "c"]
    assert batch["Failed"][0]["Id"] == "b" and batch["Failed"][0]["Code"] == "InvalidParameterValue"
    counts = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert (counts["ApproximateNumberOfMessages"], counts["ApproximateNumberOfMessagesDelayed"]) == ("1", "1")
    msgs = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=5)["Messages"]
    deleted = sqs.delete_message_batch(QueueUrl=url, Entries=[
        {"Id": "x", "ReceiptHandle": msgs[0]["ReceiptHandle"]}, {"Id": "y", "ReceiptHandle": "bogus"}])
    assert [e["Id"] for e in deleted["Successful"]] == ["x"]
    assert deleted["Failed"][0]["Code"] == "ReceiptHandleIsInvalid"
    sqs.purge_queue(QueueUrl=url)
    assert error_of(sqs.purge_queue, QueueUrl=url)[1] == "AWS.SimpleQueueService.PurgeQueueInProgress"

    # SQS's errors: the legacy code botocore reports, naming the field.
    missing = f"{server.url}/{ACCOUNT}/{name}-nope"
    assert error_of(sqs.send_message, QueueUrl=missing, MessageBody="x")[1:] == (
        "AWS.SimpleQueueService.NonExistentQueue", "The specified queue does not exist.")
    assert error_of(sqs.create_queue, QueueName="bad name")[1] == "InvalidParameterValue"
    assert error_of(sqs.create_queue, QueueName=f"{name}-x", Attributes={"DelaySeconds": "901"})[1:] == (
        "InvalidAttributeValue", "Invalid value for the parameter DelaySeconds.")
    assert error_of(sqs.create_queue, QueueName=f"{name}-x", Attributes={"Colour": "red"})[1] == "InvalidAttributeName"
    assert error_of(sqs.send_message, QueueUrl=url, MessageBody="a\x01")[1] == "InvalidMessageContents"
    assert error_of(sqs.receive_message, QueueUrl=url, MaxNumberOfMessages=11)[2].startswith(
        "Value 11 for parameter MaxNumberOfMessages is invalid.")
    assert error_of(sqs.send_message_batch, QueueUrl=url, Entries=[
        {"Id": "a", "MessageBody": "1"}, {"Id": "a", "MessageBody": "2"}])[1] == (
        "AWS.SimpleQueueService.BatchEntryIdsNotDistinct")
    assert error_of(sqs.delete_message, QueueUrl=url, ReceiptHandle="nope")[1] == "ReceiptHandleIsInvalid"
    # A rejected request changed nothing.
    assert sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])[
        "Attributes"]["ApproximateNumberOfMessages"] == "0"
    assert not sqs.list_queues(QueueNamePrefix=f"{name}-x").get("QueueUrls")

    sqs.delete_queue(QueueUrl=url)
    assert error_of(sqs.get_queue_url, QueueName=name)[1] == "AWS.SimpleQueueService.NonExistentQueue"
    assert error_of(sqs.create_queue, QueueName=name)[1] == "AWS.SimpleQueueService.QueueDeletedRecently"


def test_long_polling_and_dead_letter_redrive(server, name):
    sqs = client(server, "sqs")
    dlq = sqs.create_queue(QueueName=f"{name}-dlq")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    url = sqs.create_queue(QueueName=name, Attributes={
        "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "2"})})["QueueUrl"]
    assert error_of(sqs.create_queue, QueueName=f"{name}-2", Attributes={"RedrivePolicy": json.dumps(
        {"deadLetterTargetArn": dlq_arn + "-missing", "maxReceiveCount": 2})})[2].endswith(
        "Dead letter target does not exist.")
    assert sqs.list_dead_letter_source_queues(QueueUrl=dlq)["queueUrls"] == [url]

    # A long poll returns as soon as a message arrives (sent by another
    # client while it waits).
    out = {}
    poll = threading.Thread(target=lambda: out.update(
        sqs.receive_message(QueueUrl=url, WaitTimeSeconds=20, VisibilityTimeout=0)))
    poll.start()
    time.sleep(0.5)
    assert poll.is_alive()
    client(server, "sqs").send_message(QueueUrl=url, MessageBody="poison")
    poll.join(timeout=15)
    assert not poll.is_alive() and out["Messages"][0]["Body"] == "poison"
    # A second receive reaches maxReceiveCount; the next one moves the
    # message to the dead-letter queue.
    assert sqs.receive_message(QueueUrl=url, VisibilityTimeout=0)["Messages"][0]["Body"] == "poison"
    assert "Messages" not in sqs.receive_message(QueueUrl=url)
    dead = sqs.receive_message(QueueUrl=dlq, AttributeNames=["All"])["Messages"][0]
    assert dead["Body"] == "poison" and dead["Attributes"]["DeadLetterQueueSourceArn"].endswith(f":{name}")
    assert dead["Attributes"]["ApproximateReceiveCount"] == "1"


def test_fifo_order_groups_and_deduplication(server, name):
    sqs = client(server, "sqs")
    assert error_of(sqs.create_queue, QueueName=f"{name}.fifo")[1] == "InvalidParameterValue"
    url = sqs.create_queue(QueueName=f"{name}.fifo", Attributes={"FifoQueue": "true"})["QueueUrl"]
    assert error_of(sqs.send_message, QueueUrl=url, MessageBody="x", MessageGroupId="g")[1] == "InvalidParameterValue"
    assert error_of(sqs.send_message, QueueUrl=url, MessageBody="x", MessageDeduplicationId="d")[1] == "MissingParameter"
    seqs = []
    for i in range(4):
        r = sqs.send_message(QueueUrl=url, MessageBody=f"a{i}", MessageGroupId="a", MessageDeduplicationId=f"a{i}")
        seqs.append(r["SequenceNumber"])
    sqs.send_message(QueueUrl=url, MessageBody="b0", MessageGroupId="b", MessageDeduplicationId="b0")
    # A repeated deduplication id within five minutes stores nothing new.
    dup = sqs.send_message(QueueUrl=url, MessageBody="a0", MessageGroupId="a", MessageDeduplicationId="a0")
    assert dup["SequenceNumber"] == seqs[0] and seqs == sorted(seqs)
    first = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=2, AttributeNames=["All"])["Messages"]
    assert [m["Body"] for m in first] == ["a0", "a1"]
    assert first[0]["Attributes"]["MessageGroupId"] == "a"
    # Group a is held while its messages are in flight; group b is not.
    second = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)["Messages"]
    assert [m["Body"] for m in second] == ["b0"]
    sqs.delete_message_batch(QueueUrl=url, Entries=[
        {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(first)])
    third = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)["Messages"]
    assert [m["Body"] for m in third] == ["a2", "a3"]


def test_query_clients_and_metrics(server, name):
    # Debian's aws CLI v2 speaks awsQuery to SQS.
    v2 = ["/usr/bin/aws", "--endpoint-url", server.url, "--output", "json", "sqs"]

    def cli2(*args, check=True):
        p = subprocess.run([*v2, *args], capture_output=True, text=True, stdin=subprocess.DEVNULL)
        if check:
            assert p.returncode == 0, p.stderr
            return json.loads(p.stdout) if p.stdout.strip() else {}
        return p

    url = cli2("create-queue", "--queue-name", name, "--attributes", "DelaySeconds=0,VisibilityTimeout=5",
               "--tags", "team=a")["QueueUrl"]
    assert url.endswith(f"/{ACCOUNT}/{name}")
    sent = cli2("send-message", "--queue-url", url, "--message-body", "via query", "--message-attributes",
                '{"k": {"DataType": "String", "StringValue": "v"}}')
    assert sent["MD5OfMessageBody"] == hashlib.md5(b"via query").hexdigest()
    got = cli2("receive-message", "--queue-url", url, "--attribute-names", "All", "--message-attribute-names", "All")
    m = got["Messages"][0]
    assert m["Body"] == "via query" and m["MessageAttributes"]["k"]["StringValue"] == "v"
    assert m["Attributes"]["ApproximateReceiveCount"] == "1"
    attrs = cli2("get-queue-attributes", "--queue-url", url, "--attribute-names", "All")["Attributes"]
    assert attrs["VisibilityTimeout"] == "5" and attrs["ApproximateNumberOfMessagesNotVisible"] == "1"
    assert cli2("list-queue-tags", "--queue-url", url)["Tags"] == {"team": "a"}
    batch = cli2("send-message-batch", "--queue-url", url, "--entries",
                 json.dumps([{"Id": "1", "MessageBody": "x"}, {"Id": "2", "MessageBody": "y"}]))
    assert sorted(e["Id"] for e in batch["Successful"]) == ["1", "2"]
    cli2("delete-message", "--queue-url", url, "--receipt-handle", m["ReceiptHandle"])
    assert name in "".join(cli2("list-queues", "--queue-name-prefix", name)["QueueUrls"])
    p = cli2("get-queue-url", "--queue-name", name + "-nope", check=False)
    assert p.returncode != 0 and "AWS.SimpleQueueService.NonExistentQueue" in p.stderr
    p = cli2("create-queue", "--queue-name", name + "-x", "--attributes", "DelaySeconds=901", check=False)
    assert p.returncode != 0 and "Invalid value for the parameter DelaySeconds." in p.stderr

    # The pip aws CLI (JSON) reads what query wrote. The messages stay in
    # flight longer than the queue's 5 s so that the next depth published
    # (every 10 s) still counts them.
    out = aws_cli(server, "sqs", "receive-message", "--queue-url", url, "--max-number-of-messages", "10",
                  "--visibility-timeout", "60")
    assert sorted(x["Body"] for x in out["Messages"]) == ["x", "y"]

    # AWS/SQS metrics: the depth is published with the region's alarms,
    # the sends as they happen.
    cw = client(server, "cloudwatch")
    now = datetime.datetime.now(datetime.timezone.utc)

    def stat(metric, statistic):
        r = cw.get_metric_statistics(Namespace="AWS/SQS", MetricName=metric,
                                     Dimensions=[{"Name": "QueueName", "Value": name}],
                                     StartTime=now - datetime.timedelta(minutes=5),
                                     EndTime=now + datetime.timedelta(minutes=5), Period=600, Statistics=[statistic])
        return [d[statistic] for d in r["Datapoints"]]

    assert stat("NumberOfMessagesSent", "Sum") == [3.0]
    wait_for("the queue's depth in CloudWatch", lambda: 2.0 in stat("ApproximateNumberOfMessagesNotVisible", "Maximum"))


def test_iam_limits_queues(server, name):
    iam = client(server, "iam")
    sqs = client(server, "sqs")
    mine = sqs.create_queue(QueueName=f"{name}-mine")["QueueUrl"]
    other = sqs.create_queue(QueueName=f"{name}-other")["QueueUrl"]
    key, secret = user_with(server, iam, name, inline=allow(
        ["sqs:SendMessage", "sqs:ReceiveMessage"], f"arn:aws:sqs:us-east-1:{ACCOUNT}:{name}-mine"))
    limited = client(server, "sqs", key, secret)
    wait_for("the user's key", lambda: limited.send_message(QueueUrl=mine, MessageBody="ok") and True)
    status, code, message = error_of(limited.send_message, QueueUrl=other, MessageBody="no")
    assert code == "AccessDenied" and f"{name}-other" in message
    assert error_of(limited.delete_queue, QueueUrl=mine)[1] == "AccessDenied"
    sender = limited.receive_message(QueueUrl=mine, AttributeNames=["SenderId"])["Messages"][0]["Attributes"]["SenderId"]
    assert sender.startswith("AIDA")


def test_acknowledged_messages_survive_kill9(tmp_path, name):
    s = Server(str(tmp_path)).start()
    try:
        sqs = client(s, "sqs")
        url = sqs.create_queue(QueueName=name)["QueueUrl"]
        sqs.send_message_batch(QueueUrl=url, Entries=[{"Id": str(i), "MessageBody": f"m{i}"} for i in range(5)])
        s.kill9()
        s.start()
        got = []
        while len(got) < 5:
            got += sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=2).get("Messages", [])
        assert sorted(m["Body"] for m in got) == [f"m{i}" for i in range(5)]
    finally:
        s.stop()

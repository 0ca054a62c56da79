"""The front door: AWS JSON 1.1 and awsQuery framing, errors, scoping."""

import json
import urllib.error
import urllib.request

import pytest
from botocore.exceptions import ClientError

from conftest import aws_cli, make_client, signed

TARGET = "AmazonEC2ContainerServiceV20141113."


def raw(server, target, body, content_type="application/x-amz-json-1.1", headers=None, sign=True, service="ecs"):
    """A request as built by hand, signed with the root's key unless `sign` is false."""
    h = {"Content-Type": content_type}
    if target:
        h["X-Amz-Target"] = target
    h.update(headers or {})
    if sign:
        req = signed("POST", server.url + "/", service=service, body=body, headers=h)
    else:
        req = urllib.request.Request(server.url + "/", data=body, method="POST", headers=h)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def test_error_shape_has_type_message_and_headers(server):
    status, headers, body = raw(server, TARGET + "DescribeTaskDefinition", b'{"taskDefinition":"nope:1"}')
    assert status == 400
    assert json.loads(body) == {"__type": "ClientException", "message": "Unable to describe task definition."}
    assert headers["X-Amzn-ErrorType"] == "ClientException"
    assert len(headers["x-amzn-RequestId"]) == 36
    assert headers["Content-Type"] == "application/x-amz-json-1.1"


def test_malformed_json_is_serialization_exception(server):
    status, headers, body = raw(server, TARGET + "ListClusters", b"{not json")
    assert status == 400
    assert json.loads(body)["__type"] == "SerializationException"


def test_wrong_member_type_names_the_member(server):
    status, _, body = raw(
        server, TARGET + "RegisterTaskDefinition",
        b'{"family":"f","containerDefinitions":[{"name":"a","image":"i","memory":"lots"}]}')
    assert status == 400
    err = json.loads(body)
    assert err["__type"] == "SerializationException"
    assert "containerDefinitions[0].memory" in err["message"]


def test_unknown_operation(server):
    status, headers, body = raw(server, TARGET + "MakeCoffee", b"{}")
    assert (status, json.loads(body)["__type"]) == (400, "UnknownOperationException")
    status, _, body = raw(server, "SomeOtherService.Op", b"{}")
    assert (status, json.loads(body)["__type"]) == (400, "UnknownOperationException")
    status, _, body = raw(server, None, b"{}")
    assert (status, json.loads(body)["__type"]) == (400, "UnknownOperationException")


def test_modeled_but_unimplemented_operation_says_so(server):
    status, _, body = raw(server, TARGET + "ExecuteCommand", b"{}")
    err = json.loads(body)
    assert status == 400 and err["__type"] == "UnknownOperationException"
    assert "ExecuteCommand" in err["message"]


def test_body_limit(server):
    status, _, body = raw(server, TARGET + "ListClusters", b'{"x":"' + b"a" * (2 * 1024 * 1024) + b'"}')
    assert status == 413
    assert json.loads(body)["__type"] == "RequestEntityTooLargeException"


def test_unknown_members_and_empty_body_are_accepted(server):
    status, _, body = raw(server, TARGET + "ListClusters", b'{"futureMember":{"a":[1,2]},"maxResults":5}')
    assert status == 200 and "clusterArns" in json.loads(body)
    status, _, body = raw(server, TARGET + "ListClusters", b"")
    assert status == 200


def test_timestamps_are_epoch_seconds(server, ecs, name):
    td = ecs.register_task_definition(family=name, containerDefinitions=[{"name": "a", "image": "i", "memory": 8}])
    status, _, body = raw(server, TARGET + "DescribeTaskDefinition", json.dumps({"taskDefinition": name}).encode())
    registered = json.loads(body)["taskDefinition"]["registeredAt"]
    assert isinstance(registered, (int, float)) and registered > 1.7e9
    assert td["taskDefinition"]["registeredAt"].year >= 2024


def test_request_id_reaches_botocore(ecs):
    resp = ecs.list_clusters()
    assert len(resp["ResponseMetadata"]["RequestId"]) == 36


def test_sigv4_region_scopes_resources(server, name):
    east = make_client(server.url, region="us-east-1")
    west = make_client(server.url, region="eu-west-1")
    west.create_cluster(clusterName=name)
    arn = west.describe_clusters(clusters=[name])["clusters"][0]["clusterArn"]
    assert arn == f"arn:aws:ecs:eu-west-1:000000000000:cluster/{name}"
    missing = east.describe_clusters(clusters=[name])
    assert missing["clusters"] == [] and missing["failures"][0]["reason"] == "MISSING"


def test_invalid_region_in_scope_is_rejected(server):
    auth = "AWS4-HMAC-SHA256 Credential=AK/20260101/../ecs/aws4_request, SignedHeaders=host, Signature=x"
    status, _, body = raw(server, TARGET + "ListClusters", b"{}", headers={"Authorization": auth}, sign=False)
    assert status == 400 and json.loads(body)["__type"] == "InvalidParameterException"


def test_sts_get_caller_identity_boto3_and_cli(server):
    sts = make_client(server.url, service="sts")
    ident = sts.get_caller_identity()
    assert ident["Account"] == "000000000000"
    assert ident["Arn"] == "arn:aws:iam::000000000000:root"
    assert aws_cli(server, "sts", "get-caller-identity")["Account"] == "000000000000"


def test_query_protocol_unknown_action(server):
    status, _, body = raw(server, None, b"Action=Nope&Version=2011-06-15", content_type="application/x-www-form-urlencoded",
                          service="sts")
    assert status == 400
    assert b"<Code>InvalidAction</Code>" in body and b"<Type>Sender</Type>" in body


def test_health_and_metrics(server, ecs):
    ecs.list_clusters()
    with urllib.request.urlopen(server.url + "/health") as r:
        assert json.loads(r.read()) == {"status": "ok", "auth": "iam"}
    with urllib.request.urlopen(server.url + "/metrics") as r:
        text = r.read().decode()
    assert 'berth_api_requests_total{service="ecs",operation="ListClusters",status="200"}' in text
    assert "berth_api_request_duration_seconds_bucket" in text


def test_client_error_surface_in_botocore(ecs):
    with pytest.raises(ClientError) as e:
        ecs.describe_task_definition(taskDefinition="does-not-exist")
    assert e.value.response["Error"]["Code"] == "ClientException"
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400

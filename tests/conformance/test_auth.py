"""Authentication at the front door with real clients: every request of
every service is signed (SigV4) by a known key, and each way of failing
gets AWS's error for the service's protocol."""

import datetime
import json
import os
import subprocess
import time
import urllib.error
import urllib.request

import boto3
import botocore.auth
import botocore.config
import pytest
from botocore.exceptions import ClientError

from conftest import AWS_ENV, ROOT, Server, aws_cli, make_client, signed

MISMATCH = ("The request signature we calculated does not match the signature you provided. "
            "Check your AWS Secret Access Key and signing method.")
INVALID_TOKEN = "The security token included in the request is invalid."


def client(server, service, key=None, secret=None, token=None):
    return boto3.client(service, endpoint_url=server.url, region_name="us-east-1",
                        aws_access_key_id=key or AWS_ENV["AWS_ACCESS_KEY_ID"],
                        aws_secret_access_key=secret or AWS_ENV["AWS_SECRET_ACCESS_KEY"],
                        aws_session_token=token,
                        config=botocore.config.Config(retries={"max_attempts": 1}))


def error_of(call):
    with pytest.raises(ClientError) as e:
        call()
    r = e.value.response
    return r["ResponseMetadata"]["HTTPStatusCode"], r["Error"]["Code"], r["Error"]["Message"]


def fetch(req):
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def test_the_root_key_works_and_the_caller_is_the_root(server):
    ident = client(server, "sts").get_caller_identity()
    assert ident["Arn"] == "arn:aws:iam::000000000000:root"
    assert ident["UserId"] == "000000000000" and ident["Account"] == "000000000000"
    assert aws_cli(server, "sts", "get-caller-identity")["Arn"] == ident["Arn"]


def test_a_wrong_secret_is_refused_in_each_protocols_words(server):
    bad = AWS_ENV["AWS_SECRET_ACCESS_KEY"][:-1] + "x"
    status, code, message = error_of(lambda: client(server, "ecs", secret=bad).list_clusters())
    assert (status, code) == (400, "InvalidSignatureException")
    assert message.startswith(MISMATCH)
    for service, call in [("sts", lambda c: c.get_caller_identity()),
                          ("elbv2", lambda c: c.describe_load_balancers())]:
        status, code, message = error_of(lambda: call(client(server, service, secret=bad)))
        assert (status, code) == (403, "SignatureDoesNotMatch"), service
        assert message.startswith(MISMATCH)
    p = aws_cli(server, "ecs", "list-clusters", check=False)
    assert p.returncode == 0
    env_bad = dict(os.environ, AWS_SECRET_ACCESS_KEY=bad)
    aws = os.path.join(os.path.dirname(__import__("sys").executable), "aws")
    p = subprocess.run([aws, "--endpoint-url", server.url, "ecs", "list-clusters"], capture_output=True,
                       text=True, env=env_bad, stdin=subprocess.DEVNULL)
    assert p.returncode != 0 and "InvalidSignatureException" in p.stderr


def test_an_unknown_key_is_refused(server):
    status, code, message = error_of(
        lambda: client(server, "ecs", key="AKIAUNKNOWNKEY000000").list_clusters())
    assert (status, code, message) == (400, "UnrecognizedClientException", INVALID_TOKEN)
    status, code, message = error_of(
        lambda: client(server, "sts", key="AKIAUNKNOWNKEY000000").get_caller_identity())
    assert (status, code, message) == (403, "InvalidClientTokenId", INVALID_TOKEN)


def test_a_session_token_on_a_long_term_key_is_refused(server):
    status, code, _ = error_of(lambda: client(server, "ecs", token="forged").list_clusters())
    assert (status, code) == (400, "UnrecognizedClientException")


def test_unsigned_requests_are_refused(server):
    body = b"{}"
    req = urllib.request.Request(server.url + "/", data=body, method="POST", headers={
        "X-Amz-Target": "AmazonEC2ContainerServiceV20141113.ListClusters",
        "Content-Type": "application/x-amz-json-1.1"})
    status, out = fetch(req)
    assert status == 403
    assert json.loads(out) == {"__type": "MissingAuthenticationTokenException", "message": "Missing Authentication Token"}
    req = urllib.request.Request(server.url + "/", data=b"Action=GetCallerIdentity&Version=2011-06-15",
                                 method="POST", headers={"Content-Type": "application/x-www-form-urlencoded"})
    status, out = fetch(req)
    assert status == 403 and b"<Code>MissingAuthenticationToken</Code>" in out
    # Berth's own routes too: billing, logs, the agent gateway.
    status, out = fetch(urllib.request.Request(server.url + "/berth/v1/billing"))
    assert status == 403 and json.loads(out)["__type"] == "MissingAuthenticationTokenException"
    status, _ = fetch(urllib.request.Request(server.url + "/agent/v1/connect"))
    assert status == 403


def test_a_broken_authorization_header_is_incomplete(server):
    for auth in ["AWS4-HMAC-SHA256 Credential=AKIA/20260101/us-east-1/ecs/aws4_request",
                 "AWS4-HMAC-SHA256 Credential AKIA"]:
        req = urllib.request.Request(server.url + "/", data=b"{}", method="POST", headers={
            "X-Amz-Target": "AmazonEC2ContainerServiceV20141113.ListClusters",
            "Content-Type": "application/x-amz-json-1.1", "Authorization": auth})
        status, out = fetch(req)
        assert status == 400 and json.loads(out)["__type"] == "IncompleteSignatureException", out


@pytest.mark.parametrize("minutes, words", [(-10, "Signature expired: "), (10, "Signature not yet current: ")])
def test_a_clock_five_minutes_off_is_refused(server, monkeypatch, minutes, words):
    real = botocore.auth.get_current_datetime
    monkeypatch.setattr(botocore.auth, "get_current_datetime",
                        lambda *a, **k: real(*a, **k) + datetime.timedelta(minutes=minutes))
    status, code, message = error_of(lambda: client(server, "ecs").list_clusters())
    assert (status, code) == (400, "InvalidSignatureException")
    assert message.startswith(words), message
    assert message.endswith(" - 5 min.)" if minutes < 0 else " + 5 min.)"), message
    status, code, _ = error_of(lambda: client(server, "sts").get_caller_identity())
    assert (status, code) == (403, "SignatureDoesNotMatch")


def test_a_scope_for_another_service_is_refused(server):
    req = signed("POST", server.url + "/", service="sts", body=b"{}", headers={
        "X-Amz-Target": "AmazonEC2ContainerServiceV20141113.ListClusters",
        "Content-Type": "application/x-amz-json-1.1"})
    status, out = fetch(req)
    assert status == 400
    assert json.loads(out) == {"__type": "InvalidSignatureException",
                               "message": "Credential should be scoped to correct service: 'ecs'. "}


def test_a_changed_body_or_signed_header_breaks_the_signature(server):
    req = signed("POST", server.url + "/", body=b'{"maxResults":1}', headers={
        "X-Amz-Target": "AmazonEC2ContainerServiceV20141113.ListClusters",
        "Content-Type": "application/x-amz-json-1.1"})
    tampered = urllib.request.Request(req.full_url, data=b'{"maxResults":2}', method="POST",
                                      headers=dict(req.header_items()))
    status, out = fetch(tampered)
    assert status == 400 and json.loads(out)["__type"] == "InvalidSignatureException"
    headers = dict(req.header_items())
    headers["X-amz-target"] = "AmazonEC2ContainerServiceV20141113.ListServices"
    status, out = fetch(urllib.request.Request(req.full_url, data=req.data, method="POST", headers=headers))
    assert status == 400 and json.loads(out)["__type"] == "InvalidSignatureException"
    status, _ = fetch(req)
    assert status == 200


def test_a_presigned_get_caller_identity_url(server):
    url = client(server, "sts").generate_presigned_url("get_caller_identity", ExpiresIn=60, HttpMethod="GET")
    assert "X-Amz-Signature=" in url
    status, out = fetch(urllib.request.Request(url))
    assert status == 200, out
    assert b"<Arn>arn:aws:iam::000000000000:root</Arn>" in out
    forged = url.replace("X-Amz-Expires=60", "X-Amz-Expires=61")
    status, out = fetch(urllib.request.Request(forged))
    assert status == 403 and b"<Code>SignatureDoesNotMatch</Code>" in out
    expiring = client(server, "sts").generate_presigned_url("get_caller_identity", ExpiresIn=1, HttpMethod="GET")
    time.sleep(2.1)
    status, out = fetch(urllib.request.Request(expiring))
    assert status == 403 and b"Request has expired" in out


def test_the_javascript_sdk_signs_ecs_and_sts(server, name):
    p = subprocess.run(["node", os.path.join(ROOT, "tests", "js", "ecs_sts.mjs"), name], capture_output=True,
                       text=True, env=dict(os.environ, BERTH_URL=server.url), stdin=subprocess.DEVNULL, timeout=60)
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert out["identity"] == {"ok": {"account": "000000000000", "arn": "arn:aws:iam::000000000000:root",
                                      "userId": "000000000000"}}
    assert out["created"]["ok"].endswith(f":cluster/{name}")
    assert out["described"] == {"ok": ["ACTIVE"]}
    assert out["badEcs"]["error"] == "InvalidSignatureException" and out["badEcs"]["status"] == 400
    assert out["badSts"]["error"] == "SignatureDoesNotMatch" and out["badSts"]["status"] == 403


def test_auth_off_is_explicit_and_says_so(tmp_path):
    s = Server(str(tmp_path), extra_env={"BERTH_AUTH": "off"}).start()
    try:
        with urllib.request.urlopen(s.url + "/health") as r:
            health = json.loads(r.read())
        assert health["auth"] == "off" and "anyone" in health["warning"]
        req = urllib.request.Request(s.url + "/", data=b"{}", method="POST", headers={
            "X-Amz-Target": "AmazonEC2ContainerServiceV20141113.ListClusters",
            "Content-Type": "application/x-amz-json-1.1"})
        assert fetch(req)[0] == 200
        assert "authentication is off" in open(s.log).read()
    finally:
        s.stop()


def test_first_start_makes_a_root_key_shown_once_and_kept_private(tmp_path):
    s = Server(str(tmp_path), extra_env={"BERTH_ROOT_ACCESS_KEY_ID": None, "BERTH_ROOT_SECRET_ACCESS_KEY": None,
                                         "BERTH_SECRETS_KEY_FILE": None}).start()
    try:
        creds = tmp_path / "root-credentials"
        assert oct(creds.stat().st_mode & 0o777) == "0o600"
        assert oct((tmp_path / "secrets.key").stat().st_mode & 0o777) == "0o600"
        text = creds.read_text()
        key = text.split("aws_access_key_id = ")[1].split()[0]
        secret = text.split("aws_secret_access_key = ")[1].split()[0]
        assert key.startswith("AKIA") and len(key) == 20 and len(secret) == 40
        log = open(s.log).read()
        assert log.count(secret) == 1, "the secret is printed once, at creation"
        for f in tmp_path.glob("berth.db*"):
            assert secret.encode() not in f.read_bytes(), f"the store keeps it sealed ({f.name})"
        assert client(s, "sts", key=key, secret=secret).get_caller_identity()["Arn"].endswith(":root")
        s.stop()
        s.start()
        assert open(s.log).read().count(secret) == 1, "a restart does not print it again"
        assert client(s, "sts", key=key, secret=secret).get_caller_identity()["Account"] == "000000000000"
        status, _, _ = error_of(lambda: client(s, "ecs").list_clusters())
        assert status == 400, "the tests' usual key is not this server's"
    finally:
        s.stop()

"""TLS: `berth cert` makes a self-signed pair, a server given it speaks
https:// and wss:// only, real clients trust it with AWS_CA_BUNDLE or
`verify`, agents with `--ca`, and policies see aws:SecureTransport."""

import http.client
import json
import os
import subprocess
import urllib.request
import uuid

import boto3
import botocore.config
import botocore.exceptions
import pytest

from conftest import (AWS_ENV, BERTH, IMAGE, Agent, Server, agents_connected, make_token, remove_containers,
                      wait_for)


@pytest.fixture(scope="module")
def tls(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tls")
    certs = tmp / "certs"
    p = subprocess.run([BERTH, "cert", "--name", "localhost,127.0.0.1", "--out-dir", str(certs)],
                       capture_output=True, text=True, stdin=subprocess.DEVNULL)
    assert p.returncode == 0, p.stderr
    cert, key = str(certs / "cert.pem"), str(certs / "key.pem")
    os.makedirs(tmp / "server")
    s = Server(str(tmp / "server"), extra_env={"BERTH_TLS_CERT": cert, "BERTH_TLS_KEY": key}).start()
    yield s, certs
    s.stop()


def client(server, service, verify, key=None, secret=None):
    return boto3.client(service, endpoint_url=server.url, region_name="us-east-1", verify=verify,
                        aws_access_key_id=key or AWS_ENV["AWS_ACCESS_KEY_ID"],
                        aws_secret_access_key=secret or AWS_ENV["AWS_SECRET_ACCESS_KEY"],
                        config=botocore.config.Config(retries={"max_attempts": 1}))


def test_berth_cert_keeps_the_key_private_and_overwrites_nothing(tls):
    _, certs = tls
    assert oct((certs / "key.pem").stat().st_mode & 0o777) == "0o600"
    assert "BEGIN CERTIFICATE" in (certs / "cert.pem").read_text()
    p = subprocess.run([BERTH, "cert", "--out-dir", str(certs)], capture_output=True, text=True,
                       stdin=subprocess.DEVNULL)
    assert p.returncode != 0 and "cert.pem" in p.stderr, p.stderr


def test_real_clients_speak_https_and_nothing_else(tls, name):
    server, certs = tls
    ca = str(certs / "cert.pem")
    ecs = client(server, "ecs", ca)
    assert ecs.create_cluster(clusterName=name)["cluster"]["status"] == "ACTIVE"
    env = dict(os.environ, AWS_CA_BUNDLE=ca)
    p = subprocess.run(["aws", "--endpoint-url", server.url, "ecs", "list-clusters", "--output", "json"],
                       capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL)
    assert p.returncode == 0 and name in p.stdout, p.stderr
    # Without the CA the certificate is not trusted...
    with pytest.raises(botocore.exceptions.SSLError):
        client(server, "ecs", True).list_clusters()
    # ...and plain HTTP on the TLS port gets no answer.
    with pytest.raises((OSError, http.client.HTTPException)):
        urllib.request.urlopen(server.url.replace("https://", "http://") + "/health", timeout=5).read()


def test_policies_see_secure_transport(tls, name):
    server, certs = tls
    ca = str(certs / "cert.pem")
    iam = client(server, "iam", ca)
    iam.create_user(UserName=name)
    # Allowed only over TLS: the request succeeds only if the server says it came so.
    iam.put_user_policy(UserName=name, PolicyName="tls-only", PolicyDocument=json.dumps({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "ecs:ListClusters", "Resource": "*",
                       "Condition": {"Bool": {"aws:SecureTransport": "true"}}}]}))
    k = iam.create_access_key(UserName=name)["AccessKey"]
    user = client(server, "ecs", ca, k["AccessKeyId"], k["SecretAccessKey"])
    wait_for("the new key", lambda: _lists(user))


def _lists(ecs):
    try:
        ecs.list_clusters()
        return True
    except botocore.exceptions.ClientError as e:
        if e.response["Error"]["Code"] == "AccessDeniedException":
            raise
        return False


def test_an_agent_joins_over_tls_with_its_ca_and_logs_come_back(tls, name, tmp_path, monkeypatch):
    server, certs = tls
    ca = str(certs / "cert.pem")
    ecs = client(server, "ecs", ca)
    ecs.create_cluster(clusterName=name)
    monkeypatch.setenv("AWS_CA_BUNDLE", ca)
    tokens = [make_token(server, "--cluster", name) for _ in range(2)]
    # The agents trust only what they are told to: --ca, or nothing.
    monkeypatch.delenv("AWS_CA_BUNDLE")
    trusting = Agent(server, name, str(tmp_path / "a"), "i-" + uuid.uuid4().hex[:17], token=tokens[0],
                     extra=["--ca", ca]).start()
    stranger = Agent(server, name, str(tmp_path / "b"), "i-" + uuid.uuid4().hex[:17], token=tokens[1]).start()
    try:
        wait_for("the agent to connect over wss", lambda: agents_connected(ecs, name, 1))
        wait_for("the agent without the CA to fail",
                 lambda: "invalid peer certificate" in open(stranger.log).read())
        assert len(ecs.list_container_instances(cluster=name)["containerInstanceArns"]) == 1
        ecs.register_task_definition(family=name, containerDefinitions=[
            {"name": "c", "image": IMAGE, "memory": 16, "stopTimeout": 1,
             "command": ["sh", "-c", "echo over tls; exec sleep 600"]}])
        t = ecs.run_task(cluster=name, taskDefinition=name)["tasks"][0]["taskArn"]

        def logs():
            p = subprocess.run([BERTH, "logs", t, "--cluster", name, "--server", server.url],
                               capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL,
                               env=dict(os.environ, AWS_CA_BUNDLE=ca))
            return "c | over tls" in p.stdout
        wait_for("the logs over https", logs)
        ecs.stop_task(cluster=name, task=t)
    finally:
        trusting.stop()
        stranger.stop()
        remove_containers(name)

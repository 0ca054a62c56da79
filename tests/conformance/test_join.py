"""Authenticated agents: hosts join with join tokens (`berth token`), get
credentials of their own bound to one host of one cluster, and only a
Fargate-pool token puts a host into the hidden Fargate pool."""

import json
import os
import subprocess
import time
import urllib.error
import urllib.request
import uuid

import pytest
from botocore.exceptions import ClientError

from conftest import BERTH, Agent, agents_connected, make_token, remove_containers, signed, wait_for

POOL = "berth.fargate"


def join(server, token, cluster, instance):
    req = urllib.request.Request(server.url + "/berth/v1/join", method="POST",
                                 data=json.dumps({"token": token, "cluster": cluster,
                                                  "instanceId": instance}).encode(),
                                 headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def host_client(server, creds, service="ecs"):
    import boto3
    import botocore.config
    return boto3.client(service, endpoint_url=server.url, region_name="us-east-1",
                        aws_access_key_id=creds["accessKeyId"],
                        aws_secret_access_key=creds["secretAccessKey"],
                        config=botocore.config.Config(retries={"max_attempts": 1}))


def error_of(call):
    with pytest.raises(ClientError) as e:
        call()
    return e.value.response["Error"]["Code"], e.value.response["Error"]["Message"]


def berth_token(server, *args):
    return subprocess.run([BERTH, "token", *args, "--server", server.url],
                          capture_output=True, text=True, stdin=subprocess.DEVNULL)


def registration(instance_id, cluster):
    return dict(cluster=cluster,
                instanceIdentityDocument=json.dumps({"instanceId": instance_id}),
                totalResources=[{"name": "CPU", "type": "INTEGER", "integerValue": 1024},
                                {"name": "MEMORY", "type": "INTEGER", "integerValue": 1024}])


def test_bad_expired_and_revoked_tokens_are_refused_and_change_nothing(server, ecs, name, tmp_path):
    ecs.create_cluster(clusterName=name)
    iid = "i-" + uuid.uuid4().hex[:17]
    status, body = join(server, "not-a-token", name, iid)
    assert status == 400 or status == 403, body
    assert "malformed" in body["message"]
    status, body = join(server, "abcdef.0123456789abcdef0123456789abcdef", name, iid)
    assert (status, body["__type"]) == (403, "AccessDeniedException") and "not valid" in body["message"]

    short = make_token(server, "--cluster", name, expires_in=1)
    time.sleep(1.2)
    status, body = join(server, short, name, iid)
    assert status == 403 and "has expired" in body["message"], body

    revoked = make_token(server, "--cluster", name)
    p = berth_token(server, "revoke", revoked.split(".")[0])
    assert p.returncode == 0, p.stderr
    status, body = join(server, revoked, name, iid)
    assert status == 403 and "has been revoked" in body["message"], body

    # The listing shows each token's state, never a secret.
    p = berth_token(server, "ls", "--json")
    listed = {t["id"]: t for t in json.loads(p.stdout)["tokens"]}
    assert listed[short.split(".")[0]]["status"] == "expired"
    assert listed[revoked.split(".")[0]]["status"] == "revoked"
    assert revoked.split(".")[1] not in p.stdout
    assert ecs.list_container_instances(cluster=name)["containerInstanceArns"] == []

    # A real agent with the revoked token says why and stops, registering nothing.
    agent = Agent(server, name, str(tmp_path / "agent"), iid, token=revoked).start()
    try:
        assert agent.proc.wait(timeout=30) != 0
        assert "has been revoked" in open(agent.log).read()
    finally:
        agent.stop()
    assert ecs.list_container_instances(cluster=name)["containerInstanceArns"] == []


def test_a_token_for_a_missing_cluster_or_a_bad_lifetime_is_refused(server, name):
    p = berth_token(server, "create", "--cluster", name)
    assert p.returncode != 0 and "ClusterNotFoundException" in p.stderr
    p = berth_token(server, "create", "--capacity", "fargate", "--expires-in", "0")
    assert p.returncode != 0 and "expiresIn" in p.stderr


def test_a_hosts_credentials_register_only_itself_in_its_own_cluster(server, ecs, name):
    ecs.create_cluster(clusterName=name)
    ecs.create_cluster(clusterName=name + "-other")
    iid = "i-" + uuid.uuid4().hex[:17]
    token = make_token(server, "--cluster", name)
    status, creds = join(server, token, name, iid)
    assert status == 200, creds
    listed = {t["id"]: t for t in json.loads(berth_token(server, "ls", "--json").stdout)["tokens"]}
    assert listed[token.split(".")[0]]["uses"] == 1 and listed[token.split(".")[0]]["cluster"] == name
    host = host_client(server, creds)
    who = host_client(server, creds, "sts").get_caller_identity()
    assert who["Arn"] == f"arn:aws:sts::000000000000:assumed-role/berth-container-instance/{iid}"

    code, message = error_of(lambda: host.register_container_instance(**registration("i-someoneelse", name)))
    assert code == "AccessDeniedException" and "cannot register as i-someoneelse" in message
    code, _ = error_of(lambda: host.register_container_instance(**registration(iid, name + "-other")))
    assert code == "AccessDeniedException"
    code, message = error_of(lambda: host.list_clusters())
    assert code == "AccessDeniedException" and "ecs:ListClusters" in message
    code, _ = error_of(lambda: host.run_task(cluster=name, taskDefinition="x"))
    assert code == "AccessDeniedException"
    assert ecs.list_container_instances(cluster=name)["containerInstanceArns"] == []

    arn = host.register_container_instance(**registration(iid, name))["containerInstance"]["containerInstanceArn"]
    assert ecs.describe_container_instances(cluster=name, containerInstances=[arn])[
        "containerInstances"][0]["ec2InstanceId"] == iid

    # Joining again replaces the host's key: the old one stops working.
    status, again = join(server, make_token(server, "--cluster", name), name, iid)
    assert status == 200
    code, _ = error_of(lambda: host_client(server, creds, "sts").get_caller_identity())
    assert code == "InvalidClientTokenId"
    assert host_client(server, again, "sts").get_caller_identity()["Arn"] == who["Arn"]


def test_only_a_pool_token_joins_the_fargate_pool(server, ecs, name):
    ecs.create_cluster(clusterName=name)
    iid = "i-" + uuid.uuid4().hex[:17]
    # Not even the account root can put a host into the pool.
    code, message = error_of(lambda: ecs.register_container_instance(**registration(iid, POOL)))
    assert code == "AccessDeniedException" and "Fargate capacity token" in message
    # A cluster's token does not open the pool...
    status, body = join(server, make_token(server, "--cluster", name), POOL, iid)
    assert status == 403 and f"is for {name}, not {POOL}" in body["message"]
    # ...and a cluster's host cannot register there.
    status, creds = join(server, make_token(server, "--cluster", name), name, iid)
    code, _ = error_of(lambda: host_client(server, creds).register_container_instance(**registration(iid, POOL)))
    assert code == "AccessDeniedException"
    # A pool token does.
    status, creds = join(server, make_token(server, "--capacity", "fargate"), POOL, iid + "p")
    assert status == 200, creds
    got = host_client(server, creds).register_container_instance(**registration(iid + "p", POOL))
    assert got["containerInstance"]["containerInstanceArn"]


def test_the_gateway_takes_only_a_joined_host_and_only_as_itself(server, ecs, name, tmp_path):
    ecs.create_cluster(clusterName=name)
    upgrade = {"connection": "Upgrade", "upgrade": "websocket", "sec-websocket-version": "13",
               "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ=="}
    try:
        with urllib.request.urlopen(signed("GET", server.url + "/agent/v1/connect", headers=upgrade), timeout=10) as r:
            status, body = r.status, r.read()
    except urllib.error.HTTPError as e:
        status, body = e.code, e.read()
    assert status == 403 and b"not a container instance" in body, body

    # A real agent joins and connects; its instance is the one its key names.
    agent = Agent(server, name, str(tmp_path / "agent"), "i-" + uuid.uuid4().hex[:17]).start()
    try:
        up = wait_for("the agent to connect", lambda: agents_connected(ecs, name, 1))
        assert up[0]["ec2InstanceId"] == agent.instance_id
        mode = os.stat(os.path.join(agent.data_dir, "credentials.json")).st_mode & 0o777
        assert mode == 0o600
    finally:
        agent.stop()
        remove_containers(name)

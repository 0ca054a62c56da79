"""IAM with real clients: users, access keys, managed and inline policies,
and policies that bite: every request of a user is authorized against its
policies with the action and resource AWS names."""

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request

import boto3
import botocore.config
import pytest
from botocore.exceptions import ClientError

from conftest import aws_cli, signed, wait_for

ACCOUNT = "000000000000"


def client(server, service, key=None, secret=None):
    kw = {}
    if key:
        kw = dict(aws_access_key_id=key, aws_secret_access_key=secret)
    else:
        from conftest import AWS_ENV
        kw = dict(aws_access_key_id=AWS_ENV["AWS_ACCESS_KEY_ID"], aws_secret_access_key=AWS_ENV["AWS_SECRET_ACCESS_KEY"])
    return boto3.client(service, endpoint_url=server.url, region_name="us-east-1",
                        config=botocore.config.Config(retries={"max_attempts": 1}), **kw)


def error_of(call, *a, **kw):
    with pytest.raises(ClientError) as e:
        call(*a, **kw)
    r = e.value.response
    return r["ResponseMetadata"]["HTTPStatusCode"], r["Error"]["Code"], r["Error"]["Message"]


def user_with(server, iam, name, managed=(), inline=None):
    iam.create_user(UserName=name)
    for arn in managed:
        iam.attach_user_policy(UserName=name, PolicyArn=arn)
    if inline:
        iam.put_user_policy(UserName=name, PolicyName="inline", PolicyDocument=json.dumps(inline))
    k = iam.create_access_key(UserName=name)["AccessKey"]
    return k["AccessKeyId"], k["SecretAccessKey"]


def allow(actions, resource="*", condition=None, effect="Allow"):
    s = {"Effect": effect, "Action": actions, "Resource": resource}
    if condition:
        s["Condition"] = condition
    return {"Version": "2012-10-17", "Statement": [s]}


def test_users_keys_and_their_errors(server, name):
    iam = client(server, "iam")
    u = iam.create_user(UserName=name, Path="/team/", Tags=[{"Key": "team", "Value": "a"}])["User"]
    assert u["Arn"] == f"arn:aws:iam::{ACCOUNT}:user/team/{name}" and u["UserId"].startswith("AIDA")
    assert error_of(iam.create_user, UserName=name)[:2] == (409, "EntityAlreadyExists")
    assert error_of(iam.create_user, UserName=name.upper())[:2] == (409, "EntityAlreadyExists")
    assert error_of(iam.get_user, UserName="nobody-" + name)[:2] == (404, "NoSuchEntity")
    status, code, message = error_of(iam.create_user, UserName="bad name")
    assert (status, code) == (400, "ValidationError") and "userName" in message
    assert iam.get_user(UserName=name)["User"]["Tags"] == [{"Key": "team", "Value": "a"}]
    assert name in [x["UserName"] for x in iam.list_users(PathPrefix="/team/")["Users"]]
    keys = [iam.create_access_key(UserName=name)["AccessKey"] for _ in range(2)]
    assert all(k["AccessKeyId"].startswith("AKIA") and len(k["SecretAccessKey"]) == 40 for k in keys)
    assert error_of(iam.create_access_key, UserName=name)[:2] == (409, "LimitExceeded")
    listed = iam.list_access_keys(UserName=name)["AccessKeyMetadata"]
    assert sorted(k["AccessKeyId"] for k in listed) == sorted(k["AccessKeyId"] for k in keys)
    assert error_of(iam.delete_user, UserName=name)[:2] == (409, "DeleteConflict")
    me = client(server, "sts", keys[0]["AccessKeyId"], keys[0]["SecretAccessKey"]).get_caller_identity()
    assert me["Arn"] == u["Arn"] and me["UserId"] == u["UserId"]
    # A deactivated key stops working at once; a deleted one is gone.
    iam.update_access_key(UserName=name, AccessKeyId=keys[0]["AccessKeyId"], Status="Inactive")
    sts = client(server, "sts", keys[0]["AccessKeyId"], keys[0]["SecretAccessKey"])
    wait_for("the key to stop working", lambda: _refused(sts), timeout=5)
    assert error_of(sts.get_caller_identity)[:2] == (403, "InvalidClientTokenId")
    for k in keys:
        iam.delete_access_key(UserName=name, AccessKeyId=k["AccessKeyId"])
    assert error_of(iam.delete_access_key, UserName=name, AccessKeyId=keys[0]["AccessKeyId"])[:2] == (404, "NoSuchEntity")
    iam.delete_user(UserName=name)
    assert error_of(iam.get_user, UserName=name)[:2] == (404, "NoSuchEntity")


def _refused(sts):
    try:
        sts.get_caller_identity()
        return False
    except ClientError:
        return True


def test_managed_policies_with_versions(server, name):
    iam = client(server, "iam")
    doc = allow("ecs:List*")
    p = iam.create_policy(PolicyName=name, PolicyDocument=json.dumps(doc), Description="lists")["Policy"]
    arn = p["Arn"]
    assert arn == f"arn:aws:iam::{ACCOUNT}:policy/{name}" and p["DefaultVersionId"] == "v1"
    assert iam.get_policy_version(PolicyArn=arn, VersionId="v1")["PolicyVersion"]["Document"] == doc
    v2 = iam.create_policy_version(PolicyArn=arn, PolicyDocument=json.dumps(allow("ecs:Describe*")), SetAsDefault=True)
    assert v2["PolicyVersion"]["VersionId"] == "v2" and v2["PolicyVersion"]["IsDefaultVersion"]
    assert iam.get_policy(PolicyArn=arn)["Policy"]["DefaultVersionId"] == "v2"
    assert error_of(iam.delete_policy_version, PolicyArn=arn, VersionId="v2")[:2] == (409, "DeleteConflict")
    iam.set_default_policy_version(PolicyArn=arn, VersionId="v1")
    iam.delete_policy_version(PolicyArn=arn, VersionId="v2")
    assert [v["VersionId"] for v in iam.list_policy_versions(PolicyArn=arn)["Versions"]] == ["v1"]
    for i in range(4):
        iam.create_policy_version(PolicyArn=arn, PolicyDocument=json.dumps(doc))
    assert error_of(iam.create_policy_version, PolicyArn=arn, PolicyDocument=json.dumps(doc))[:2] == (409, "LimitExceeded")
    status, code, message = error_of(iam.create_policy, PolicyName=name + "x",
                                     PolicyDocument='{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"ecs:*"}]}')
    assert (status, code, message) == (400, "MalformedPolicyDocument", "Policy statement must contain resources.")
    status, code, message = error_of(iam.create_policy, PolicyName=name + "x", PolicyDocument='{"Version": "2012-10-17",')
    assert code == "MalformedPolicyDocument" and "line 1, column" in message
    assert error_of(iam.get_policy, PolicyArn=arn + "nope")[:2] == (404, "NoSuchEntity")
    ecs_full = "arn:aws:iam::aws:policy/AmazonECS_FullAccess"
    assert iam.get_policy(PolicyArn=ecs_full)["Policy"]["PolicyName"] == "AmazonECS_FullAccess"
    aws_names = [p["PolicyName"] for p in iam.list_policies(Scope="AWS")["Policies"]]
    for n in ["AdministratorAccess", "ReadOnlyAccess", "AmazonECS_FullAccess", "AmazonECSTaskExecutionRolePolicy",
              "AmazonEC2ContainerServiceforEC2Role", "AmazonEC2ContainerServiceAutoscaleRole"]:
        assert n in aws_names
    iam.create_user(UserName=name)
    iam.attach_user_policy(UserName=name, PolicyArn=arn)
    assert iam.get_policy(PolicyArn=arn)["Policy"]["AttachmentCount"] == 1
    assert error_of(iam.delete_policy, PolicyArn=arn)[:2] == (409, "DeleteConflict")
    attached = iam.list_attached_user_policies(UserName=name)["AttachedPolicies"]
    assert attached == [{"PolicyName": name, "PolicyArn": arn}]
    iam.detach_user_policy(UserName=name, PolicyArn=arn)
    for v in iam.list_policy_versions(PolicyArn=arn)["Versions"]:
        if not v["IsDefaultVersion"]:
            iam.delete_policy_version(PolicyArn=arn, VersionId=v["VersionId"])
    iam.delete_policy(PolicyArn=arn)
    iam.delete_user(UserName=name)


def test_a_read_only_user_can_describe_but_not_run(server, ecs, name):
    ecs.create_cluster(clusterName=name)
    iam = client(server, "iam")
    key, secret = user_with(server, iam, name, managed=["arn:aws:iam::aws:policy/ReadOnlyAccess"])
    mine = client(server, "ecs", key, secret)
    assert mine.describe_clusters(clusters=[name])["clusters"][0]["status"] == "ACTIVE"
    assert mine.list_task_definitions()["taskDefinitionArns"] is not None
    status, code, message = error_of(mine.create_cluster, clusterName=name + "x")
    assert (status, code) == (400, "AccessDeniedException")
    assert message == (f"User: arn:aws:iam::{ACCOUNT}:user/{name} is not authorized to perform: ecs:CreateCluster on resource: "
                       f"arn:aws:ecs:us-east-1:{ACCOUNT}:cluster/{name}x because no identity-based policy allows the ecs:CreateCluster action")
    status, code, _ = error_of(mine.run_task, cluster=name, taskDefinition="nope")
    assert code == "AccessDeniedException"
    assert ecs.describe_clusters(clusters=[name + "x"])["clusters"] == [], "a refused request changes nothing"
    status, code, message = error_of(client(server, "iam", key, secret).create_user, UserName=name + "y")
    assert (status, code) == (403, "AccessDenied") and "iam:CreateUser" in message
    assert client(server, "elbv2", key, secret).describe_load_balancers()["LoadBalancers"] is not None
    assert client(server, "iam", key, secret).get_user()["User"]["UserName"] == name, "GetUser without a name: the caller"
    # The aws CLI with the user's key sees the same refusal.
    env = dict(os.environ, AWS_ACCESS_KEY_ID=key, AWS_SECRET_ACCESS_KEY=secret)
    aws = os.path.join(os.path.dirname(sys.executable), "aws")
    p = subprocess.run([aws, "--endpoint-url", server.url, "ecs", "create-cluster", "--cluster-name", name + "z"],
                       capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL)
    assert p.returncode != 0 and "AccessDeniedException" in p.stderr
    assert aws_cli(server, "iam", "list-users")["Users"], "the root (the suite's key) is never refused"


def test_an_explicit_deny_beats_an_admin_allow(server, name):
    iam = client(server, "iam")
    key, secret = user_with(server, iam, name, managed=["arn:aws:iam::aws:policy/AdministratorAccess"],
                            inline=allow("ecs:DeleteCluster", effect="Deny"))
    mine = client(server, "ecs", key, secret)
    mine.create_cluster(clusterName=name)
    status, code, message = error_of(mine.delete_cluster, cluster=name)
    assert code == "AccessDeniedException"
    assert message.endswith("with an explicit deny in an identity-based policy")
    assert client(server, "ecs").describe_clusters(clusters=[name])["clusters"][0]["status"] == "ACTIVE"
    # Taking the deny away lets it through (policies are re-read at once).
    iam.delete_user_policy(UserName=name, PolicyName="inline")
    wait_for("the deny to be gone", lambda: _deletes(mine, name), timeout=5)


def _deletes(ecs, cluster):
    try:
        ecs.delete_cluster(cluster=cluster)
        return True
    except ClientError:
        return False


def test_a_condition_on_ecs_cluster_limits_a_user_to_one_cluster(server, ecs, name):
    ecs.create_cluster(clusterName=name)
    ecs.create_cluster(clusterName=name + "-other")
    cluster_arn = f"arn:aws:ecs:us-east-1:{ACCOUNT}:cluster/{name}"
    policy = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": ["ecs:ListTasks", "ecs:ListServices", "ecs:ListContainerInstances"], "Resource": "*",
         "Condition": {"ArnEquals": {"ecs:cluster": cluster_arn}}},
        {"Effect": "Allow", "Action": "ecs:DescribeClusters", "Resource": cluster_arn}]}
    key, secret = user_with(server, client(server, "iam"), name, inline=policy)
    mine = client(server, "ecs", key, secret)
    assert mine.list_tasks(cluster=name)["taskArns"] == []
    assert mine.list_services(cluster=cluster_arn)["serviceArns"] == []
    assert mine.describe_clusters(clusters=[name])["clusters"][0]["clusterName"] == name
    for call in (lambda: mine.list_tasks(cluster=name + "-other"),
                 lambda: mine.describe_clusters(clusters=[name + "-other"]),
                 lambda: mine.describe_clusters(clusters=[name, name + "-other"])):
        assert error_of(call)[1] == "AccessDeniedException"


def test_a_groups_policies_apply_to_its_members(server, ecs, name):
    iam = client(server, "iam")
    g = iam.create_group(GroupName=name)["Group"]
    assert g["Arn"] == f"arn:aws:iam::{ACCOUNT}:group/{name}" and g["GroupId"].startswith("AGPA")
    assert error_of(iam.create_group, GroupName=name)[:2] == (409, "EntityAlreadyExists")
    iam.attach_group_policy(GroupName=name, PolicyArn="arn:aws:iam::aws:policy/ReadOnlyAccess")
    iam.put_group_policy(GroupName=name, PolicyName="no-iam", PolicyDocument=json.dumps(allow("iam:*", effect="Deny")))
    key, secret = user_with(server, iam, name)
    mine = client(server, "ecs", key, secret)
    assert error_of(mine.list_clusters)[1] == "AccessDeniedException", "no policy yet"
    iam.add_user_to_group(GroupName=name, UserName=name)
    assert [u["UserName"] for u in iam.get_group(GroupName=name)["Users"]] == [name]
    assert [x["GroupName"] for x in iam.list_groups_for_user(UserName=name)["Groups"]] == [name]
    wait_for("the group's policy to apply", lambda: _lists(mine), timeout=5)
    status, code, message = error_of(client(server, "iam", key, secret).get_user)
    assert (status, code) == (403, "AccessDenied") and message.endswith("with an explicit deny in an identity-based policy")
    assert iam.get_group_policy(GroupName=name, PolicyName="no-iam")["PolicyDocument"]["Statement"][0]["Effect"] == "Deny"
    assert error_of(iam.delete_group, GroupName=name)[:2] == (409, "DeleteConflict")
    iam.remove_user_from_group(GroupName=name, UserName=name)
    wait_for("the group's policy to stop applying", lambda: not _lists(mine), timeout=5)
    iam.detach_group_policy(GroupName=name, PolicyArn="arn:aws:iam::aws:policy/ReadOnlyAccess")
    iam.delete_group_policy(GroupName=name, PolicyName="no-iam")
    iam.delete_group(GroupName=name)
    assert error_of(iam.get_group, GroupName=name)[:2] == (404, "NoSuchEntity")


def _lists(ecs):
    try:
        ecs.list_clusters()
        return True
    except ClientError:
        return False


TRUST_ECS_TASKS = {"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Principal": {"Service": "ecs-tasks.amazonaws.com"}, "Action": "sts:AssumeRole"}]}


def test_roles_with_trust_policies(server, name):
    iam = client(server, "iam")
    r = iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(TRUST_ECS_TASKS), Description="task role",
                        Tags=[{"Key": "app", "Value": "web"}])["Role"]
    assert r["Arn"] == f"arn:aws:iam::{ACCOUNT}:role/{name}" and r["RoleId"].startswith("AROA")
    assert r["AssumeRolePolicyDocument"] == TRUST_ECS_TASKS and r["MaxSessionDuration"] == 3600
    assert error_of(iam.create_role, RoleName=name, AssumeRolePolicyDocument=json.dumps(TRUST_ECS_TASKS))[:2] == \
        (409, "EntityAlreadyExists")
    unknown = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:user/nobody-{name}"}, "Action": "sts:AssumeRole"}]}
    status, code, message = error_of(iam.create_role, RoleName=name + "x", AssumeRolePolicyDocument=json.dumps(unknown))
    assert (status, code) == (400, "MalformedPolicyDocument") and message.startswith("Invalid principal in policy")
    with_resource = dict(TRUST_ECS_TASKS, Statement=[dict(TRUST_ECS_TASKS["Statement"][0], Resource="*")])
    assert error_of(iam.create_role, RoleName=name + "x", AssumeRolePolicyDocument=json.dumps(with_resource))[2] == \
        "Has prohibited field Resource"
    # Clients check the bound too; the server checks it for those that do not.
    form = f"Action=UpdateRole&Version=2010-05-08&RoleName={name}&MaxSessionDuration=60".encode()
    req = signed("POST", server.url + "/", service="iam", body=form,
                 headers={"Content-Type": "application/x-www-form-urlencoded"})
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=10)
    assert e.value.code == 400 and b"<Code>ValidationError</Code>" in e.value.read()
    iam.update_role(RoleName=name, MaxSessionDuration=7200)
    assert iam.get_role(RoleName=name)["Role"]["MaxSessionDuration"] == 7200
    iam.attach_role_policy(RoleName=name, PolicyArn="arn:aws:iam::aws:policy/service-role/AmazonECSTaskExecutionRolePolicy")
    iam.put_role_policy(RoleName=name, PolicyName="logs", PolicyDocument=json.dumps(allow("logs:*")))
    assert iam.list_role_policies(RoleName=name)["PolicyNames"] == ["logs"]
    assert error_of(iam.delete_role, RoleName=name)[:2] == (409, "DeleteConflict")
    assert iam.list_instance_profiles_for_role(RoleName=name)["InstanceProfiles"] == []
    assert name in [x["RoleName"] for x in iam.list_roles()["Roles"]]
    iam.delete_role_policy(RoleName=name, PolicyName="logs")
    iam.detach_role_policy(RoleName=name, PolicyArn="arn:aws:iam::aws:policy/service-role/AmazonECSTaskExecutionRolePolicy")
    iam.delete_role(RoleName=name)
    assert error_of(iam.get_role, RoleName=name)[:2] == (404, "NoSuchEntity")


def test_assume_role_then_act_with_its_temporary_credentials(server, ecs, name):
    iam = client(server, "iam")
    ecs.create_cluster(clusterName=name)
    key, secret = user_with(server, iam, name, inline=allow("sts:AssumeRole", f"arn:aws:iam::{ACCOUNT}:role/{name}-*"))
    trust = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:user/{name}"}, "Action": "sts:AssumeRole"}]}
    role = iam.create_role(RoleName=name + "-ops", AssumeRolePolicyDocument=json.dumps(trust),
                           MaxSessionDuration=7200)["Role"]
    iam.put_role_policy(RoleName=name + "-ops", PolicyName="ecs", PolicyDocument=json.dumps(allow(["ecs:Describe*", "ecs:List*"])))
    other = iam.create_role(RoleName=name + "-other", AssumeRolePolicyDocument=json.dumps(TRUST_ECS_TASKS))["Role"]

    sts = client(server, "sts", key, secret)
    got = sts.assume_role(RoleArn=role["Arn"], RoleSessionName="s1", DurationSeconds=900)
    c = got["Credentials"]
    assert c["AccessKeyId"].startswith("ASIA") and c["SessionToken"]
    assert got["AssumedRoleUser"] == {"AssumedRoleId": f"{role['RoleId']}:s1",
                                      "Arn": f"arn:aws:sts::{ACCOUNT}:assumed-role/{name}-ops/s1"}
    session = boto3.Session(aws_access_key_id=c["AccessKeyId"], aws_secret_access_key=c["SecretAccessKey"],
                            aws_session_token=c["SessionToken"], region_name="us-east-1")
    cfg = botocore.config.Config(retries={"max_attempts": 1})
    as_role = session.client("ecs", endpoint_url=server.url, config=cfg)
    assert as_role.describe_clusters(clusters=[name])["clusters"][0]["status"] == "ACTIVE"
    status, code, message = error_of(as_role.delete_cluster, cluster=name)
    assert code == "AccessDeniedException" and message.startswith(
        f"User: arn:aws:sts::{ACCOUNT}:assumed-role/{name}-ops/s1 is not authorized to perform: ecs:DeleteCluster")
    ident = session.client("sts", endpoint_url=server.url, config=cfg).get_caller_identity()
    assert ident["Arn"] == f"arn:aws:sts::{ACCOUNT}:assumed-role/{name}-ops/s1"
    # A wrong session token, or none, is not these credentials.
    forged = boto3.client("ecs", endpoint_url=server.url, region_name="us-east-1", config=cfg,
                          aws_access_key_id=c["AccessKeyId"], aws_secret_access_key=c["SecretAccessKey"],
                          aws_session_token=c["SessionToken"][:-1] + "x")
    assert error_of(forged.list_clusters)[1] == "UnrecognizedClientException"

    # The trust policy decides, and so does the caller's permission.
    status, code, message = error_of(sts.assume_role, RoleArn=other["Arn"], RoleSessionName="s2")
    assert (status, code) == (403, "AccessDenied")
    assert message == f"User: arn:aws:iam::{ACCOUNT}:user/{name} is not authorized to perform: sts:AssumeRole on resource: {other['Arn']}"
    assert error_of(sts.assume_role, RoleArn=role["Arn"], RoleSessionName="s3", DurationSeconds=10800)[1] == "ValidationError"

    # A session policy narrows what the role may do.
    narrow = sts.assume_role(RoleArn=role["Arn"], RoleSessionName="s4",
                             Policy=json.dumps(allow("ecs:ListClusters")))
    assert 0 < narrow["PackedPolicySize"] <= 100
    n = narrow["Credentials"]
    as_narrow = boto3.client("ecs", endpoint_url=server.url, region_name="us-east-1", config=cfg,
                             aws_access_key_id=n["AccessKeyId"], aws_secret_access_key=n["SecretAccessKey"],
                             aws_session_token=n["SessionToken"])
    assert as_narrow.list_clusters()["clusterArns"]
    assert error_of(as_narrow.describe_clusters, clusters=[name])[1] == "AccessDeniedException"

    # GetSessionToken: the caller's own permissions, for a while.
    own = sts.get_session_token(DurationSeconds=900)["Credentials"]
    as_self = boto3.client("sts", endpoint_url=server.url, region_name="us-east-1", config=cfg,
                           aws_access_key_id=own["AccessKeyId"], aws_secret_access_key=own["SecretAccessKey"],
                           aws_session_token=own["SessionToken"])
    assert as_self.get_caller_identity()["Arn"] == f"arn:aws:iam::{ACCOUNT}:user/{name}"
    assert error_of(as_self.get_session_token)[1] == "AccessDenied"



def test_pass_role_is_checked_when_a_launch_hands_a_role_to_ecs(server, ecs, name):
    iam = client(server, "iam")
    ecs.create_cluster(clusterName=name)
    role = iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(TRUST_ECS_TASKS))["Role"]
    ecs.register_task_definition(family=name, taskRoleArn=role["Arn"],
                                 containerDefinitions=[{"name": "c", "image": "busybox", "memory": 16}])
    key, secret = user_with(server, iam, name, inline=allow("ecs:*"))
    mine = client(server, "ecs", key, secret)
    status, code, message = error_of(mine.run_task, cluster=name, taskDefinition=name)
    assert code == "AccessDeniedException"
    assert message == (f"User: arn:aws:iam::{ACCOUNT}:user/{name} is not authorized to perform: iam:PassRole on resource: "
                       f"{role['Arn']} because no identity-based policy allows the iam:PassRole action")
    status, code, _ = error_of(mine.create_service, cluster=name, serviceName=name, taskDefinition=name, desiredCount=0)
    assert code == "AccessDeniedException"
    assert client(server, "ecs").list_services(cluster=name)["serviceArns"] == [], "a refused request changes nothing"
    # AmazonECS_FullAccess lets a user pass roles to ECS's tasks.
    iam.attach_user_policy(UserName=name, PolicyArn="arn:aws:iam::aws:policy/AmazonECS_FullAccess")
    wait_for("PassRole to be allowed", lambda: _creates_service(mine, name), timeout=5)
    # An override names its own role, which is checked instead.
    other = f"arn:aws:iam::{ACCOUNT}:role/{name}-other"
    iam.detach_user_policy(UserName=name, PolicyArn="arn:aws:iam::aws:policy/AmazonECS_FullAccess")
    iam.put_user_policy(UserName=name, PolicyName="pass", PolicyDocument=json.dumps(
        {"Version": "2012-10-17", "Statement": [allow("ecs:*")["Statement"][0],
                                                 allow("iam:PassRole", role["Arn"])["Statement"][0]]}))
    wait_for("the narrower policy", lambda: _refused_override(mine, name, other), timeout=5)


def _creates_service(ecs, name):
    try:
        ecs.create_service(cluster=name, serviceName=name, taskDefinition=name, desiredCount=0)
        return True
    except ClientError:
        return False


def _refused_override(ecs, name, role):
    try:
        ecs.run_task(cluster=name, taskDefinition=name, overrides={"taskRoleArn": role})
        return False
    except ClientError as e:
        return e.response["Error"]["Code"] == "AccessDeniedException" and role in e.response["Error"]["Message"]


def test_a_source_ip_condition_sees_where_requests_come_from(server, name):
    iam = client(server, "iam")
    policy = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "ecs:ListClusters", "Resource": "*",
         "Condition": {"IpAddress": {"aws:SourceIp": "127.0.0.0/8"}}},
        {"Effect": "Allow", "Action": "ecs:ListTaskDefinitions", "Resource": "*",
         "Condition": {"NotIpAddress": {"aws:SourceIp": "127.0.0.0/8"}}}]}
    key, secret = user_with(server, iam, name, inline=policy)
    mine = client(server, "ecs", key, secret)
    assert mine.list_clusters()["clusterArns"] is not None
    assert error_of(mine.list_task_definitions)[1] == "AccessDeniedException"


def test_what_berth_does_not_support_yet_is_refused_not_ignored(server, name):
    iam, sts = client(server, "iam"), client(server, "sts")
    boundary = "arn:aws:iam::aws:policy/ReadOnlyAccess"
    assert error_of(iam.create_user, UserName=name, PermissionsBoundary=boundary)[1] == "InvalidInput"
    assert error_of(iam.get_user, UserName=name)[1] == "NoSuchEntity", "nothing was made"
    trust = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"AWS": ACCOUNT}, "Action": "sts:AssumeRole"}]}
    assert error_of(iam.create_role, RoleName=name, AssumeRolePolicyDocument=json.dumps(trust),
                    PermissionsBoundary=boundary)[1] == "InvalidInput"
    role = iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(trust))["Role"]
    status, code, message = error_of(sts.assume_role, RoleArn=role["Arn"], RoleSessionName="s1", SourceIdentity="me")
    assert (status, code) == (400, "ValidationError") and "SourceIdentity" in message
    assert iam.list_policies(PolicyUsageFilter="PermissionsBoundary")["Policies"] == []
    assert iam.list_policies(PolicyUsageFilter="PermissionsPolicy", Scope="AWS")["Policies"]


def test_instance_profiles_hold_one_role_and_keep_it_from_deletion(server, name):
    iam = client(server, "iam")
    trust = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}]}
    role = iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(trust))["Role"]
    p = iam.create_instance_profile(InstanceProfileName=name, Path="/hosts/")["InstanceProfile"]
    assert p["Arn"] == f"arn:aws:iam::{ACCOUNT}:instance-profile/hosts/{name}" and p["Roles"] == []
    assert p["InstanceProfileId"].startswith("AIPA")
    assert error_of(iam.create_instance_profile, InstanceProfileName=name)[1] == "EntityAlreadyExists"
    iam.add_role_to_instance_profile(InstanceProfileName=name, RoleName=name)
    got = iam.get_instance_profile(InstanceProfileName=name)["InstanceProfile"]
    assert [r["Arn"] for r in got["Roles"]] == [role["Arn"]]
    assert [x["InstanceProfileName"] for x in
            iam.list_instance_profiles_for_role(RoleName=name)["InstanceProfiles"]] == [name]
    assert name in [x["InstanceProfileName"] for x in iam.list_instance_profiles(PathPrefix="/hosts/")["InstanceProfiles"]]
    other = iam.create_role(RoleName=name + "b", AssumeRolePolicyDocument=json.dumps(trust))["Role"]
    status, code, message = error_of(iam.add_role_to_instance_profile, InstanceProfileName=name, RoleName=other["RoleName"])
    assert (status, code) == (409, "LimitExceeded") and "InstanceSessionsPerInstanceProfile: 1" in message
    # Held roles and profiles that hold one cannot go.
    assert error_of(iam.delete_role, RoleName=name)[1] == "DeleteConflict"
    assert error_of(iam.delete_instance_profile, InstanceProfileName=name)[1] == "DeleteConflict"
    iam.remove_role_from_instance_profile(InstanceProfileName=name, RoleName=name)
    assert iam.list_instance_profiles_for_role(RoleName=name)["InstanceProfiles"] == []
    iam.delete_instance_profile(InstanceProfileName=name)
    iam.delete_role(RoleName=name)
    assert error_of(iam.get_instance_profile, InstanceProfileName=name)[1] == "NoSuchEntity"


def test_the_ecs_service_linked_role_is_made_once_and_protected(server, name):
    iam = client(server, "iam")
    try:
        role = iam.create_service_linked_role(AWSServiceName="ecs.amazonaws.com")["Role"]
    except ClientError as e:  # another test (or an earlier run on this server) made it
        assert "has been taken" in e.response["Error"]["Message"]
        role = iam.get_role(RoleName="AWSServiceRoleForECS")["Role"]
    assert role["RoleName"] == "AWSServiceRoleForECS"
    assert role["Path"] == "/aws-service-role/ecs.amazonaws.com/"
    got = iam.get_role(RoleName="AWSServiceRoleForECS")["Role"]
    assert got["AssumeRolePolicyDocument"]["Statement"][0]["Principal"] == {"Service": "ecs.amazonaws.com"}
    assert [p["PolicyArn"] for p in iam.list_attached_role_policies(RoleName="AWSServiceRoleForECS")["AttachedPolicies"]] == \
        ["arn:aws:iam::aws:policy/aws-service-role/AmazonECSServiceRolePolicy"]
    status, code, message = error_of(iam.create_service_linked_role, AWSServiceName="ecs.amazonaws.com")
    assert code == "InvalidInput" and "has been taken" in message
    assert error_of(iam.create_service_linked_role, AWSServiceName="nope.amazonaws.com")[1] == "InvalidInput"
    # Only the service may change it.
    for call, kw in [(iam.delete_role, {}),
                     (iam.put_role_policy, dict(PolicyName="x", PolicyDocument=json.dumps(allow("ecs:*")))),
                     (iam.detach_role_policy, dict(PolicyArn="arn:aws:iam::aws:policy/aws-service-role/AmazonECSServiceRolePolicy"))]:
        assert error_of(call, RoleName="AWSServiceRoleForECS", **kw)[1] == "UnmodifiableEntity"


def test_the_simulator_and_the_authorization_details_tell_the_truth(server, ecs, name):
    iam = client(server, "iam")
    key, secret = user_with(server, iam, name, managed=["arn:aws:iam::aws:policy/ReadOnlyAccess"],
                            inline=allow("ecs:RunTask", effect="Deny"))
    arn = iam.get_user(UserName=name)["User"]["Arn"]
    results = iam.simulate_principal_policy(PolicySourceArn=arn, ActionNames=["ecs:ListClusters", "ecs:RunTask",
                                                                              "ecs:CreateCluster"])["EvaluationResults"]
    decisions = {r["EvalActionName"]: r["EvalDecision"] for r in results}
    assert decisions == {"ecs:ListClusters": "allowed", "ecs:RunTask": "explicitDeny",
                         "ecs:CreateCluster": "implicitDeny"}
    # The simulator agrees with what the user's requests meet.
    user = client(server, "ecs", key, secret)
    wait_for("the key", lambda: _lists(user))
    assert error_of(user.create_cluster, clusterName=name)[1] == "AccessDeniedException"
    # A condition the context answers.
    iam.put_user_policy(UserName=name, PolicyName="tagged", PolicyDocument=json.dumps(
        allow("ecs:CreateCluster", condition={"StringEquals": {"aws:RequestTag/team": "blue"}})))
    ctx = [{"ContextKeyName": "aws:RequestTag/team", "ContextKeyValues": ["blue"], "ContextKeyType": "string"}]
    r = iam.simulate_principal_policy(PolicySourceArn=arn, ActionNames=["ecs:CreateCluster"], ContextEntries=ctx)
    assert r["EvaluationResults"][0]["EvalDecision"] == "allowed"
    status, code, _ = error_of(iam.simulate_principal_policy, PolicySourceArn=arn, ActionNames=["ecs:RunTask"],
                               PolicyInputList=["{not json"])
    assert code == "MalformedPolicyDocument"
    details = iam.get_account_authorization_details(Filter=["User"])
    mine = next(u for u in details["UserDetailList"] if u["UserName"] == name)
    assert [p["PolicyArn"] for p in mine["AttachedManagedPolicies"]] == ["arn:aws:iam::aws:policy/ReadOnlyAccess"]
    assert {p["PolicyName"] for p in mine["UserPolicyList"]} == {"inline", "tagged"}
    assert details["RoleDetailList"] == [] and details["Policies"] == []
    everything = iam.get_account_authorization_details()
    assert any(p["Arn"] == "arn:aws:iam::aws:policy/ReadOnlyAccess" for p in everything["Policies"])
    # The aws CLI pages through it all.
    assert name in json.dumps(aws_cli(server, "iam", "get-account-authorization-details", "--max-items", "1000"))


def test_assume_role_with_an_external_id_managed_session_policies_and_session_tags(server, ecs, name):
    iam, sts = client(server, "iam"), client(server, "sts")
    ecs.create_cluster(clusterName=name)
    trust = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"AWS": ACCOUNT}, "Action": ["sts:AssumeRole", "sts:TagSession"],
         "Condition": {"StringEquals": {"sts:ExternalId": "partner-42"}}}]}
    role = iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(trust))["Role"]
    # The role may act only on clusters tagged for the session's team.
    iam.put_role_policy(RoleName=name, PolicyName="by-team", PolicyDocument=json.dumps(allow(
        ["ecs:DescribeClusters", "ecs:ListClusters"], condition={"StringEquals": {"aws:PrincipalTag/team": "blue"}})))
    cfg = botocore.config.Config(retries={"max_attempts": 1})

    def as_session(got):
        c = got["Credentials"]
        return boto3.client("ecs", endpoint_url=server.url, region_name="us-east-1", config=cfg,
                            aws_access_key_id=c["AccessKeyId"], aws_secret_access_key=c["SecretAccessKey"],
                            aws_session_token=c["SessionToken"])
    # The trust policy's condition on the external id decides.
    assert error_of(sts.assume_role, RoleArn=role["Arn"], RoleSessionName="s0")[1] == "AccessDenied"
    assert error_of(sts.assume_role, RoleArn=role["Arn"], RoleSessionName="s0", ExternalId="wrong")[1] == "AccessDenied"
    blue = as_session(sts.assume_role(RoleArn=role["Arn"], RoleSessionName="s1", ExternalId="partner-42",
                                      Tags=[{"Key": "team", "Value": "blue"}]))
    assert blue.describe_clusters(clusters=[name])["clusters"][0]["status"] == "ACTIVE"
    red = as_session(sts.assume_role(RoleArn=role["Arn"], RoleSessionName="s2", ExternalId="partner-42",
                                     Tags=[{"Key": "team", "Value": "red"}]))
    assert error_of(red.describe_clusters, clusters=[name])[1] == "AccessDeniedException"
    # A managed session policy narrows the session as an inline one does.
    narrow = as_session(sts.assume_role(RoleArn=role["Arn"], RoleSessionName="s3", ExternalId="partner-42",
                                        Tags=[{"Key": "team", "Value": "blue"}],
                                        PolicyArns=[{"arn": "arn:aws:iam::aws:policy/AmazonECS_FullAccess"}]))
    assert narrow.list_clusters()["clusterArns"]
    only_list = iam.create_policy(PolicyName=name, PolicyDocument=json.dumps(allow("ecs:ListClusters")))["Policy"]
    listing = as_session(sts.assume_role(RoleArn=role["Arn"], RoleSessionName="s4", ExternalId="partner-42",
                                         Tags=[{"Key": "team", "Value": "blue"}],
                                         PolicyArns=[{"arn": only_list["Arn"]}]))
    assert listing.list_clusters()["clusterArns"]
    assert error_of(listing.describe_clusters, clusters=[name])[1] == "AccessDeniedException"
    assert error_of(sts.assume_role, RoleArn=role["Arn"], RoleSessionName="s5", ExternalId="partner-42",
                    PolicyArns=[{"arn": f"arn:aws:iam::{ACCOUNT}:policy/nope"}])[1] == "ValidationError"
    # Tags need sts:TagSession in the trust policy.
    plain = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"AWS": ACCOUNT}, "Action": "sts:AssumeRole"}]}
    untaggable = iam.create_role(RoleName=name + "-plain", AssumeRolePolicyDocument=json.dumps(plain))["Role"]
    status, code, message = error_of(sts.assume_role, RoleArn=untaggable["Arn"], RoleSessionName="s6",
                                     Tags=[{"Key": "team", "Value": "blue"}])
    assert code == "AccessDenied" and "sts:TagSession" in message
    assert error_of(sts.assume_role, RoleArn=role["Arn"], RoleSessionName="s7", ExternalId="partner-42",
                    Tags=[{"Key": "team", "Value": "blue"}], TransitiveTagKeys=["other"])[1] == "ValidationError"

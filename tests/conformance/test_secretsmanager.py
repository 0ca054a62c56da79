"""Secrets Manager with real clients: versions and staging labels, the
recovery window, values sealed at rest, its errors, and IAM deciding who
reads which secret."""

import glob
import os
import uuid

import boto3
import botocore.config

from conftest import AWS_ENV, aws_cli
from test_iam import allow, client, error_of, user_with

ACCOUNT = "000000000000"


def test_versions_and_staging_labels(server, name):
    sm = client(server, "secretsmanager")
    token = str(uuid.uuid4())
    made = sm.create_secret(Name=f"{name}/db", SecretString='{"username":"app","password":"p1"}',
                            Description="the db", ClientRequestToken=token, Tags=[{"Key": "team", "Value": "blue"}])
    assert made["VersionId"] == token
    assert made["ARN"].startswith(f"arn:aws:secretsmanager:us-east-1:{ACCOUNT}:secret:{name}/db-")
    assert len(made["ARN"].rsplit("-", 1)[1]) == 6
    # A retried create with the same token and value answers as the first.
    again = sm.create_secret(Name=f"{name}/db", SecretString='{"username":"app","password":"p1"}', ClientRequestToken=token)
    assert again["ARN"] == made["ARN"]
    assert error_of(sm.create_secret, Name=f"{name}/db", SecretString="x")[1] == "ResourceExistsException"
    v2 = sm.put_secret_value(SecretId=f"{name}/db", SecretString="second")
    assert v2["VersionStages"] == ["AWSCURRENT"]
    got = sm.get_secret_value(SecretId=made["ARN"])
    assert (got["SecretString"], got["VersionId"], got["VersionStages"]) == ("second", v2["VersionId"], ["AWSCURRENT"])
    previous = sm.get_secret_value(SecretId=f"{name}/db", VersionStage="AWSPREVIOUS")
    assert previous["SecretString"].startswith('{"username"') and previous["VersionId"] == token
    by_id = sm.get_secret_value(SecretId=f"{name}/db", VersionId=token)
    assert by_id["VersionStages"] == ["AWSPREVIOUS"]
    # A partial ARN (no suffix) names the secret too.
    partial = f"arn:aws:secretsmanager:us-east-1:{ACCOUNT}:secret:{name}/db"
    assert sm.get_secret_value(SecretId=partial)["SecretString"] == "second"
    pending = sm.put_secret_value(SecretId=f"{name}/db", SecretBinary=b"\x00\x01", VersionStages=["AWSPENDING"])
    assert sm.get_secret_value(SecretId=f"{name}/db")["SecretString"] == "second"
    sm.update_secret_version_stage(SecretId=f"{name}/db", VersionStage="AWSCURRENT",
                                   MoveToVersionId=pending["VersionId"], RemoveFromVersionId=v2["VersionId"])
    current = sm.get_secret_value(SecretId=f"{name}/db")
    assert current["SecretBinary"] == b"\x00\x01" and "SecretString" not in current
    described = sm.describe_secret(SecretId=f"{name}/db")
    assert described["Description"] == "the db" and described["Tags"] == [{"Key": "team", "Value": "blue"}]
    assert described["VersionIdsToStages"][v2["VersionId"]] == ["AWSPREVIOUS"]
    assert sorted(described["VersionIdsToStages"][pending["VersionId"]]) == ["AWSCURRENT", "AWSPENDING"]
    versions = sm.list_secret_version_ids(SecretId=f"{name}/db", IncludeDeprecated=True)["Versions"]
    assert len(versions) == 3
    sm.update_secret(SecretId=f"{name}/db", Description="changed", SecretString="third")
    assert sm.get_secret_value(SecretId=f"{name}/db")["SecretString"] == "third"
    assert sm.describe_secret(SecretId=f"{name}/db")["Description"] == "changed"
    sm.tag_resource(SecretId=f"{name}/db", Tags=[{"Key": "env", "Value": "prod"}])
    sm.untag_resource(SecretId=f"{name}/db", TagKeys=["team"])
    assert sm.describe_secret(SecretId=f"{name}/db")["Tags"] == [{"Key": "env", "Value": "prod"}]


def test_deletion_with_a_recovery_window_and_restore(server, name):
    sm = client(server, "secretsmanager")
    arn = sm.create_secret(Name=f"{name}-gone", SecretString="v")["ARN"]
    deleted = sm.delete_secret(SecretId=arn, RecoveryWindowInDays=7)
    assert deleted["DeletionDate"].timestamp() > __import__("time").time() + 6.9 * 86400
    code = error_of(sm.get_secret_value, SecretId=arn)
    assert code[:2] == (400, "InvalidRequestException") and "marked for deletion" in code[2]
    assert "DeletedDate" in sm.describe_secret(SecretId=arn)
    listed = [s["Name"] for s in sm.list_secrets(Filters=[{"Key": "name", "Values": [f"{name}-gone"]}])["SecretList"]]
    assert listed == []
    listed = sm.list_secrets(Filters=[{"Key": "name", "Values": [f"{name}-gone"]}], IncludePlannedDeletion=True)
    assert [s["Name"] for s in listed["SecretList"]] == [f"{name}-gone"]
    code = error_of(sm.create_secret, Name=f"{name}-gone", SecretString="w")
    assert code[1] == "InvalidRequestException" and "scheduled for deletion" in code[2]
    sm.restore_secret(SecretId=arn)
    assert sm.get_secret_value(SecretId=arn)["SecretString"] == "v"
    sm.delete_secret(SecretId=arn, ForceDeleteWithoutRecovery=True)
    assert error_of(sm.describe_secret, SecretId=arn)[:2] == (400, "ResourceNotFoundException")
    # The name is free again, under a new ARN.
    again = sm.create_secret(Name=f"{name}-gone", SecretString="new")["ARN"]
    assert again != arn
    assert error_of(sm.get_secret_value, SecretId=arn)[1] == "ResourceNotFoundException"


def test_list_filters_and_pages(server, name):
    sm = client(server, "secretsmanager")
    for i in range(5):
        sm.create_secret(Name=f"{name}/list/{i}", SecretString=str(i), Tags=[{"Key": "idx", "Value": str(i)}])
    seen, token = [], None
    while True:
        kw = {"NextToken": token} if token else {}
        page = sm.list_secrets(Filters=[{"Key": "name", "Values": [f"{name}/list/"]}], MaxResults=2,
                               SortOrder="asc", **kw)
        seen += [s["Name"] for s in page["SecretList"]]
        token = page.get("NextToken")
        if not token:
            break
    assert seen == [f"{name}/list/{i}" for i in range(5)]
    tagged = sm.list_secrets(Filters=[{"Key": "name", "Values": [f"{name}/list/"]},
                                      {"Key": "tag-value", "Values": ["3"]}])["SecretList"]
    assert [s["Name"] for s in tagged] == [f"{name}/list/3"]
    assert error_of(sm.list_secrets, Filters=[{"Key": "colour", "Values": ["x"]}])[0] == 400
    # Nothing here is owned by another service: that filter matches none.
    owned = sm.list_secrets(Filters=[{"Key": "name", "Values": [f"{name}/list/"]},
                                     {"Key": "owning-service", "Values": [name]}])["SecretList"]
    assert owned == []


def test_bad_input_gets_secrets_managers_errors_and_changes_nothing(server, name):
    # Unchecked by botocore, as other SDKs and hand-made requests send them.
    sm = boto3.client("secretsmanager", endpoint_url=server.url, region_name="us-east-1",
                      aws_access_key_id=AWS_ENV["AWS_ACCESS_KEY_ID"], aws_secret_access_key=AWS_ENV["AWS_SECRET_ACCESS_KEY"],
                      config=botocore.config.Config(retries={"max_attempts": 1}, parameter_validation=False))
    sm.create_secret(Name=f"{name}-kept", SecretString="kept")
    cases = [
        (sm.create_secret, dict(Name="bad name", SecretString="x"), "ValidationException"),
        (sm.create_secret, dict(Name=f"{name}-b", SecretString="x", SecretBinary=b"y"), "InvalidParameterException"),
        (sm.create_secret, dict(Name=f"{name}-c", SecretString="x", ClientRequestToken="short"), "InvalidParameterException"),
        (sm.create_secret, dict(Name=f"{name}-d", SecretString="x" * 65537), "InvalidParameterException"),
        (sm.create_secret, dict(Name=f"{name}-e", SecretString="x", ForceOverwriteReplicaSecret=True),
         "InvalidParameterException"),
        (sm.get_secret_value, dict(SecretId=f"{name}-missing"), "ResourceNotFoundException"),
        (sm.get_secret_value, dict(SecretId=f"{name}-kept", VersionStage="AWSPENDING"), "ResourceNotFoundException"),
        (sm.put_secret_value, dict(SecretId=f"{name}-kept"), "InvalidParameterException"),
        (sm.delete_secret, dict(SecretId=f"{name}-kept", RecoveryWindowInDays=3), "InvalidParameterException"),
        (sm.delete_secret, dict(SecretId=f"{name}-kept", RecoveryWindowInDays=7, ForceDeleteWithoutRecovery=True),
         "InvalidParameterException"),
        (sm.update_secret_version_stage, dict(SecretId=f"{name}-kept", VersionStage="AWSCURRENT",
                                              RemoveFromVersionId="x" * 32), "ResourceNotFoundException"),
    ]
    for call, kw, code in cases:
        assert error_of(call, **kw)[1] == code, (kw, code)
    for n in ("b", "c", "d", "e"):
        assert error_of(sm.describe_secret, SecretId=f"{name}-{n}")[1] == "ResourceNotFoundException"
    assert sm.get_secret_value(SecretId=f"{name}-kept")["SecretString"] == "kept"
    assert len(sm.list_secret_version_ids(SecretId=f"{name}-kept")["Versions"]) == 1


def test_values_are_sealed_at_rest(server, name):
    sm = client(server, "secretsmanager")
    secret = f"pa55-{name}"
    sm.create_secret(Name=f"{name}-sealed", SecretString=secret)
    stored = b"".join(open(f, "rb").read() for f in glob.glob(f"{server.data_dir}/**/*", recursive=True)
                      if not f.endswith(".log") and not os.path.isdir(f))
    assert f"{name}-sealed".encode() in stored, "the secret's record is in the data dir"
    assert secret.encode() not in stored


def test_the_aws_cli(server, name):
    made = aws_cli(server, "secretsmanager", "create-secret", "--name", f"{name}-cli",
                   "--secret-string", '{"password":"x"}', "--region", "us-east-1")
    got = aws_cli(server, "secretsmanager", "get-secret-value", "--secret-id", made["ARN"], "--region", "us-east-1")
    assert got["SecretString"] == '{"password":"x"}'
    aws_cli(server, "secretsmanager", "delete-secret", "--secret-id", f"{name}-cli",
            "--force-delete-without-recovery", "--region", "us-east-1")
    r = aws_cli(server, "secretsmanager", "describe-secret", "--secret-id", f"{name}-cli",
                "--region", "us-east-1", check=False)
    assert r.returncode != 0 and "ResourceNotFoundException" in r.stderr


def test_policies_name_secrets_by_their_arn(server, name):
    iam, sm = client(server, "iam"), client(server, "secretsmanager")
    mine_arn = sm.create_secret(Name=f"{name}/app/db", SecretString="ok", Tags=[{"Key": "team", "Value": "app"}])["ARN"]
    sm.create_secret(Name=f"{name}/other/db", SecretString="no")
    sm.create_secret(Name=f"{name}/tagged", SecretString="by-tag", Tags=[{"Key": "team", "Value": "app"}])
    key, secret = user_with(server, iam, name, inline={"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "secretsmanager:GetSecretValue",
         "Resource": f"arn:aws:secretsmanager:us-east-1:{ACCOUNT}:secret:{name}/app/db-??????"},
        {"Effect": "Allow", "Action": "secretsmanager:DescribeSecret", "Resource": "*",
         "Condition": {"StringEquals": {"secretsmanager:ResourceTag/team": "app"}}},
    ]})
    user = client(server, "secretsmanager", key, secret)
    assert user.get_secret_value(SecretId=f"{name}/app/db")["SecretString"] == "ok"
    assert user.get_secret_value(SecretId=mine_arn)["SecretString"] == "ok"
    status, code, message = error_of(user.get_secret_value, SecretId=f"{name}/other/db")
    assert (status, code) == (400, "AccessDeniedException") and "secretsmanager:GetSecretValue" in message
    assert user.describe_secret(SecretId=f"{name}/tagged")["Name"] == f"{name}/tagged"
    assert error_of(user.describe_secret, SecretId=f"{name}/other/db")[1] == "AccessDeniedException"
    assert error_of(user.get_secret_value, SecretId=f"{name}/nothing")[1] == "AccessDeniedException"
    assert error_of(user.create_secret, Name=f"{name}/app/new", SecretString="x")[1] == "AccessDeniedException"
    assert error_of(sm.describe_secret, SecretId=f"{name}/app/new")[1] == "ResourceNotFoundException"

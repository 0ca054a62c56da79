"""Tagging and account settings."""

import pytest
from botocore.exceptions import ClientError

from conftest import aws_cli, container, make_client


def code(e):
    return e.value.response["Error"]["Code"], e.value.response["Error"]["Message"]


def test_tag_untag_list_cluster_and_task_definition(ecs, name):
    carn = ecs.create_cluster(clusterName=name)["cluster"]["clusterArn"]
    tarn = ecs.register_task_definition(family=name, containerDefinitions=[container()])["taskDefinition"]["taskDefinitionArn"]
    for arn in (carn, tarn):
        ecs.tag_resource(resourceArn=arn, tags=[{"key": "a", "value": "1"}, {"key": "b", "value": "2"}])
        ecs.tag_resource(resourceArn=arn, tags=[{"key": "a", "value": "changed"}])
        assert ecs.list_tags_for_resource(resourceArn=arn)["tags"] == [{"key": "a", "value": "changed"}, {"key": "b", "value": "2"}]
        ecs.untag_resource(resourceArn=arn, tagKeys=["b", "never-set"])
        assert ecs.list_tags_for_resource(resourceArn=arn)["tags"] == [{"key": "a", "value": "changed"}]
    assert ecs.describe_clusters(clusters=[name], include=["TAGS"])["clusters"][0]["tags"] == [{"key": "a", "value": "changed"}]
    assert ecs.describe_task_definition(taskDefinition=name, include=["TAGS"])["tags"] == [{"key": "a", "value": "changed"}]


def test_tag_limits_and_errors(ecs, name):
    arn = ecs.create_cluster(clusterName=name)["cluster"]["clusterArn"]
    ecs.tag_resource(resourceArn=arn, tags=[{"key": f"k{i}", "value": "v"} for i in range(50)])
    for bad in ([{"key": "one-too-many", "value": "v"}], [{"key": "aws:x", "value": "v"}],
                [{"key": "k" * 129, "value": "v"}], [{"key": "k", "value": "v" * 257}]):
        with pytest.raises(ClientError) as e:
            ecs.tag_resource(resourceArn=arn, tags=bad)
        assert code(e)[0] == "InvalidParameterException"
    assert len(ecs.list_tags_for_resource(resourceArn=arn)["tags"]) == 50, "rejected tags change nothing"

    with pytest.raises(ClientError) as e:
        ecs.list_tags_for_resource(resourceArn="arn:aws:ecs:us-east-1:000000000000:cluster/missing-" + name)
    assert code(e)[0] == "ClusterNotFoundException"
    with pytest.raises(ClientError) as e:
        ecs.tag_resource(resourceArn="arn:aws:ecs:us-east-1:000000000000:task-definition/missing:1", tags=[{"key": "a", "value": "b"}])
    assert code(e)[0] == "ResourceNotFoundException"
    with pytest.raises(ClientError) as e:
        ecs.list_tags_for_resource(resourceArn="not-an-arn")
    assert code(e)[0] == "InvalidParameterException"
    with pytest.raises(ClientError) as e:
        ecs.tag_resource(resourceArn="arn:aws:ecs:us-east-1:000000000000:capacity-provider/FARGATE", tags=[{"key": "a", "value": "b"}])
    assert code(e)[0] == "InvalidParameterException"


def test_tags_with_aws_cli(server, name):
    arn = aws_cli(server, "ecs", "create-cluster", "--cluster-name", name)["cluster"]["clusterArn"]
    aws_cli(server, "ecs", "tag-resource", "--resource-arn", arn, "--tags", "key=env,value=prod")
    assert aws_cli(server, "ecs", "list-tags-for-resource", "--resource-arn", arn)["tags"] == [{"key": "env", "value": "prod"}]


def test_account_settings(server):
    ecs = make_client(server.url, region="sa-east-1")
    root = "arn:aws:iam::000000000000:root"
    assert ecs.list_account_settings()["settings"] == [], "nothing set for the caller yet"
    eff = {s["name"]: s for s in ecs.list_account_settings(effectiveSettings=True, maxResults=10)["settings"]}
    assert len(eff) == 10, "maxResults caps the page"
    ins = ecs.list_account_settings(effectiveSettings=True, name="containerInsights")["settings"]
    assert ins == [{"name": "containerInsights", "value": "disabled", "principalArn": root, "type": "aws_managed"}]

    d = ecs.put_account_setting_default(name="containerInsights", value="enabled")["setting"]
    assert d == {"name": "containerInsights", "value": "enabled", "principalArn": root, "type": "user"}
    # A new cluster follows the effective containerInsights setting.
    c = ecs.create_cluster(clusterName="insights")["cluster"]
    assert c["settings"] == [{"name": "containerInsights", "value": "enabled"}]

    role = "arn:aws:iam::000000000000:role/deployer"
    ecs.put_account_setting(name="containerInsights", value="disabled", principalArn=role)
    got = ecs.list_account_settings(name="containerInsights", principalArn=role, effectiveSettings=True)["settings"]
    assert got[0]["value"] == "disabled" and got[0]["principalArn"] == role
    ecs.put_account_setting(name="taskLongArnFormat", value="enabled")
    mine = ecs.list_account_settings()["settings"]
    assert [s["name"] for s in mine] == ["taskLongArnFormat"]
    assert ecs.list_account_settings(value="disabled")["settings"] == []

    deleted = ecs.delete_account_setting(name="containerInsights", principalArn=role)["setting"]
    assert deleted["value"] == "disabled"
    got = ecs.list_account_settings(name="containerInsights", principalArn=role, effectiveSettings=True)["settings"]
    assert got[0]["value"] == "enabled", "falls back to the account default"

    page = ecs.list_account_settings(effectiveSettings=True, maxResults=4)
    rest = ecs.list_account_settings(effectiveSettings=True, maxResults=10, nextToken=page["nextToken"])
    assert len(page["settings"]) + len(rest["settings"]) == 11, "every setting of the model, once"

    for call in (lambda: ecs.put_account_setting(name="containerInsights", value="maybe"),
                 lambda: ecs.put_account_setting(name="bogusSetting", value="enabled"),
                 lambda: ecs.put_account_setting(name="containerInsights", value="enabled", principalArn="bob"),
                 lambda: ecs.delete_account_setting(name="awsvpcTrunking"),
                 lambda: ecs.list_account_settings(maxResults=11)):
        with pytest.raises(ClientError) as e:
            call()
        assert code(e)[0] == "InvalidParameterException"


def test_account_settings_with_aws_cli(server):
    out = aws_cli(server, "ecs", "put-account-setting-default", "--name", "awsvpcTrunking", "--value", "enabled")
    assert out["setting"]["value"] == "enabled"
    listed = aws_cli(server, "ecs", "list-account-settings", "--effective-settings", "--name", "awsvpcTrunking")
    assert listed["settings"][0]["value"] == "enabled"

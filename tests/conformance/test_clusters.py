"""Cluster operations and capacity providers."""

import pytest
from botocore.exceptions import ClientError

from conftest import aws_cli, make_client

ARN = "arn:aws:ecs:us-east-1:000000000000:cluster/"


def code(e):
    return e.value.response["Error"]["Code"], e.value.response["Error"]["Message"]


def test_create_without_name_makes_default(server):
    ecs = make_client(server.url, region="ap-south-1")
    c = ecs.create_cluster()["cluster"]
    assert c["clusterName"] == "default"
    assert c["clusterArn"] == "arn:aws:ecs:ap-south-1:000000000000:cluster/default"
    assert ecs.describe_clusters()["clusters"][0]["clusterName"] == "default"


def test_create_is_idempotent_and_describe_includes(ecs, name):
    first = ecs.create_cluster(clusterName=name, tags=[{"key": "team", "value": "core"}],
                               settings=[{"name": "containerInsights", "value": "enabled"}])["cluster"]
    assert first["status"] == "ACTIVE" and first["clusterArn"] == ARN + name
    again = ecs.create_cluster(clusterName=name)["cluster"]
    assert again["clusterArn"] == first["clusterArn"]
    assert again["tags"] == [{"key": "team", "value": "core"}], "an existing cluster is returned unchanged"

    plain = ecs.describe_clusters(clusters=[name])["clusters"][0]
    assert "settings" not in plain and plain["tags"] == [] and plain["statistics"] == []
    full = ecs.describe_clusters(clusters=[ARN + name], include=["TAGS", "SETTINGS", "STATISTICS", "CONFIGURATIONS"])["clusters"][0]
    assert full["tags"] == [{"key": "team", "value": "core"}]
    assert full["settings"] == [{"name": "containerInsights", "value": "enabled"}]
    stats = {s["name"]: s["value"] for s in full["statistics"]}
    assert stats["runningEC2TasksCount"] == "0"
    for k in ("registeredContainerInstancesCount", "runningTasksCount", "pendingTasksCount", "activeServicesCount"):
        assert full[k] == 0


def test_describe_missing_gives_failures(ecs, name):
    ecs.create_cluster(clusterName=name)
    r = ecs.describe_clusters(clusters=[name, "nope-" + name, "arn:aws:ecs:us-east-1:000000000000:cluster/gone"])
    assert [c["clusterName"] for c in r["clusters"]] == [name]
    assert r["failures"] == [
        {"arn": ARN + "nope-" + name, "reason": "MISSING"},
        {"arn": ARN + "gone", "reason": "MISSING"},
    ]


def test_invalid_names_and_settings(ecs):
    with pytest.raises(ClientError) as e:
        ecs.create_cluster(clusterName="has space")
    assert code(e)[0] == "InvalidParameterException" and "cluster name" in code(e)[1]
    with pytest.raises(ClientError) as e:
        ecs.create_cluster(clusterName="x", settings=[{"name": "containerInsights", "value": "sometimes"}])
    assert code(e)[0] == "InvalidParameterException" and "containerInsights" in code(e)[1]
    with pytest.raises(ClientError) as e:
        ecs.describe_clusters(clusters=["x"], include=["EVERYTHING"])
    assert code(e)[0] == "InvalidParameterException"


def test_list_paginates_active_clusters(server, name):
    ecs = make_client(server.url, region="ca-central-1")
    names = [f"{name}-{i}" for i in range(7)]
    for n in names:
        ecs.create_cluster(clusterName=n)
    page = ecs.list_clusters(maxResults=3)
    assert len(page["clusterArns"]) == 3 and "nextToken" in page
    seen = []
    for p in ecs.get_paginator("list_clusters").paginate(PaginationConfig={"PageSize": 2}):
        seen += p["clusterArns"]
    assert sorted(seen) == sorted(f"arn:aws:ecs:ca-central-1:000000000000:cluster/{n}" for n in names)
    with pytest.raises(ClientError) as e:
        ecs.list_clusters(maxResults=101)
    assert code(e)[0] == "InvalidParameterException"
    with pytest.raises(ClientError) as e:
        ecs.list_clusters(nextToken="not-a-token")
    assert code(e)[0] == "InvalidParameterException"


def test_update_cluster_and_settings(ecs, name):
    ecs.create_cluster(clusterName=name)
    c = ecs.update_cluster_settings(cluster=name, settings=[{"name": "containerInsights", "value": "enhanced"}])["cluster"]
    assert c["settings"] == [{"name": "containerInsights", "value": "enhanced"}]
    conf = {"executeCommandConfiguration": {"logging": "DEFAULT"}}
    c = ecs.update_cluster(cluster=name, configuration=conf)["cluster"]
    assert c["configuration"] == conf
    d = ecs.describe_clusters(clusters=[name], include=["CONFIGURATIONS"])["clusters"][0]
    assert d["configuration"] == conf
    with pytest.raises(ClientError) as e:
        ecs.update_cluster_settings(cluster="missing-" + name, settings=[{"name": "containerInsights", "value": "enabled"}])
    assert code(e) == ("ClusterNotFoundException", "Cluster not found.")
    with pytest.raises(ClientError) as e:
        ecs.update_cluster(cluster=name, settings=[{"name": "bogus", "value": "enabled"}])
    assert code(e)[0] == "InvalidParameterException"
    # A rejected update leaves the stored cluster as it was.
    d = ecs.describe_clusters(clusters=[name], include=["SETTINGS"])["clusters"][0]
    assert d["settings"] == [{"name": "containerInsights", "value": "enhanced"}]


def test_delete_cluster(ecs, name):
    ecs.create_cluster(clusterName=name)
    gone = ecs.delete_cluster(cluster=name)["cluster"]
    assert gone["status"] == "INACTIVE"
    assert ARN + name not in ecs.list_clusters()["clusterArns"]
    assert ecs.describe_clusters(clusters=[name])["clusters"][0]["status"] == "INACTIVE"
    with pytest.raises(ClientError) as e:
        ecs.delete_cluster(cluster=name)
    assert code(e) == ("ClusterNotFoundException", "Cluster not found.")
    with pytest.raises(ClientError) as e:
        ecs.update_cluster_settings(cluster=name, settings=[{"name": "containerInsights", "value": "enabled"}])
    assert code(e)[0] == "ClusterNotFoundException"
    # Re-creating an INACTIVE cluster makes it ACTIVE again.
    assert ecs.create_cluster(clusterName=name)["cluster"]["status"] == "ACTIVE"


def test_capacity_providers(ecs, name):
    ecs.create_cluster(clusterName=name)
    strategy = [{"capacityProvider": "FARGATE", "weight": 1, "base": 1}, {"capacityProvider": "FARGATE_SPOT", "weight": 4}]
    c = ecs.put_cluster_capacity_providers(cluster=name, capacityProviders=["FARGATE", "FARGATE_SPOT"],
                                           defaultCapacityProviderStrategy=strategy)["cluster"]
    assert c["capacityProviders"] == ["FARGATE", "FARGATE_SPOT"]
    assert c["defaultCapacityProviderStrategy"] == [
        {"capacityProvider": "FARGATE", "weight": 1, "base": 1},
        {"capacityProvider": "FARGATE_SPOT", "weight": 4},
    ]
    for bad_providers, bad_strategy in [
        (["NOPE"], []),
        (["FARGATE"], [{"capacityProvider": "FARGATE_SPOT", "weight": 1}]),
        (["FARGATE", "FARGATE_SPOT"], [{"capacityProvider": "FARGATE", "weight": 1, "base": 1},
                                       {"capacityProvider": "FARGATE_SPOT", "weight": 1, "base": 2}]),
        (["FARGATE"], [{"capacityProvider": "FARGATE", "weight": 0}]),
    ]:
        with pytest.raises(ClientError) as e:
            ecs.put_cluster_capacity_providers(cluster=name, capacityProviders=bad_providers,
                                               defaultCapacityProviderStrategy=bad_strategy)
        assert code(e)[0] == "InvalidParameterException"
    # Rejections changed nothing.
    d = ecs.describe_clusters(clusters=[name])["clusters"][0]
    assert d["capacityProviders"] == ["FARGATE", "FARGATE_SPOT"]
    with pytest.raises(ClientError) as e:
        ecs.put_cluster_capacity_providers(cluster="missing-" + name, capacityProviders=[], defaultCapacityProviderStrategy=[])
    assert code(e)[0] == "ClusterNotFoundException"


def test_describe_capacity_providers(ecs):
    all_ = ecs.describe_capacity_providers()
    assert [p["name"] for p in all_["capacityProviders"]] == ["FARGATE", "FARGATE_SPOT"]
    p = all_["capacityProviders"][0]
    assert p["capacityProviderArn"] == "arn:aws:ecs:us-east-1:000000000000:capacity-provider/FARGATE"
    assert p["status"] == "ACTIVE"
    r = ecs.describe_capacity_providers(capacityProviders=["FARGATE_SPOT", "mine"])
    assert [p["name"] for p in r["capacityProviders"]] == ["FARGATE_SPOT"]
    assert r["failures"] == [{"arn": "arn:aws:ecs:us-east-1:000000000000:capacity-provider/mine", "reason": "MISSING"}]
    page = ecs.describe_capacity_providers(maxResults=1)
    assert len(page["capacityProviders"]) == 1
    rest = ecs.describe_capacity_providers(maxResults=1, nextToken=page["nextToken"])
    assert rest["capacityProviders"][0]["name"] == "FARGATE_SPOT" and "nextToken" not in rest


def test_clusters_with_aws_cli(server, name):
    out = aws_cli(server, "ecs", "create-cluster", "--cluster-name", name)
    assert out["cluster"]["clusterName"] == name
    listed = aws_cli(server, "ecs", "list-clusters")
    assert ARN + name in listed["clusterArns"]
    p = aws_cli(server, "ecs", "delete-cluster", "--cluster", "nope-" + name, check=False)
    assert p.returncode != 0 and "ClusterNotFoundException" in p.stderr and "Cluster not found." in p.stderr

"""Container instances and attributes, driven the way the ECS agent and users do."""

import json

import pytest
from botocore.exceptions import ClientError

from conftest import aws_cli

ARN = "arn:aws:ecs:us-east-1:000000000000:container-instance/"


def code(e):
    return e.value.response["Error"]["Code"], e.value.response["Error"]["Message"]


def resources(cpu=2048, memory=3900, ports=("22", "2375", "2376", "51678", "51679")):
    # As the stock agent sends them (ecs-reference §3.7).
    return [
        {"name": "CPU", "type": "INTEGER", "integerValue": cpu},
        {"name": "MEMORY", "type": "INTEGER", "integerValue": memory},
        {"name": "PORTS", "type": "STRINGSET", "stringSetValue": list(ports)},
        {"name": "PORTS_UDP", "type": "STRINGSET", "stringSetValue": []},
    ]


def iid(instance_id, zone="us-east-1a", kind="m5.large"):
    return json.dumps({"instanceId": instance_id, "instanceType": kind, "availabilityZone": zone,
                       "region": "us-east-1", "architecture": "x86_64", "imageId": "ami-1"})


def register(ecs, cluster, instance_id="i-0001", **kw):
    args = dict(cluster=cluster, totalResources=resources(), instanceIdentityDocument=iid(instance_id),
                versionInfo={"agentVersion": "1.80.0", "dockerVersion": "20.10.24"},
                attributes=[{"name": "ecs.os-type", "value": "linux"}])
    args.update(kw)
    return ecs.register_container_instance(**args)["containerInstance"]


@pytest.fixture
def cluster(ecs, name):
    ecs.create_cluster(clusterName=name)
    return name


def test_register_describe_and_count(ecs, cluster):
    ci = register(ecs, cluster, tags=[{"key": "rack", "value": "r1"}])
    arn = ci["containerInstanceArn"]
    assert arn.startswith(ARN + cluster + "/") and len(arn.rsplit("/", 1)[1]) == 32
    assert ci["ec2InstanceId"] == "i-0001" and ci["status"] == "ACTIVE"
    assert ci["agentConnected"] is False and ci["runningTasksCount"] == 0
    registered = {r["name"]: r for r in ci["registeredResources"]}
    assert registered["CPU"]["integerValue"] == 2048 and registered["MEMORY"]["integerValue"] == 3900
    assert registered["PORTS"]["stringSetValue"] == ["22", "2375", "2376", "51678", "51679"]
    attrs = {a["name"]: a.get("value") for a in ci["attributes"]}
    assert attrs["ecs.instance-type"] == "m5.large"
    assert attrs["ecs.availability-zone"] == "us-east-1a"
    assert attrs["ecs.os-type"] == "linux"
    assert ci["versionInfo"]["agentVersion"] == "1.80.0"

    short_id = arn.rsplit("/", 1)[1]
    out = ecs.describe_container_instances(cluster=cluster, containerInstances=[short_id, arn, "nope"], include=["TAGS"])
    assert [c["containerInstanceArn"] for c in out["containerInstances"]] == [arn, arn]
    assert out["containerInstances"][0]["tags"] == [{"key": "rack", "value": "r1"}]
    assert out["failures"] == [{"arn": ARN + cluster + "/nope", "reason": "MISSING"}]

    stats = ecs.describe_clusters(clusters=[cluster])["clusters"][0]
    assert stats["registeredContainerInstancesCount"] == 1
    with pytest.raises(ClientError) as e:
        ecs.delete_cluster(cluster=cluster)
    assert code(e)[0] == "ClusterContainsContainerInstancesException"


def test_reregistration_keeps_the_instance(ecs, cluster):
    ci = register(ecs, cluster)
    again = register(ecs, cluster, containerInstanceArn=ci["containerInstanceArn"],
                     totalResources=resources(cpu=4096))
    assert again["containerInstanceArn"] == ci["containerInstanceArn"]
    assert again["registeredAt"] == ci["registeredAt"] and again["version"] > ci["version"]
    assert {r["name"]: r.get("integerValue") for r in again["registeredResources"]}["CPU"] == 4096
    assert ecs.list_container_instances(cluster=cluster)["containerInstanceArns"] == [ci["containerInstanceArn"]]


def test_bad_registrations_name_the_problem(ecs, cluster):
    cases = [
        (dict(totalResources=[{"name": "CPU", "type": "STRINGSET", "stringSetValue": ["1"]}]), "CPU must be of type INTEGER"),
        (dict(totalResources=resources(ports=("22", "http"))), "'http'"),
        (dict(instanceIdentityDocument="not json"), "instanceIdentityDocument"),
        (dict(attributes=[{"name": "bad name", "value": "x"}]), "Attribute name 'bad name'"),
        (dict(containerInstanceArn=ARN + cluster + "/ffffffffffffffffffffffffffffffff"), "is not registered"),
    ]
    for extra, says in cases:
        with pytest.raises(ClientError) as e:
            register(ecs, cluster, **extra)
        assert code(e)[0] == "InvalidParameterException" and says in code(e)[1], (extra, code(e))
    with pytest.raises(ClientError) as e:
        register(ecs, "no-such-cluster-x")
    assert code(e)[0] == "ClusterNotFoundException"
    assert ecs.list_container_instances(cluster=cluster)["containerInstanceArns"] == [], "nothing was stored"


def test_list_filters_by_status_and_query_language_and_paginates(ecs, cluster):
    a = register(ecs, cluster, "i-a", instanceIdentityDocument=iid("i-a", "us-east-1a", "m5.large"))
    b = register(ecs, cluster, "i-b", instanceIdentityDocument=iid("i-b", "us-east-1b", "t3.small"))
    c = register(ecs, cluster, "i-c", instanceIdentityDocument=iid("i-c", "us-east-1c", "m5.xlarge"))
    arns = lambda out: sorted(out["containerInstanceArns"])
    everyone = sorted(x["containerInstanceArn"] for x in (a, b, c))
    assert arns(ecs.list_container_instances(cluster=cluster)) == everyone
    m5 = ecs.list_container_instances(cluster=cluster, filter="attribute:ecs.instance-type =~ m5.*")
    assert arns(m5) == sorted([a["containerInstanceArn"], c["containerInstanceArn"]])
    zones = ecs.list_container_instances(
        cluster=cluster, filter="attribute:ecs.availability-zone in [us-east-1b, us-east-1c] and not(ec2InstanceId == i-c)")
    assert arns(zones) == [b["containerInstanceArn"]]

    ecs.update_container_instances_state(cluster=cluster, containerInstances=[b["containerInstanceArn"]], status="DRAINING")
    assert arns(ecs.list_container_instances(cluster=cluster, status="DRAINING")) == [b["containerInstanceArn"]]
    assert len(ecs.list_container_instances(cluster=cluster, status="ACTIVE")["containerInstanceArns"]) == 2

    seen = []
    page = ecs.list_container_instances(cluster=cluster, maxResults=2)
    seen += page["containerInstanceArns"]
    assert len(seen) == 2 and "nextToken" in page
    page = ecs.list_container_instances(cluster=cluster, maxResults=2, nextToken=page["nextToken"])
    seen += page["containerInstanceArns"]
    assert sorted(seen) == everyone and "nextToken" not in page

    with pytest.raises(ClientError) as e:
        ecs.list_container_instances(cluster=cluster, filter="attribute:ecs.instance-type ~= m5")
    assert code(e) == ("InvalidParameterException",
                       "Invalid query expression 'attribute:ecs.instance-type ~= m5': unknown operator '~='")
    with pytest.raises(ClientError) as e:
        ecs.list_container_instances(cluster=cluster, status="BROKEN")
    assert code(e)[0] == "InvalidParameterException"


def test_update_state_reports_missing_and_rejects_bad_status(ecs, cluster):
    ci = register(ecs, cluster)
    out = ecs.update_container_instances_state(cluster=cluster, status="DRAINING",
                                               containerInstances=[ci["containerInstanceArn"], "deadbeef"])
    assert [c["status"] for c in out["containerInstances"]] == ["DRAINING"]
    assert out["failures"] == [{"arn": ARN + cluster + "/deadbeef", "reason": "MISSING"}]
    with pytest.raises(ClientError) as e:
        ecs.update_container_instances_state(cluster=cluster, status="INACTIVE", containerInstances=[ci["containerInstanceArn"]])
    assert code(e)[0] == "InvalidParameterException" and "ACTIVE or DRAINING" in code(e)[1]
    back = ecs.update_container_instances_state(cluster=cluster, status="ACTIVE", containerInstances=[ci["containerInstanceArn"]])
    assert back["containerInstances"][0]["status"] == "ACTIVE"


def test_deregistered_instances_stay_describable_but_are_not_listed(ecs, cluster):
    ci = register(ecs, cluster)
    gone = ecs.deregister_container_instance(cluster=cluster, containerInstance=ci["containerInstanceArn"])
    assert gone["containerInstance"]["status"] == "INACTIVE"
    assert ecs.list_container_instances(cluster=cluster)["containerInstanceArns"] == []
    desc = ecs.describe_container_instances(cluster=cluster, containerInstances=[ci["containerInstanceArn"]])
    assert desc["containerInstances"][0]["status"] == "INACTIVE"
    assert ecs.describe_clusters(clusters=[cluster])["clusters"][0]["registeredContainerInstancesCount"] == 0
    with pytest.raises(ClientError) as e:
        ecs.deregister_container_instance(cluster=cluster, containerInstance=ci["containerInstanceArn"])
    assert code(e)[0] == "InvalidParameterException" and "not found" in code(e)[1]
    ecs.delete_cluster(cluster=cluster)


def test_attributes_put_list_delete(server, ecs, cluster):
    a = register(ecs, cluster, "i-a")["containerInstanceArn"]
    b = register(ecs, cluster, "i-b")["containerInstanceArn"]
    put = ecs.put_attributes(cluster=cluster, attributes=[
        {"name": "stack", "value": "prod", "targetId": a},
        {"name": "stack", "value": "dev", "targetId": b.rsplit("/", 1)[1]},
        {"name": "gpu", "targetId": a, "targetType": "container-instance"},
    ])["attributes"]
    assert len(put) == 3 and all(x["targetType"] == "container-instance" for x in put)

    listed = ecs.list_attributes(cluster=cluster, targetType="container-instance", attributeName="stack")["attributes"]
    assert sorted((x["targetId"], x["value"]) for x in listed) == sorted([(a, "prod"), (b, "dev")])
    prod = ecs.list_attributes(cluster=cluster, targetType="container-instance", attributeName="stack", attributeValue="prod")
    assert [x["targetId"] for x in prod["attributes"]] == [a]
    # The query language sees custom attributes too.
    assert ecs.list_container_instances(cluster=cluster, filter="attribute:gpu exists")["containerInstanceArns"] == [a]

    # The aws CLI, as users type it.
    out = aws_cli(server, "ecs", "list-attributes", "--cluster", cluster, "--target-type", "container-instance",
                  "--attribute-name", "gpu")
    assert [x["targetId"] for x in out["attributes"]] == [a]

    with pytest.raises(ClientError) as e:
        ecs.put_attributes(cluster=cluster, attributes=[{"name": "x", "value": "1", "targetId": a},
                                                        {"name": "y", "value": "1", "targetId": "ffffffff"}])
    assert code(e)[0] == "TargetNotFoundException"
    assert not ecs.list_attributes(cluster=cluster, targetType="container-instance", attributeName="x")["attributes"], \
        "a request with an unknown target changes nothing"
    with pytest.raises(ClientError) as e:
        ecs.put_attributes(cluster=cluster, attributes=[{"name": f"k{n}", "value": "v", "targetId": a} for n in range(10)])
    assert code(e)[0] == "AttributeLimitExceededException"
    with pytest.raises(ClientError) as e:
        ecs.list_attributes(cluster=cluster, targetType="task")
    assert code(e)[0] == "InvalidParameterException"

    ecs.delete_attributes(cluster=cluster, attributes=[{"name": "stack", "targetId": a}])
    left = ecs.list_attributes(cluster=cluster, targetType="container-instance", attributeName="stack")["attributes"]
    assert [x["targetId"] for x in left] == [b]

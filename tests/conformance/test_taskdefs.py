"""Task definition operations, validation and revision numbering."""

import concurrent.futures

import pytest
from botocore.exceptions import ClientError

from conftest import aws_cli, container

PREFIX = "arn:aws:ecs:us-east-1:000000000000:task-definition/"


def code(e):
    return e.value.response["Error"]["Code"], e.value.response["Error"]["Message"]


def register(ecs, family, **kw):
    kw.setdefault("containerDefinitions", [container()])
    return ecs.register_task_definition(family=family, **kw)


def test_register_fills_what_ecs_fills(ecs, name):
    r = register(ecs, name, tags=[{"key": "k", "value": "v"}], cpu="0.5 vCPU", memory="1 GB",
                 containerDefinitions=[container(portMappings=[{"containerPort": 80}])])
    td = r["taskDefinition"]
    assert td["taskDefinitionArn"] == f"{PREFIX}{name}:1"
    assert (td["family"], td["revision"], td["status"]) == (name, 1, "ACTIVE")
    assert (td["cpu"], td["memory"]) == ("512", "1024")
    c = td["containerDefinitions"][0]
    assert c["essential"] is True and c["cpu"] == 0
    assert c["portMappings"] == [{"containerPort": 80, "protocol": "tcp"}]
    assert td["compatibilities"] == ["EC2", "EXTERNAL"]
    assert td["registeredBy"] == "arn:aws:iam::000000000000:root"
    assert r["tags"] == [{"key": "k", "value": "v"}]
    assert {"name": "ecs.capability.task-cpu-mem-limit"} in td["requiresAttributes"]


def test_fargate_definition(ecs, name):
    td = register(ecs, name, requiresCompatibilities=["FARGATE"], networkMode="awsvpc", cpu="256", memory="512",
                  containerDefinitions=[{"name": "a", "image": "i", "portMappings": [{"containerPort": 8080}]}])["taskDefinition"]
    assert td["compatibilities"] == ["EC2", "FARGATE"]
    assert td["containerDefinitions"][0]["portMappings"][0]["hostPort"] == 8080
    assert {"name": "ecs.capability.task-eni"} in td["requiresAttributes"]


def test_revisions_increase_and_describe_by_every_reference(ecs, name):
    for i in range(3):
        assert register(ecs, name)["taskDefinition"]["revision"] == i + 1
    assert ecs.describe_task_definition(taskDefinition=name)["taskDefinition"]["revision"] == 3
    assert ecs.describe_task_definition(taskDefinition=f"{name}:2")["taskDefinition"]["revision"] == 2
    assert ecs.describe_task_definition(taskDefinition=f"{PREFIX}{name}:1")["taskDefinition"]["revision"] == 1
    ecs.deregister_task_definition(taskDefinition=f"{name}:3")
    assert ecs.describe_task_definition(taskDefinition=name)["taskDefinition"]["revision"] == 2, "latest ACTIVE"
    assert register(ecs, name)["taskDefinition"]["revision"] == 4, "revisions are never reused"


def test_describe_tags_only_when_included(ecs, name):
    register(ecs, name, tags=[{"key": "a", "value": "1"}])
    assert "tags" not in ecs.describe_task_definition(taskDefinition=name)
    assert ecs.describe_task_definition(taskDefinition=name, include=["TAGS"])["tags"] == [{"key": "a", "value": "1"}]


@pytest.mark.parametrize("ref,message", [
    ("nope-family-x", "Unable to describe task definition."),
    ("nope-family-x:3", "Unable to describe task definition."),
    ("arn:aws:ecs:us-east-1:000000000000:task-definition/nope:1", "Unable to describe task definition."),
    ("fam:0", "Invalid revision number. Number: 0"),
    ("fam:abc", "Invalid revision number. Number: abc"),
])
def test_describe_errors(ecs, ref, message):
    with pytest.raises(ClientError) as e:
        ecs.describe_task_definition(taskDefinition=ref)
    assert code(e) == ("ClientException", message)


BAD = [
    (dict(family="bad name"), "Invalid family"),
    (dict(containerDefinitions=[]), "Container list cannot be empty."),
    (dict(containerDefinitions=[{"name": "a", "image": "i"}]),
     "Invalid setting for container 'a'. At least one of 'memory' or 'memoryReservation' must be specified."),
    (dict(containerDefinitions=[container(memory=64, memoryReservation=128)]), "'memory' must be greater than or equal to 'memoryReservation'"),
    (dict(containerDefinitions=[{"image": "i", "memory": 64}]), "Container.name should not be null or empty."),
    (dict(containerDefinitions=[{"name": "a", "memory": 64}]), "Container.image should not be null or empty."),
    (dict(containerDefinitions=[container(), container()]), "Duplicate container name 'app'"),
    (dict(containerDefinitions=[container(essential=False)]), "essential"),
    (dict(containerDefinitions=[container(name=f"c{i}") for i in range(11)]), "at most 10"),
    (dict(cpu="lots"), "Invalid 'cpu' setting for task"),
    (dict(memory="2 TB"), "Invalid 'memory' setting for task"),
    (dict(cpu="256", containerDefinitions=[container(cpu=512)]), "must not exceed the task cpu"),
    (dict(memory="128", containerDefinitions=[container(memory=256)]), "must not exceed the task memory"),
    (dict(networkMode="host", containerDefinitions=[container(portMappings=[{"containerPort": 80, "hostPort": 81}])]),
     "When networkMode=host, the host ports and container ports in port mappings must match."),
    (dict(networkMode="awsvpc", containerDefinitions=[container(portMappings=[{"containerPort": 80, "hostPort": 81}])]),
     "When networkMode=awsvpc, the host ports and container ports in port mappings must match."),
    (dict(networkMode="none", containerDefinitions=[container(portMappings=[{"containerPort": 80}])]), "networkMode=none"),
    (dict(networkMode="overlay"), "networkMode"),
    (dict(containerDefinitions=[container(portMappings=[{"containerPort": 80, "protocol": "sctp"}])]), "portMappings.protocol"),
    (dict(containerDefinitions=[container(portMappings=[{"containerPort": 80, "hostPort": 8080}, {"containerPort": 81, "hostPort": 8080}])]),
     "Host port 8080/tcp"),
    (dict(containerDefinitions=[container(healthCheck={"command": ["CMD", "true"], "interval": 1})]), "healthCheck.interval"),
    (dict(containerDefinitions=[container(healthCheck={"command": ["CMD", "true"], "retries": 11})]), "healthCheck.retries"),
    (dict(containerDefinitions=[container(healthCheck={"command": ["true"]})]), "CMD, CMD-SHELL or NONE"),
    (dict(containerDefinitions=[container(name="a", dependsOn=[{"containerName": "b", "condition": "SUCCESS"}]), container(name="b")]),
     "not allowed on essential container 'b'"),
    (dict(containerDefinitions=[container(name="a", dependsOn=[{"containerName": "b", "condition": "HEALTHY"}]), container(name="b")]),
     "requires container 'b' to have a healthCheck"),
    (dict(containerDefinitions=[container(name="a", dependsOn=[{"containerName": "zz", "condition": "START"}])]), "'zz' is not another container"),
    (dict(containerDefinitions=[container(mountPoints=[{"sourceVolume": "data", "containerPath": "/d"}])]), "sourceVolume 'data'"),
    (dict(networkMode="awsvpc", containerDefinitions=[container(name="a", links=["b"]), container(name="b", essential=False)]),
     "Links are not supported when networkMode=awsvpc."),
    (dict(placementConstraints=[{"type": "distinctInstance"}]), "memberOf"),
    (dict(ephemeralStorage={"sizeInGiB": 10}), "ephemeralStorage"),
    (dict(tags=[{"key": "aws:reserved", "value": "x"}]), "aws:"),
    (dict(requiresCompatibilities=["FARGATE"], networkMode="bridge", cpu="256", memory="512"),
     "Fargate only supports network mode \u2018awsvpc\u2019."),
    (dict(requiresCompatibilities=["FARGATE"], networkMode="awsvpc", memory="512"),
     "Fargate requires that 'cpu' be defined at the task level."),
    (dict(requiresCompatibilities=["FARGATE"], networkMode="awsvpc", cpu="256"),
     "Fargate requires that 'memory' be defined at the task level."),
    (dict(requiresCompatibilities=["FARGATE"], networkMode="awsvpc", cpu="256", memory="4096"),
     "No Fargate configuration exists for given values: 256 CPU, 4096 memory"),
    (dict(requiresCompatibilities=["FARGATE"], networkMode="awsvpc", cpu="1024", memory="1024"),
     "No Fargate configuration exists for given values"),
    (dict(requiresCompatibilities=["FARGATE"], networkMode="awsvpc", cpu="256", memory="512", pidMode="host"),
     "Tasks using the Fargate launch type do not support pidMode 'host'. The supported value for pidMode is 'task'."),
    (dict(requiresCompatibilities=["FARGATE"], networkMode="awsvpc", cpu="256", memory="512",
          containerDefinitions=[container(privileged=True)]), "privileged"),
    (dict(requiresCompatibilities=["FARGATE"], networkMode="awsvpc", cpu="256", memory="512",
          volumes=[{"name": "v", "host": {"sourcePath": "/etc"}}]), "host volumes"),
    (dict(requiresCompatibilities=["FARGATE"], networkMode="awsvpc", cpu="256", memory="512",
          volumes=[{"name": "v", "dockerVolumeConfiguration": {"scope": "task"}}]), "dockerVolumeConfiguration"),
    (dict(requiresCompatibilities=["FARGATE"], networkMode="awsvpc", cpu="256", memory="512",
          containerDefinitions=[container(stopTimeout=121)]), "stopTimeout"),
]


@pytest.mark.parametrize("kw,message", BAD, ids=[m[:40] for _, m in BAD])
def test_register_rejects_with_ecs_wording(ecs, name, kw, message):
    register(ecs, name)
    before = ecs.list_task_definitions(familyPrefix=name)["taskDefinitionArns"]
    kw = dict(kw)
    family = kw.pop("family", name)
    with pytest.raises(ClientError) as e:
        ecs.register_task_definition(family=family, **{"containerDefinitions": [container()], **kw})
    # Tag rules are shared by every resource and raise InvalidParameterException, as TagResource does.
    assert code(e)[0] == ("InvalidParameterException" if "tags" in kw else "ClientException")
    assert message in code(e)[1]
    assert ecs.list_task_definitions(familyPrefix=name)["taskDefinitionArns"] == before, "nothing stored changed"
    assert register(ecs, name)["taskDefinition"]["revision"] == 2, "a rejection consumes no revision"


def test_list_task_definitions_filters_sort_and_pages(ecs, name):
    other = name + "x"
    for _ in range(5):
        register(ecs, name)
    register(ecs, other)
    ecs.deregister_task_definition(taskDefinition=f"{name}:2")
    arns = ecs.list_task_definitions(familyPrefix=name)["taskDefinitionArns"]
    assert arns == [f"{PREFIX}{name}:{r}" for r in (1, 3, 4, 5)], "familyPrefix is the whole family name"
    assert ecs.list_task_definitions(familyPrefix=name, status="INACTIVE")["taskDefinitionArns"] == [f"{PREFIX}{name}:2"]
    desc = ecs.list_task_definitions(familyPrefix=name, sort="DESC")["taskDefinitionArns"]
    assert desc == list(reversed(arns))
    pages = []
    for sort in ("ASC", "DESC"):
        got = []
        for p in ecs.get_paginator("list_task_definitions").paginate(familyPrefix=name, sort=sort, PaginationConfig={"PageSize": 3}):
            got += p["taskDefinitionArns"]
        pages.append(got)
    assert pages == [arns, desc]
    with pytest.raises(ClientError) as e:
        ecs.list_task_definitions(status="GONE")
    assert code(e)[0] == "InvalidParameterException"
    with pytest.raises(ClientError) as e:
        ecs.list_task_definitions(maxResults=0)
    assert code(e)[0] == "InvalidParameterException"


def test_list_families(ecs, name):
    for suffix in ("a", "b", "c"):
        register(ecs, name + suffix)
    ecs.deregister_task_definition(taskDefinition=f"{name}b:1")
    assert ecs.list_task_definition_families(familyPrefix=name)["families"] == [name + "a", name + "b", name + "c"]
    assert ecs.list_task_definition_families(familyPrefix=name, status="ACTIVE")["families"] == [name + "a", name + "c"]
    assert ecs.list_task_definition_families(familyPrefix=name, status="INACTIVE")["families"] == [name + "b"]
    p1 = ecs.list_task_definition_families(familyPrefix=name, maxResults=2)
    p2 = ecs.list_task_definition_families(familyPrefix=name, maxResults=2, nextToken=p1["nextToken"])
    assert p1["families"] + p2["families"] == [name + "a", name + "b", name + "c"]
    with pytest.raises(ClientError) as e:
        ecs.list_task_definition_families(status="SOME")
    assert code(e)[0] == "InvalidParameterException"


def test_deregister_and_delete(ecs, name):
    register(ecs, name)
    register(ecs, name)
    with pytest.raises(ClientError) as e:
        ecs.deregister_task_definition(taskDefinition=name)
    assert code(e) == ("ClientException", "Revision is missing.")
    with pytest.raises(ClientError) as e:
        ecs.deregister_task_definition(taskDefinition=f"{name}:9")
    assert code(e) == ("ClientException", "Unable to describe task definition.")
    td = ecs.deregister_task_definition(taskDefinition=f"{name}:1")["taskDefinition"]
    assert td["status"] == "INACTIVE" and "deregisteredAt" in td
    assert ecs.deregister_task_definition(taskDefinition=f"{name}:1")["taskDefinition"]["status"] == "INACTIVE"

    r = ecs.delete_task_definitions(taskDefinitions=[f"{name}:1", f"{name}:2", f"{name}:7", name])
    assert [t["revision"] for t in r["taskDefinitions"]] == [1]
    assert r["taskDefinitions"][0]["status"] == "DELETE_IN_PROGRESS"
    reasons = {f["arn"]: f["reason"] for f in r["failures"]}
    assert "still in ACTIVE status" in reasons[f"{name}:2"]
    assert "does not exist" in reasons[f"{name}:7"]
    assert "revision" in reasons[name]
    assert ecs.describe_task_definition(taskDefinition=f"{name}:1")["taskDefinition"]["status"] == "DELETE_IN_PROGRESS"
    assert ecs.list_task_definitions(familyPrefix=name, status="DELETE_IN_PROGRESS")["taskDefinitionArns"] == [f"{PREFIX}{name}:1"]
    with pytest.raises(ClientError) as e:
        ecs.delete_task_definitions(taskDefinitions=[f"{name}:{i}" for i in range(1, 12)])
    assert code(e)[0] == "InvalidParameterException"


def test_concurrent_registrations_have_no_gaps(ecs, name):
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        revs = list(pool.map(lambda _: register(ecs, name)["taskDefinition"]["revision"], range(64)))
    assert sorted(revs) == list(range(1, 65))


def test_task_definitions_with_aws_cli(server, name, tmp_path):
    spec = tmp_path / "td.json"
    spec.write_text('{"family": "%s", "containerDefinitions": [{"name": "web", "image": "nginx", "memory": 128, '
                    '"portMappings": [{"containerPort": 80}]}]}' % name)
    out = aws_cli(server, "ecs", "register-task-definition", "--cli-input-json", f"file://{spec}")
    assert out["taskDefinition"]["revision"] == 1
    got = aws_cli(server, "ecs", "describe-task-definition", "--task-definition", name)
    assert got["taskDefinition"]["containerDefinitions"][0]["name"] == "web"
    listed = aws_cli(server, "ecs", "list-task-definitions", "--family-prefix", name)
    assert listed["taskDefinitionArns"] == [f"{PREFIX}{name}:1"]
    bad = aws_cli(server, "ecs", "register-task-definition", "--family", name, "--container-definitions",
                  '[{"name":"web","image":"nginx"}]', check=False)
    assert bad.returncode != 0 and "At least one of 'memory' or 'memoryReservation' must be specified." in bad.stderr


def test_describe_follows_changes_to_the_same_revision(ecs, name):
    arn = register(ecs, name, tags=[{"key": "a", "value": "1"}])["taskDefinition"]["taskDefinitionArn"]
    ref = f"{name}:1"
    for _ in range(2):  # the second round can be answered from the server's answer cache
        assert ecs.describe_task_definition(taskDefinition=ref)["taskDefinition"]["status"] == "ACTIVE"
        assert ecs.describe_task_definition(taskDefinition=ref, include=["TAGS"])["tags"] == [{"key": "a", "value": "1"}]
    ecs.tag_resource(resourceArn=arn, tags=[{"key": "a", "value": "2"}])
    assert ecs.describe_task_definition(taskDefinition=ref, include=["TAGS"])["tags"] == [{"key": "a", "value": "2"}]
    assert "tags" not in ecs.describe_task_definition(taskDefinition=ref)
    ecs.deregister_task_definition(taskDefinition=ref)
    assert ecs.describe_task_definition(taskDefinition=ref)["taskDefinition"]["status"] == "INACTIVE"
    assert ecs.describe_task_definition(taskDefinition=arn, include=["TAGS"])["taskDefinition"]["status"] == "INACTIVE"

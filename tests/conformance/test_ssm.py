"""Parameter Store with real clients: versions, labels, hierarchies,
SecureString sealed at rest, SSM's errors, and IAM deciding who reads what."""

import glob
import json

import pytest

from conftest import aws_cli
from test_iam import allow, client, error_of, user_with

ACCOUNT = "000000000000"


def test_versions_selectors_labels_and_history(server, name):
    ssm = client(server, "ssm")
    p = f"/{name}/db/url"
    assert ssm.put_parameter(Name=p, Value="one", Type="String", Description="the db")["Version"] == 1
    code = error_of(ssm.put_parameter, Name=p, Value="two", Type="String")
    assert code[:2] == (400, "ParameterAlreadyExists") and "overwrite option" in code[2]
    r = ssm.put_parameter(Name=p, Value="two", Overwrite=True)
    assert (r["Version"], r["Tier"]) == (2, "Standard")
    got = ssm.get_parameter(Name=p)["Parameter"]
    assert (got["Value"], got["Version"], got["Type"], got["DataType"]) == ("two", 2, "String", "text")
    assert got["ARN"] == f"arn:aws:ssm:us-east-1:{ACCOUNT}:parameter/{name}/db/url"
    first = ssm.get_parameter(Name=f"{p}:1")["Parameter"]
    assert (first["Value"], first["Selector"]) == ("one", ":1")
    assert error_of(ssm.get_parameter, Name=f"{p}:9")[1] == "ParameterVersionNotFound"
    # A label moves to the version it is put on; a label that cannot be
    # one comes back as invalid.
    r = ssm.label_parameter_version(Name=p, ParameterVersion=1, Labels=["live", "1bad"])
    assert (r["ParameterVersion"], r["InvalidLabels"]) == (1, ["1bad"])
    assert ssm.get_parameter(Name=f"{p}:live")["Parameter"]["Value"] == "one"
    ssm.label_parameter_version(Name=p, Labels=["live"])
    assert ssm.get_parameter(Name=f"{p}:live")["Parameter"]["Value"] == "two"
    history = ssm.get_parameter_history(Name=p)["Parameters"]
    assert [(h["Version"], h["Value"], h["Labels"]) for h in history] == [(1, "one", []), (2, "two", ["live"])]
    assert history[0]["Description"] == "the db" and history[0]["LastModifiedUser"].startswith("arn:aws:iam::")
    r = ssm.unlabel_parameter_version(Name=p, ParameterVersion=2, Labels=["live", "nope"])
    assert (r["RemovedLabels"], r["InvalidLabels"]) == (["live"], ["nope"])
    # By ARN, and `/x` is the same parameter as `x`.
    arn = got["ARN"]
    assert ssm.get_parameter(Name=arn)["Parameter"]["Value"] == "two"
    ssm.put_parameter(Name=f"/{name}", Value="top", Type="String")
    assert ssm.get_parameter(Name=name)["Parameter"]["Value"] == "top"


def test_hierarchies_filters_and_pages(server, name):
    ssm = client(server, "ssm")
    for i in range(12):
        ssm.put_parameter(Name=f"/{name}/svc/p{i:02}", Value=str(i), Type="String")
    ssm.put_parameter(Name=f"/{name}/svc/deep/x", Value="d", Type="StringList", Tags=[{"Key": "team", "Value": "blue"}])
    ssm.put_parameter(Name=f"/{name}/svc/s", Value="secret", Type="SecureString")
    one_level = []
    token = None
    while True:
        kw = {"NextToken": token} if token else {}
        page = ssm.get_parameters_by_path(Path=f"/{name}/svc", MaxResults=5, **kw)
        one_level += [p["Name"] for p in page["Parameters"]]
        token = page.get("NextToken")
        if not token:
            break
    assert len(one_level) == 13 and f"/{name}/svc/deep/x" not in one_level
    everything = ssm.get_paginator("get_parameters_by_path").paginate(Path=f"/{name}", Recursive=True, WithDecryption=True)
    values = {p["Name"]: p["Value"] for page in everything for p in page["Parameters"]}
    assert len(values) == 14 and values[f"/{name}/svc/s"] == "secret"
    typed = ssm.get_parameters_by_path(Path=f"/{name}/svc", Recursive=True,
                                       ParameterFilters=[{"Key": "Type", "Values": ["StringList"]}])
    assert [p["Name"] for p in typed["Parameters"]] == [f"/{name}/svc/deep/x"]
    described = ssm.describe_parameters(ParameterFilters=[
        {"Key": "Name", "Option": "BeginsWith", "Values": [f"/{name}/svc/p0"]}], MaxResults=50)["Parameters"]
    assert sorted(d["Name"] for d in described) == [f"/{name}/svc/p{i:02}" for i in range(10)]
    tagged = ssm.describe_parameters(ParameterFilters=[{"Key": "tag:team", "Values": ["blue"]}])["Parameters"]
    assert [d["Name"] for d in tagged] == [f"/{name}/svc/deep/x"]
    secure = ssm.describe_parameters(Filters=[{"Key": "Type", "Values": ["SecureString"]},
                                              {"Key": "Name", "Values": [f"/{name}/"]}])["Parameters"]
    assert [(d["Name"], d["KeyId"]) for d in secure] == [(f"/{name}/svc/s", "alias/aws/ssm")]
    assert error_of(ssm.describe_parameters, ParameterFilters=[{"Key": "Colour", "Values": ["x"]}])[1] == "InvalidFilterKey"
    assert error_of(ssm.get_parameters_by_path, Path=f"/{name}", NextToken="bogus")[1] == "InvalidNextToken"
    r = ssm.get_parameters(Names=[f"/{name}/svc/p00", f"/{name}/svc/p01:1", f"/{name}/nope"])
    assert sorted(p["Name"] for p in r["Parameters"]) == [f"/{name}/svc/p00", f"/{name}/svc/p01"]
    assert r["InvalidParameters"] == [f"/{name}/nope"]
    r = ssm.delete_parameters(Names=[f"/{name}/svc/p00", f"/{name}/nope"])
    assert (r["DeletedParameters"], r["InvalidParameters"]) == ([f"/{name}/svc/p00"], [f"/{name}/nope"])
    ssm.delete_parameter(Name=f"/{name}/svc/p01")
    assert error_of(ssm.get_parameter, Name=f"/{name}/svc/p01")[:2] == (400, "ParameterNotFound")
    assert error_of(ssm.delete_parameter, Name=f"/{name}/svc/p01")[1] == "ParameterNotFound"


def test_tags_of_a_parameter(server, name):
    ssm = client(server, "ssm")
    p = f"/{name}/tagged"
    ssm.put_parameter(Name=p, Value="v", Type="String", Tags=[{"Key": "a", "Value": "1"}])
    ssm.add_tags_to_resource(ResourceType="Parameter", ResourceId=p, Tags=[{"Key": "b", "Value": "2"}])
    ssm.remove_tags_from_resource(ResourceType="Parameter", ResourceId=p, TagKeys=["a"])
    assert ssm.list_tags_for_resource(ResourceType="Parameter", ResourceId=p)["TagList"] == [{"Key": "b", "Value": "2"}]
    assert error_of(ssm.list_tags_for_resource, ResourceType="Parameter", ResourceId=f"/{name}/nope")[1] == "InvalidResourceId"
    assert error_of(ssm.list_tags_for_resource, ResourceType="Document", ResourceId="d")[1] == "InvalidResourceType"
    code = error_of(ssm.put_parameter, Name=p, Value="w", Overwrite=True, Tags=[{"Key": "c", "Value": "3"}])
    assert code[1] == "ValidationException" and "AddTagsToResource" in code[2]


def test_bad_input_gets_ssms_errors_and_changes_nothing(server, name):
    ssm = client(server, "ssm")
    cases = [
        (dict(Name=f"{name}/a", Value="v", Type="String"), "ValidationException", "fully qualified"),
        (dict(Name=f"/{name}/a b", Value="v", Type="String"), "ValidationException", "sub-path"),
        (dict(Name=f"/{name}/a", Value="v"), "ValidationException", "type is required"),
        (dict(Name=f"/{name}/a", Value="v", Type="Text"), "ValidationException", "'type'"),
        (dict(Name=f"/{name}/a", Value="x" * 4097, Type="String"), "ValidationException", "4096"),
        (dict(Name=f"/{name}/a", Value="abc", Type="String", AllowedPattern="[0-9]+"),
         "ParameterPatternMismatchException", "[0-9]+"),
        (dict(Name=f"/{name}/a", Value="1", Type="String", AllowedPattern="("), "InvalidAllowedPatternException", "("),
        (dict(Name="/" + "/".join(["l"] * 16), Value="v", Type="String"), "HierarchyLevelLimitExceededException", "15"),
        (dict(Name="ssm-x", Value="v", Type="String"), "ValidationException", "prefixed"),
        (dict(Name=f"/{name}/a", Value="v", Type="String", KeyId="alias/mine"), "ValidationException", "KeyId"),
    ]
    for kw, code, words in cases:
        status, got, message = error_of(ssm.put_parameter, **kw)
        assert (status, got) == (400, code), (kw, got, message)
        assert words in message, (kw, message)
    assert error_of(ssm.get_parameter, Name=f"/{name}/a")[1] == "ParameterNotFound"
    # A refused overwrite leaves the parameter as it was.
    ssm.put_parameter(Name=f"/{name}/n", Value="1", Type="String", AllowedPattern="[0-9]+")
    assert error_of(ssm.put_parameter, Name=f"/{name}/n", Value="x", Overwrite=True)[1] == "ParameterPatternMismatchException"
    got = ssm.get_parameter(Name=f"/{name}/n")["Parameter"]
    assert (got["Value"], got["Version"]) == ("1", 1)
    assert error_of(ssm.get_parameters, Names=[f"/{name}/{i}" for i in range(11)])[1] == "ValidationException"
    assert error_of(ssm.get_parameters_by_path, Path=f"/{name}", MaxResults=11)[1] == "ValidationException"


def test_secure_strings_are_sealed_at_rest(server, name):
    ssm = client(server, "ssm")
    secret = f"hunter2-{name}"
    ssm.put_parameter(Name=f"/{name}/pw", Value=secret, Type="SecureString")
    plain = ssm.get_parameter(Name=f"/{name}/pw", WithDecryption=True)["Parameter"]
    sealed = ssm.get_parameter(Name=f"/{name}/pw")["Parameter"]
    assert plain["Value"] == secret and sealed["Value"] != secret and secret not in sealed["Value"]
    stored = b"".join(open(f, "rb").read() for f in glob.glob(f"{server.data_dir}/**/*", recursive=True)
                      if not f.endswith(".log") and not __import__("os").path.isdir(f))
    assert name.encode() in stored, "the parameter's record is in the data dir"
    assert secret.encode() not in stored


def test_the_aws_cli(server, name):
    p = f"/{name}/cli/token"
    assert aws_cli(server, "ssm", "put-parameter", "--name", p, "--value", "s3cr3t",
                   "--type", "SecureString", "--region", "us-east-1")["Version"] == 1
    got = aws_cli(server, "ssm", "get-parameter", "--name", p, "--with-decryption", "--region", "us-east-1")
    assert got["Parameter"]["Value"] == "s3cr3t"
    listed = aws_cli(server, "ssm", "get-parameters-by-path", "--path", f"/{name}", "--recursive",
                     "--region", "us-east-1")
    assert [x["Name"] for x in listed["Parameters"]] == [p]
    aws_cli(server, "ssm", "delete-parameter", "--name", p, "--region", "us-east-1")
    r = aws_cli(server, "ssm", "get-parameter", "--name", p, "--region", "us-east-1", check=False)
    assert r.returncode != 0 and "ParameterNotFound" in r.stderr


def test_policies_decide_which_parameters_a_user_reads(server, name):
    iam, ssm = client(server, "iam"), client(server, "ssm")
    ssm.put_parameter(Name=f"/{name}/app/url", Value="u", Type="String")
    ssm.put_parameter(Name=f"/{name}/other/key", Value="k", Type="String")
    key, secret = user_with(server, iam, name, inline=allow(
        ["ssm:GetParameter", "ssm:GetParameters", "ssm:GetParametersByPath"],
        [f"arn:aws:ssm:us-east-1:{ACCOUNT}:parameter/{name}/app", f"arn:aws:ssm:us-east-1:{ACCOUNT}:parameter/{name}/app/*"]))
    mine = client(server, "ssm", key, secret)
    assert mine.get_parameter(Name=f"/{name}/app/url")["Parameter"]["Value"] == "u"
    assert mine.get_parameter(Name=f"/{name}/app/url:1")["Parameter"]["Value"] == "u"
    status, code, message = error_of(mine.get_parameter, Name=f"/{name}/other/key")
    assert (status, code) == (400, "AccessDeniedException")
    assert f"ssm:GetParameter on resource: arn:aws:ssm:us-east-1:{ACCOUNT}:parameter/{name}/other/key" in message
    assert [p["Name"] for p in mine.get_parameters_by_path(Path=f"/{name}/app")["Parameters"]] == [f"/{name}/app/url"]
    assert error_of(mine.get_parameters_by_path, Path=f"/{name}/other")[1] == "AccessDeniedException"
    assert error_of(mine.get_parameters, Names=[f"/{name}/app/url", f"/{name}/other/key"])[1] == "AccessDeniedException"
    assert error_of(mine.put_parameter, Name=f"/{name}/app/new", Value="v", Type="String")[1] == "AccessDeniedException"
    assert error_of(ssm.get_parameter, Name=f"/{name}/app/new")[1] == "ParameterNotFound"

"""The EC2 networking API with boto3 and the aws CLI (v1 and v2): VPCs,
subnets, zones, security groups and their rules, tags, filters, and EC2's
errors for bad input, which change nothing. Every test takes VPC blocks of
its own: Berth's VPCs share one routing domain, so theirs never overlap.
Rules reaching running tasks are in test_awsvpc.py."""

import os
import shutil
import subprocess

import botocore.exceptions
import pytest

from conftest import AWS_ENV, aws_cli, make_client


@pytest.fixture(scope="module")
def ec2(server):
    return make_client(server.url, "ec2")


def error_of(call, **kw):
    with pytest.raises(botocore.exceptions.ClientError) as e:
        call(**kw)
    return e.value.response["Error"]["Code"], e.value.response["Error"]["Message"]


def snapshot(ec2):
    return (ec2.describe_vpcs()["Vpcs"], ec2.describe_subnets()["Subnets"],
            ec2.describe_security_groups()["SecurityGroups"])


def test_a_default_vpc_with_its_subnets_and_groups_exists(ec2):
    vpcs = ec2.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])["Vpcs"]
    assert [(v["VpcId"], v["CidrBlock"], v["State"]) for v in vpcs] == [("vpc-local", "10.128.0.0/16", "available")]
    subnets = ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": ["vpc-local"]},
                                            {"Name": "default-for-az", "Values": ["true"]}])["Subnets"]
    assert {s["SubnetId"]: s["AvailabilityZone"] for s in subnets} == {
        "subnet-local-1a": "local-1a", "subnet-local-1b": "local-1b", "subnet-local-1c": "local-1c"}
    default = ec2.describe_security_groups(GroupNames=["default"])["SecurityGroups"][0]
    assert default["GroupId"] == "sg-default" and default["VpcId"] == "vpc-local"
    assert default["IpPermissions"][0]["UserIdGroupPairs"][0]["GroupId"] == "sg-default"
    assert default["IpPermissionsEgress"][0]["IpRanges"] == [{"CidrIp": "0.0.0.0/0"}]
    zones = [z["ZoneName"] for z in ec2.describe_availability_zones()["AvailabilityZones"]]
    assert {"local-1a", "local-1b", "local-1c"} <= set(zones)
    attrs = {a["AttributeName"]: a["AttributeValues"][0]["AttributeValue"]
             for a in ec2.describe_account_attributes()["AccountAttributes"]}
    assert attrs["default-vpc"] == "vpc-local" and attrs["supported-platforms"] == "VPC"


def test_vpcs_subnets_and_groups_live_and_die_as_in_ec2(ec2):
    vpc = ec2.create_vpc(CidrBlock="10.201.0.0/16", TagSpecifications=[
        {"ResourceType": "vpc", "Tags": [{"Key": "Name", "Value": "conformance"}]}])["Vpc"]
    vid = vpc["VpcId"]
    assert vid.startswith("vpc-") and len(vid) == 21 and not vpc["IsDefault"]
    assert ec2.describe_vpcs(Filters=[{"Name": "tag:Name", "Values": ["conf*"]}])["Vpcs"][0]["VpcId"] == vid
    # Its own default group came with it.
    own = ec2.describe_security_groups(Filters=[{"Name": "vpc-id", "Values": [vid]}])["SecurityGroups"]
    assert [g["GroupName"] for g in own] == ["default"]

    before = snapshot(ec2)
    bad = [
        (ec2.create_vpc, {"CidrBlock": "10.201.128.0/17"}, "InvalidVpc.Range", "overlaps"),
        (ec2.create_vpc, {"CidrBlock": "10.0.0.0/8"}, "InvalidVpc.Range", "is invalid"),
        (ec2.create_vpc, {"CidrBlock": "10.9.0.1/16"}, "InvalidParameterValue", "cidrBlock"),
        (ec2.create_subnet, {"VpcId": vid, "CidrBlock": "10.202.0.0/24"}, "InvalidSubnet.Range", "10.202.0.0/24"),
        (ec2.create_subnet, {"VpcId": vid, "CidrBlock": "10.201.0.0/29"}, "InvalidSubnet.Range", "10.201.0.0/29"),
        (ec2.create_subnet, {"VpcId": vid, "CidrBlock": "10.201.0.0/24", "AvailabilityZone": "mars-1a"},
         "InvalidParameterValue", "availabilityZone"),
        (ec2.create_subnet, {"VpcId": "vpc-0000000000000000f", "CidrBlock": "10.201.0.0/24"},
         "InvalidVpcID.NotFound", "vpc-0000000000000000f"),
        (ec2.create_security_group, {"GroupName": "default", "Description": "x", "VpcId": vid},
         "InvalidGroup.Reserved", "default"),
        (ec2.delete_vpc, {"VpcId": "vpc-0000000000000000f"}, "InvalidVpcID.NotFound", "vpc-0000000000000000f"),
    ]
    for call, kw, code, words in bad:
        got = error_of(call, **kw)
        assert got[0] == code and words in got[1], (kw, got)
    assert snapshot(ec2) == before, "a refused request changed something"

    subnet = ec2.create_subnet(VpcId=vid, CidrBlock="10.201.0.0/24", AvailabilityZone="local-1b")["Subnet"]
    assert (subnet["AvailabilityZone"], subnet["AvailableIpAddressCount"], subnet["VpcId"]) == ("local-1b", 251, vid)
    code, msg = error_of(ec2.create_subnet, VpcId=vid, CidrBlock="10.201.0.128/25")
    assert code == "InvalidSubnet.Conflict"
    web = ec2.create_security_group(GroupName="web", Description="web tier", VpcId=vid)["GroupId"]
    db = ec2.create_security_group(GroupName="db", Description="db tier", VpcId=vid)["GroupId"]
    assert error_of(ec2.create_security_group, GroupName="web", Description="again", VpcId=vid)[0] == "InvalidGroup.Duplicate"

    ec2.authorize_security_group_ingress(GroupId=web, IpPermissions=[
        {"IpProtocol": "tcp", "FromPort": 80, "ToPort": 80, "IpRanges": [{"CidrIp": "0.0.0.0/0", "Description": "http"}]},
        {"IpProtocol": "tcp", "FromPort": 443, "ToPort": 443, "IpRanges": [{"CidrIp": "10.0.0.0/8"}, {"CidrIp": "192.168.0.0/16"}]},
        {"IpProtocol": "icmp", "FromPort": 8, "ToPort": -1, "IpRanges": [{"CidrIp": "10.0.0.0/8"}]}])
    added = ec2.authorize_security_group_ingress(GroupId=db, IpPermissions=[
        {"IpProtocol": "tcp", "FromPort": 5432, "ToPort": 5432, "UserIdGroupPairs": [{"GroupId": web}]}])
    assert added["Return"] and added["SecurityGroupRules"][0]["ReferencedGroupInfo"]["GroupId"] == web

    before = snapshot(ec2)
    code, msg = error_of(ec2.authorize_security_group_ingress, GroupId=web, IpPermissions=[
        {"IpProtocol": "tcp", "FromPort": 80, "ToPort": 80, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}])
    assert code == "InvalidPermission.Duplicate"
    assert msg == 'the specified rule "peer: 0.0.0.0/0, TCP, from port: 80, to port: 80, ALLOW" already exists'
    for perm, code in [
        ({"IpProtocol": "tcp", "FromPort": 90, "ToPort": 80, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}, "InvalidParameterValue"),
        ({"IpProtocol": "tcp", "FromPort": 1, "ToPort": 70000, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}, "InvalidParameterValue"),
        ({"IpProtocol": "tcp", "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}, "InvalidParameterValue"),
        ({"IpProtocol": "bogus", "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}, "InvalidParameterValue"),
        ({"IpProtocol": "tcp", "FromPort": 1, "ToPort": 2, "IpRanges": [{"CidrIp": "10.0.0.1/8"}]}, "InvalidParameterValue"),
        ({"IpProtocol": "-1", "UserIdGroupPairs": [{"GroupId": "sg-0000000000000000f"}]}, "InvalidGroup.NotFound"),
    ]:
        assert error_of(ec2.authorize_security_group_ingress, GroupId=web, IpPermissions=[perm])[0] == code, perm
    assert error_of(ec2.authorize_security_group_ingress, GroupId="sg-0000000000000000f", IpPermissions=[
        {"IpProtocol": "-1", "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}])[0] == "InvalidGroup.NotFound"
    assert snapshot(ec2) == before, "a refused rule changed something"

    g = ec2.describe_security_groups(GroupIds=[web])["SecurityGroups"][0]
    perms = {(p["IpProtocol"], p.get("FromPort"), p.get("ToPort")): sorted(r["CidrIp"] for r in p["IpRanges"])
             for p in g["IpPermissions"]}
    assert perms == {("tcp", 80, 80): ["0.0.0.0/0"], ("tcp", 443, 443): ["10.0.0.0/8", "192.168.0.0/16"],
                     ("icmp", 8, -1): ["10.0.0.0/8"]}
    assert ec2.describe_security_groups(Filters=[{"Name": "ip-permission.group-id", "Values": [web]}])[
        "SecurityGroups"][0]["GroupId"] == db
    rules = ec2.describe_security_group_rules(Filters=[{"Name": "group-id", "Values": [web]}])["SecurityGroupRules"]
    assert len([r for r in rules if not r["IsEgress"]]) == 4 and len([r for r in rules if r["IsEgress"]]) == 1
    https = [r["SecurityGroupRuleId"] for r in rules if r.get("FromPort") == 443]
    ec2.revoke_security_group_ingress(GroupId=web, SecurityGroupRuleIds=https)
    assert error_of(ec2.revoke_security_group_ingress, GroupId=web, IpPermissions=[
        {"IpProtocol": "tcp", "FromPort": 443, "ToPort": 443, "IpRanges": [{"CidrIp": "10.0.0.0/8"}]}])[0] == "InvalidPermission.NotFound"
    egress = [r["SecurityGroupRuleId"] for r in rules if r["IsEgress"]]
    ec2.revoke_security_group_egress(GroupId=web, SecurityGroupRuleIds=egress)
    assert ec2.describe_security_groups(GroupIds=[web])["SecurityGroups"][0]["IpPermissionsEgress"] == []

    # Tags on anything, filters over them.
    ec2.create_tags(Resources=[subnet["SubnetId"], web], Tags=[{"Key": "tier", "Value": "front"}])
    tagged = ec2.describe_tags(Filters=[{"Name": "key", "Values": ["tier"]}])["Tags"]
    assert sorted((t["ResourceId"], t["ResourceType"]) for t in tagged) == sorted(
        [(subnet["SubnetId"], "subnet"), (web, "security-group")])
    assert ec2.describe_subnets(Filters=[{"Name": "tag:tier", "Values": ["front"]}])["Subnets"][0]["SubnetId"] == subnet["SubnetId"]
    ec2.delete_tags(Resources=[web], Tags=[{"Key": "tier"}])
    assert "Tags" not in ec2.describe_security_groups(GroupIds=[web])["SecurityGroups"][0]
    assert error_of(ec2.describe_subnets, Filters=[{"Name": "bogus", "Values": ["x"]}])[0] == "InvalidParameterValue"

    # What is in use cannot go; the rest goes in order.
    assert error_of(ec2.delete_vpc, VpcId=vid)[0] == "DependencyViolation"
    code, msg = error_of(ec2.delete_security_group, GroupId=web)
    assert (code, msg) == ("DependencyViolation", f"resource {web} has a dependent object")
    default = [x["GroupId"] for x in own][0]
    assert error_of(ec2.delete_security_group, GroupId=default)[0] == "CannotDelete"
    ec2.delete_security_group(GroupId=db)
    ec2.delete_security_group(GroupId=web)
    ec2.delete_subnet(SubnetId=subnet["SubnetId"])
    ec2.delete_vpc(VpcId=vid)
    assert error_of(ec2.describe_vpcs, VpcIds=[vid])[0] == "InvalidVpcID.NotFound"
    assert error_of(ec2.describe_security_groups, GroupIds=[default])[0] == "InvalidGroup.NotFound"


def test_the_aws_cli_manages_groups_with_its_short_forms(server):
    vpc = aws_cli(server, "ec2", "create-vpc", "--cidr-block", "10.203.0.0/16")["Vpc"]["VpcId"]
    gid = aws_cli(server, "ec2", "create-security-group", "--group-name", "cli", "--description", "from the CLI",
                  "--vpc-id", vpc)["GroupId"]
    aws_cli(server, "ec2", "authorize-security-group-ingress", "--group-id", gid, "--protocol", "tcp",
            "--port", "8000-8010", "--cidr", "10.0.0.0/8")
    aws_cli(server, "ec2", "authorize-security-group-ingress", "--group-id", gid, "--protocol", "udp",
            "--port", "53", "--source-group", gid)
    g = aws_cli(server, "ec2", "describe-security-groups", "--group-ids", gid)["SecurityGroups"][0]
    got = sorted((p["IpProtocol"], p["FromPort"], p["ToPort"]) for p in g["IpPermissions"])
    assert got == [("tcp", 8000, 8010), ("udp", 53, 53)]
    p = aws_cli(server, "ec2", "authorize-security-group-ingress", "--group-id", gid, "--protocol", "tcp",
                "--port", "8000-8010", "--cidr", "10.0.0.0/8", check=False)
    assert p.returncode != 0 and "InvalidPermission.Duplicate" in p.stderr
    # The CLI v2 that Debian ships speaks the same dialect.
    v2 = shutil.which("aws", path="/usr/bin")
    if v2:
        out = subprocess.run([v2, "--endpoint-url", server.url, "--output", "text", "ec2", "describe-security-group-rules",
                              "--filters", f"Name=group-id,Values={gid}", "--query",
                              "length(SecurityGroupRules)"], capture_output=True, text=True,
                             env=dict(os.environ, **AWS_ENV), stdin=subprocess.DEVNULL)
        assert out.returncode == 0 and out.stdout.strip() == "3", out.stderr
    aws_cli(server, "ec2", "revoke-security-group-ingress", "--group-id", gid, "--protocol", "udp",
            "--port", "53", "--source-group", gid)
    aws_cli(server, "ec2", "delete-security-group", "--group-id", gid)
    aws_cli(server, "ec2", "delete-vpc", "--vpc-id", vpc)


def test_dry_runs_and_unserved_members_are_answered_not_ignored(ec2):
    before = snapshot(ec2)
    assert error_of(ec2.create_vpc, CidrBlock="10.204.0.0/16", DryRun=True)[0] == "DryRunOperation"
    assert error_of(ec2.create_security_group, GroupName="dry", Description="d", DryRun=True)[0] == "DryRunOperation"
    code, msg = error_of(ec2.create_vpc, CidrBlock="10.204.0.0/16", AmazonProvidedIpv6CidrBlock=True)
    assert code == "InvalidParameterValue" and "AmazonProvidedIpv6CidrBlock" in msg
    code, msg = error_of(ec2.create_vpc, CidrBlock="10.204.0.0/16", InstanceTenancy="dedicated")
    assert code == "InvalidParameterValue" and "InstanceTenancy" in msg
    code, msg = error_of(ec2.create_subnet, VpcId="vpc-local", CidrBlock="10.128.200.0/24", Ipv6Native=True)
    assert code == "InvalidParameterValue" and "Ipv6Native" in msg
    code, msg = error_of(ec2.authorize_security_group_ingress, GroupId="sg-allow-all", IpPermissions=[
        {"IpProtocol": "tcp", "FromPort": 1, "ToPort": 1, "IpRanges": [{"CidrIp": "10.0.0.0/8"}]}],
        TagSpecifications=[{"ResourceType": "security-group-rule", "Tags": [{"Key": "a", "Value": "b"}]}])
    assert code == "InvalidParameterValue" and "TagSpecifications" in msg
    assert snapshot(ec2) == before, "a dry run or a refused request changed something"

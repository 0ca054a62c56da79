"""The load balancer end to end, driven by the real `aws elbv2` CLI and
boto3: load balancers, target groups, listeners and rules with ELBv2's
errors; traffic routed by rules, spread over targets, kept away from
unhealthy ones and drained from deregistered ones; and services whose
tasks register themselves, are replaced when their targets fail, and roll
out a new task definition under load without a failed request."""

import http.server
import json
import os
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

import botocore.exceptions
import pytest

from conftest import IMAGE, Cluster, aws_cli, docker, listener_port, make_client, signed, wait_for

ENV = {"BERTH_AGENT_TIMEOUT": "3", "BERTH_SERVICE_SETTLE": "1", "BERTH_WARM_ADDRESSES": "0"}
SUBNETS = ["subnet-local-1a", "subnet-local-1b"]
VPC = "vpc-local"


@pytest.fixture(scope="module")
def cl(tmp_path_factory):
    c = Cluster(str(tmp_path_factory.mktemp("elbv2")), "lb", [[], []], extra_env=ENV).start()
    c.elb = make_client(c.server.url, "elbv2")
    yield c
    c.stop()


def cli(cl, *args, check=True):
    return aws_cli(cl.server, "elbv2", *args, check=check)


def cli_error(cl, *args):
    p = cli(cl, *args, check=False)
    assert p.returncode != 0, p.stdout
    return p.stderr


def error_of(call, **kw):
    with pytest.raises(botocore.exceptions.ClientError) as e:
        call(**kw)
    return e.value.response["Error"]["Code"], e.value.response["Error"]["Message"]


def get(url, headers=None, timeout=5):
    """(status, body, headers) of a GET; error statuses are answers too."""
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read().decode(), dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(), dict(e.headers)


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *a, **kw):
        return None


class Backend:
    """A local HTTP server standing in for a target: answers with its name
    and the X-Forwarded-* headers it got; `/health` answers `health_status`."""

    def __init__(self, label):
        self.label, self.health_status, self.port = label, 200, listener_port()
        backend = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                status = backend.health_status if self.path == "/health" else 200
                body = json.dumps({"backend": backend.label, "path": self.path,
                                   "xff": self.headers.get("X-Forwarded-For"),
                                   "proto": self.headers.get("X-Forwarded-Proto"),
                                   "port": self.headers.get("X-Forwarded-Port"),
                                   "host": self.headers.get("Host")}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def load_balancer(cl, name):
    return cli(cl, "create-load-balancer", "--name", name, "--subnets", *SUBNETS)["LoadBalancers"][0]


def target_group(cl, name, port=80, target_type="ip", *extra):
    return cli(cl, "create-target-group", "--name", name, "--protocol", "HTTP", "--port", str(port),
               "--vpc-id", VPC, "--target-type", target_type, "--health-check-path", "/health",
               "--health-check-interval-seconds", "5", "--health-check-timeout-seconds", "2",
               "--healthy-threshold-count", "2", "--unhealthy-threshold-count", "2", *extra)["TargetGroups"][0]


def health(cl, tg_arn):
    d = cli(cl, "describe-target-health", "--target-group-arn", tg_arn)["TargetHealthDescriptions"]
    return {(t["Target"]["Id"], t["Target"]["Port"]): t["TargetHealth"] for t in d}


def states(cl, tg_arn):
    return {k: v["State"] for k, v in health(cl, tg_arn).items()}


def test_resources_and_bad_input_get_elbv2_errors_and_nothing_changes(cl, name):
    lb = load_balancer(cl, name)
    assert lb["Type"] == "application" and lb["Scheme"] == "internet-facing" and lb["State"]["Code"] == "active"
    assert lb["VpcId"] == VPC and sorted(z["SubnetId"] for z in lb["AvailabilityZones"]) == SUBNETS
    assert lb["LoadBalancerArn"].startswith("arn:aws:elasticloadbalancing:us-east-1:000000000000:loadbalancer/app/")
    # The same name and settings answer with the same load balancer.
    assert load_balancer(cl, name)["LoadBalancerArn"] == lb["LoadBalancerArn"]
    assert "DuplicateLoadBalancerName" in cli_error(cl, "create-load-balancer", "--name", name, "--subnets",
                                                     "subnet-local-1a", "subnet-local-1c")
    assert "InvalidConfigurationRequest" in cli_error(cl, "create-load-balancer", "--name", name + "x",
                                                       "--subnets", "subnet-local-1a")
    assert "SubnetNotFound" in cli_error(cl, "create-load-balancer", "--name", name + "x", "--subnets",
                                         "subnet-local-1a", "subnet-nope")
    assert "ValidationError" in cli_error(cl, "create-load-balancer", "--name=bad_name", "--subnets", *SUBNETS)
    # A fixed address per subnet is a network load balancer's: refused, not dropped.
    code, msg = error_of(cl.elb.create_load_balancer, Name=name + "x", SubnetMappings=[
        {"SubnetId": SUBNETS[0], "PrivateIPv4Address": "10.0.0.20"}, {"SubnetId": SUBNETS[1]}])
    assert code == "InvalidConfigurationRequest" and "PrivateIPv4Address" in msg
    assert error_of(cl.elb.describe_load_balancers, Names=[name + "x"])[0] == "LoadBalancerNotFound"

    elb = cl.elb
    code, msg = error_of(elb.create_target_group, Name=name, Protocol="HTTP", Port=80, VpcId=VPC,
                         HealthCheckIntervalSeconds=5, HealthCheckTimeoutSeconds=5)
    assert code == "ValidationError" and "must be smaller than the interval" in msg
    code, msg = error_of(elb.create_target_group, Name=name, Protocol="HTTP", Port=80, VpcId=VPC,
                         HealthyThresholdCount=11)
    assert code == "ValidationError" and "healthyThresholdCount" in msg
    code, msg = error_of(elb.create_target_group, Name=name, Protocol="HTTP", Port=80, VpcId=VPC,
                         Matcher={"HttpCode": "600"})
    assert code == "ValidationError" and "matcher" in msg
    assert error_of(elb.create_target_group, Name=name, Protocol="HTTP", Port=80, VpcId="vpc-nope")[0] == "ValidationError"
    tg = target_group(cl, name)
    assert tg["HealthCheckPath"] == "/health" and tg["Matcher"]["HttpCode"] == "200" and tg["LoadBalancerArns"] == []
    assert error_of(elb.create_target_group, Name=name, Protocol="HTTP", Port=81, VpcId=VPC)[0] == "DuplicateTargetGroupName"

    missing_tg = tg["TargetGroupArn"].rsplit("/", 1)[0] + "/0000000000000000"
    assert error_of(elb.describe_target_groups, TargetGroupArns=[missing_tg])[0] == "TargetGroupNotFound"
    assert error_of(elb.describe_load_balancers, Names=["nope"])[0] == "LoadBalancerNotFound"

    # A port that is not a number is refused by the server, not only by clients.
    form = urllib.parse.urlencode({"Action": "RegisterTargets", "Version": "2015-12-01",
                                   "TargetGroupArn": tg["TargetGroupArn"],
                                   "Targets.member.1.Id": "10.128.0.9", "Targets.member.1.Port": "http"}).encode()
    req = signed("POST", cl.server.url + "/", service="elasticloadbalancing", body=form,
                 headers={"Content-Type": "application/x-www-form-urlencoded"})
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=5)
    body = e.value.read().decode()
    assert e.value.code == 400 and "<Code>ValidationError</Code>" in body and "Targets.member.1.Port" in body
    assert error_of(elb.register_targets, TargetGroupArn=tg["TargetGroupArn"], Targets=[{"Id": "8.8.8.8"}])[0] == "InvalidTarget"
    assert error_of(elb.register_targets, TargetGroupArn=tg["TargetGroupArn"],
                    Targets=[{"Id": "10.128.0.9", "Port": 70000}])[0] == "ValidationError"

    port = listener_port()
    listener = cli(cl, "create-listener", "--load-balancer-arn", lb["LoadBalancerArn"], "--protocol", "HTTP",
                   "--port", str(port), "--default-actions",
                   f"Type=forward,TargetGroupArn={tg['TargetGroupArn']}")["Listeners"][0]
    assert listener["DefaultActions"][0]["ForwardConfig"]["TargetGroups"][0]["Weight"] == 1
    assert "DuplicateListener" in cli_error(cl, "create-listener", "--load-balancer-arn", lb["LoadBalancerArn"],
                                            "--protocol", "HTTP", "--port", str(port), "--default-actions",
                                            "Type=fixed-response,FixedResponseConfig={StatusCode=404}")
    assert "UnsupportedProtocol" in cli_error(cl, "create-listener", "--load-balancer-arn", lb["LoadBalancerArn"],
                                              "--protocol", "HTTPS", "--port", str(listener_port()), "--default-actions",
                                              f"Type=forward,TargetGroupArn={tg['TargetGroupArn']}")
    assert "TargetGroupNotFound" in cli_error(cl, "create-listener", "--load-balancer-arn", lb["LoadBalancerArn"],
                                              "--protocol", "HTTP", "--port", str(listener_port()), "--default-actions",
                                              f"Type=forward,TargetGroupArn={missing_tg}")
    described = cli(cl, "describe-target-groups", "--target-group-arns", tg["TargetGroupArn"])["TargetGroups"][0]
    assert described["LoadBalancerArns"] == [lb["LoadBalancerArn"]]
    assert "ResourceInUse" in cli_error(cl, "delete-target-group", "--target-group-arn", tg["TargetGroupArn"])

    larn = listener["ListenerArn"]
    fixed = "Type=fixed-response,FixedResponseConfig={StatusCode=200,ContentType=text/plain,MessageBody=ok}"
    r10 = cli(cl, "create-rule", "--listener-arn", larn, "--priority", "10", "--conditions",
              "Field=path-pattern,Values=/a/*", "--actions", fixed)["Rules"][0]
    assert r10["Priority"] == "10" and r10["Conditions"][0]["PathPatternConfig"]["Values"] == ["/a/*"]
    assert "PriorityInUse" in cli_error(cl, "create-rule", "--listener-arn", larn, "--priority", "10",
                                        "--conditions", "Field=path-pattern,Values=/b/*", "--actions", fixed)
    assert "ValidationError" in cli_error(cl, "create-rule", "--listener-arn", larn, "--priority", "50001",
                                          "--conditions", "Field=path-pattern,Values=/b/*", "--actions", fixed)
    r5 = cli(cl, "create-rule", "--listener-arn", larn, "--priority", "5", "--conditions",
             "Field=host-header,Values=api.example.com", "--actions", fixed)["Rules"][0]
    rules = cli(cl, "describe-rules", "--listener-arn", larn)["Rules"]
    assert [r["Priority"] for r in rules] == ["5", "10", "default"] and rules[-1]["IsDefault"] is True
    assert "PriorityInUse" in cli_error(cl, "set-rule-priorities", "--rule-priorities",
                                        f"RuleArn={r5['RuleArn']},Priority=10")
    cli(cl, "set-rule-priorities", "--rule-priorities", f"RuleArn={r5['RuleArn']},Priority=20")
    assert [r["Priority"] for r in cli(cl, "describe-rules", "--listener-arn", larn)["Rules"]] == ["10", "20", "default"]
    assert "OperationNotPermitted" in cli_error(cl, "delete-rule", "--rule-arn", rules[-1]["RuleArn"])
    cli(cl, "modify-rule", "--rule-arn", r10["RuleArn"], "--conditions", "Field=path-pattern,Values=/c/*")
    assert cli(cl, "describe-rules", "--rule-arns", r10["RuleArn"])["Rules"][0]["Conditions"][0]["Values"] == ["/c/*"]
    cli(cl, "delete-rule", "--rule-arn", r5["RuleArn"])
    assert "RuleNotFound" in cli_error(cl, "describe-rules", "--rule-arns", r5["RuleArn"])

    attrs = {a["Key"]: a["Value"] for a in cli(cl, "describe-target-group-attributes", "--target-group-arn",
                                               tg["TargetGroupArn"])["Attributes"]}
    assert attrs["deregistration_delay.timeout_seconds"] == "300" and attrs["load_balancing.algorithm.type"] == "round_robin"
    cli(cl, "modify-target-group-attributes", "--target-group-arn", tg["TargetGroupArn"], "--attributes",
        "Key=deregistration_delay.timeout_seconds,Value=7")
    assert "ValidationError" in cli_error(cl, "modify-target-group-attributes", "--target-group-arn",
                                          tg["TargetGroupArn"], "--attributes", "Key=nope,Value=1")
    assert "ValidationError" in cli_error(cl, "modify-load-balancer-attributes", "--load-balancer-arn",
                                          lb["LoadBalancerArn"], "--attributes", "Key=idle_timeout.timeout_seconds,Value=0")
    cli(cl, "modify-load-balancer-attributes", "--load-balancer-arn", lb["LoadBalancerArn"], "--attributes",
        "Key=deletion_protection.enabled,Value=true")
    assert "OperationNotPermitted" in cli_error(cl, "delete-load-balancer", "--load-balancer-arn", lb["LoadBalancerArn"])

    cli(cl, "add-tags", "--resource-arns", lb["LoadBalancerArn"], tg["TargetGroupArn"], "--tags", "Key=team,Value=web")
    assert "DuplicateTagKeys" in cli_error(cl, "add-tags", "--resource-arns", lb["LoadBalancerArn"], "--tags",
                                           "Key=a,Value=1", "Key=a,Value=2")
    tags = cli(cl, "describe-tags", "--resource-arns", lb["LoadBalancerArn"], tg["TargetGroupArn"])["TagDescriptions"]
    assert [t["Tags"] for t in tags] == [[{"Key": "team", "Value": "web"}]] * 2
    cli(cl, "remove-tags", "--resource-arns", tg["TargetGroupArn"], "--tag-keys", "team")
    assert cli(cl, "describe-tags", "--resource-arns", tg["TargetGroupArn"])["TagDescriptions"][0]["Tags"] == []

    # Nothing the refused calls touched changed.
    assert cli(cl, "describe-load-balancers", "--names", name)["LoadBalancers"][0] == lb
    assert [l["Port"] for l in cli(cl, "describe-listeners", "--load-balancer-arn", lb["LoadBalancerArn"])["Listeners"]] == [port]

    cli(cl, "modify-load-balancer-attributes", "--load-balancer-arn", lb["LoadBalancerArn"], "--attributes",
        "Key=deletion_protection.enabled,Value=false")
    cli(cl, "delete-load-balancer", "--load-balancer-arn", lb["LoadBalancerArn"])
    assert error_of(elb.describe_listeners, ListenerArns=[larn])[0] == "ListenerNotFound"
    cli(cl, "delete-target-group", "--target-group-arn", tg["TargetGroupArn"])
    assert error_of(elb.describe_target_groups, Names=[name])[0] == "TargetGroupNotFound"


def test_rules_route_requests_and_traffic_spreads_over_healthy_targets(cl, name):
    a, b, c = Backend("a"), Backend("b"), Backend("c")
    try:
        lb = load_balancer(cl, name)
        web = target_group(cl, name + "-web")
        api = target_group(cl, name + "-api")
        cli(cl, "register-targets", "--target-group-arn", web["TargetGroupArn"], "--targets",
            f"Id=127.0.0.1,Port={a.port},AvailabilityZone=all", f"Id=127.0.0.1,Port={b.port},AvailabilityZone=all")
        cli(cl, "register-targets", "--target-group-arn", api["TargetGroupArn"], "--targets",
            f"Id=127.0.0.1,Port={c.port},AvailabilityZone=all")
        assert set(states(cl, web["TargetGroupArn"]).values()) == {"unused"}
        port = listener_port()
        larn = cli(cl, "create-listener", "--load-balancer-arn", lb["LoadBalancerArn"], "--protocol", "HTTP",
                   "--port", str(port), "--default-actions",
                   f"Type=forward,TargetGroupArn={web['TargetGroupArn']}")["Listeners"][0]["ListenerArn"]
        cli(cl, "create-rule", "--listener-arn", larn, "--priority", "1", "--conditions",
            "Field=path-pattern,Values=/api/*", "--actions", f"Type=forward,TargetGroupArn={api['TargetGroupArn']}")
        cli(cl, "create-rule", "--listener-arn", larn, "--priority", "2", "--conditions",
            "Field=http-header,HttpHeaderConfig={HttpHeaderName=X-Canary,Values=[yes]}", "--actions",
            f"Type=forward,TargetGroupArn={api['TargetGroupArn']}")
        cli(cl, "create-rule", "--listener-arn", larn, "--priority", "3", "--conditions",
            "Field=host-header,Values=old.example.com", "--actions",
            "Type=redirect,RedirectConfig={Host=new.example.com,StatusCode=HTTP_301}")
        cli(cl, "create-rule", "--listener-arn", larn, "--priority", "4", "--conditions",
            "Field=path-pattern,Values=/teapot", "--actions",
            "Type=fixed-response,FixedResponseConfig={StatusCode=418,ContentType=text/plain,MessageBody=short and stout}")
        wait_for("targets to pass their health checks",
                 lambda: set(states(cl, web["TargetGroupArn"]).values()) == {"healthy"}
                 and set(states(cl, api["TargetGroupArn"]).values()) == {"healthy"}, timeout=20)
        url = f"http://127.0.0.1:{port}"

        seen = [json.loads(get(url + "/x")[1])["backend"] for _ in range(20)]
        assert seen.count("a") == seen.count("b") == 10, seen
        status, body, _ = get(url + "/api/users", {"X-Forwarded-For": "203.0.113.7"})
        fwd = json.loads(body)
        assert (status, fwd["backend"], fwd["path"]) == (200, "c", "/api/users")
        assert fwd["xff"] == "203.0.113.7, 127.0.0.1" and fwd["proto"] == "http" and fwd["port"] == str(port)
        assert json.loads(get(url + "/x", {"X-Canary": "YES"})[1])["backend"] == "c"
        # Clients may speak HTTP/2 (prior knowledge: there is no TLS).
        h2 = subprocess.run(["curl", "-s", "--http2-prior-knowledge", "-w", "\n%{http_version}", url + "/api/h2"],
                            capture_output=True, text=True, timeout=10).stdout.rsplit("\n", 1)
        assert (json.loads(h2[0])["backend"], h2[1]) == ("c", "2"), h2
        assert get(url + "/teapot") == (418, "short and stout", get(url + "/teapot")[2])
        opener = urllib.request.build_opener(NoRedirect)
        with pytest.raises(urllib.error.HTTPError) as e:
            opener.open(urllib.request.Request(url + "/p?q=1", headers={"Host": "old.example.com"}), timeout=5)
        assert e.value.code == 301 and e.value.headers["Location"] == f"http://new.example.com:{port}/p?q=1"

        # A target that fails its checks stops getting traffic.
        b.health_status = 500
        wait_for("b to be unhealthy", lambda: health(cl, web["TargetGroupArn"])[("127.0.0.1", b.port)]["State"] == "unhealthy", timeout=20)
        h = health(cl, web["TargetGroupArn"])[("127.0.0.1", b.port)]
        assert h["Reason"] == "Target.ResponseCodeMismatch" and "[500]" in h["Description"]
        assert {json.loads(get(url + "/x")[1])["backend"] for _ in range(10)} == {"a"}
        alb_metrics(cl, lb, web)
        b.health_status = 200
        wait_for("b to recover", lambda: states(cl, web["TargetGroupArn"])[("127.0.0.1", b.port)] == "healthy", timeout=20)

        # A deregistered target drains: no new requests, then it is gone.
        cli(cl, "modify-target-group-attributes", "--target-group-arn", web["TargetGroupArn"], "--attributes",
            "Key=deregistration_delay.timeout_seconds,Value=2")
        cli(cl, "deregister-targets", "--target-group-arn", web["TargetGroupArn"], "--targets", f"Id=127.0.0.1,Port={a.port}")
        h = health(cl, web["TargetGroupArn"])[("127.0.0.1", a.port)]
        assert (h["State"], h["Reason"]) == ("draining", "Target.DeregistrationInProgress")
        assert {json.loads(get(url + "/x")[1])["backend"] for _ in range(10)} == {"b"}
        wait_for("a to be gone", lambda: ("127.0.0.1", a.port) not in health(cl, web["TargetGroupArn"]), timeout=10)
        assert "InvalidTarget" in cli_error(cl, "deregister-targets", "--target-group-arn", web["TargetGroupArn"],
                                            "--targets", f"Id=127.0.0.1,Port={a.port}")
        unknown = health(cl, web["TargetGroupArn"])
        asked = cli(cl, "describe-target-health", "--target-group-arn", web["TargetGroupArn"], "--targets",
                    f"Id=127.0.0.1,Port={a.port}")["TargetHealthDescriptions"][0]["TargetHealth"]
        assert (asked["State"], asked["Reason"]) == ("unused", "Target.NotRegistered") and len(unknown) == 1

        # No target at all: 503. A target that is down (and the only one): 502.
        cli(cl, "deregister-targets", "--target-group-arn", api["TargetGroupArn"], "--targets", f"Id=127.0.0.1,Port={c.port}")
        assert get(url + "/api/x")[0] == 503
        dead = listener_port()
        cli(cl, "register-targets", "--target-group-arn", api["TargetGroupArn"], "--targets",
            f"Id=127.0.0.1,Port={dead},AvailabilityZone=all")
        assert get(url + "/api/x")[0] == 502
        wait_for("the dead target to fail its checks", lambda: health(cl, api["TargetGroupArn"])[("127.0.0.1", dead)].get("Reason")
                 == "Target.FailedHealthChecks", timeout=20)

        # The listener goes with its port.
        cli(cl, "delete-listener", "--listener-arn", larn)
        wait_for("the port to close", lambda: _refused(port), timeout=10)
    finally:
        for x in (a, b, c):
            try:
                x.stop()
            except Exception:
                pass


def alb_metrics(cl, lb, tg):
    """AWS/ApplicationELB for the web group: its 30 requests (all 200) with
    their response times, per group and per load balancer, and one healthy
    and one unhealthy target now."""
    import datetime
    cw = make_client(cl.server.url, "cloudwatch")
    lb_dim = {"Name": "LoadBalancer", "Value": lb["LoadBalancerArn"].split(":loadbalancer/")[1]}
    tg_dim = {"Name": "TargetGroup", "Value": "targetgroup/" + tg["TargetGroupArn"].split(":targetgroup/")[1]}

    def stat(metric, dims, statistic="Sum", period=600, back=600):
        now = datetime.datetime.now(datetime.timezone.utc)
        points = cw.get_metric_statistics(
            Namespace="AWS/ApplicationELB", MetricName=metric, Dimensions=dims, Period=period,
            StartTime=now - datetime.timedelta(seconds=back), EndTime=now + datetime.timedelta(seconds=60),
            Statistics=[statistic])["Datapoints"]
        return sorted(points, key=lambda d: d["Timestamp"])

    def total(metric, dims, statistic="Sum"):
        return sum(d[statistic] for d in stat(metric, dims, statistic))

    wait_for("the group's 30 requests", lambda: total("RequestCount", [tg_dim]) == 30, timeout=40)
    assert total("HTTPCode_Target_2XX_Count", [lb_dim, tg_dim]) == 30
    assert total("TargetResponseTime", [tg_dim], "SampleCount") == 30
    assert total("RequestCount", [lb_dim]) >= 30 and total("RequestCountPerTarget", [tg_dim]) > 0
    assert not stat("HTTPCode_Target_5XX_Count", [tg_dim])

    def latest(metric):
        points = stat(metric, [lb_dim, tg_dim], "Maximum", period=10, back=30)
        return points[-1]["Maximum"] if points else None

    wait_for("one healthy and one unhealthy target",
             lambda: (latest("HealthyHostCount"), latest("UnHealthyHostCount")) == (1.0, 1.0), timeout=30)


def _refused(port):
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1)
    except urllib.error.HTTPError:
        return False
    except OSError:
        return True
    return False


def web_taskdef(cl, family, version, network_mode="bridge"):
    """busybox httpd answering its version and container id; /health exists."""
    web = {"name": "web", "image": IMAGE, "memory": 16, "stopTimeout": 2,
           "portMappings": [{"containerPort": 8080, "hostPort": 0 if network_mode == "bridge" else 8080}],
           "command": ["sh", "-c", f"mkdir -p /www && echo {version} $HOSTNAME > /www/index.html && "
                       "echo ok > /www/health && exec httpd -f -p 8080 -h /www"]}
    return cl.ecs.register_task_definition(family=family, networkMode=network_mode,
                                           containerDefinitions=[web])["taskDefinition"]["taskDefinitionArn"]


def service_behind(cl, name, target_type="instance"):
    lb = load_balancer(cl, name)
    tg = target_group(cl, name, 8080, target_type)
    cli(cl, "modify-target-group-attributes", "--target-group-arn", tg["TargetGroupArn"], "--attributes",
        "Key=deregistration_delay.timeout_seconds,Value=3")
    port = listener_port()
    cli(cl, "create-listener", "--load-balancer-arn", lb["LoadBalancerArn"], "--protocol", "HTTP", "--port", str(port),
        "--default-actions", f"Type=forward,TargetGroupArn={tg['TargetGroupArn']}")
    return tg["TargetGroupArn"], f"http://127.0.0.1:{port}/"


def describe(cl, name):
    return cl.ecs.describe_services(cluster=cl.name, services=[name])["services"][0]


def completed(cl, name, taskdef):
    s = describe(cl, name)
    return (len(s["deployments"]) == 1 and s["deployments"][0]["rolloutState"] == "COMPLETED"
            and s["deployments"][0]["taskDefinition"] == taskdef and s["runningCount"] == s["desiredCount"])


def test_bad_load_balancer_settings_get_ecs_errors(cl, name):
    tg, _ = service_behind(cl, name)
    td = web_taskdef(cl, name, "v1")
    lone = target_group(cl, name + "-lone", 8080)

    def create(**lb):
        entry = {"targetGroupArn": tg, "containerName": "web", "containerPort": 8080}
        entry.update(lb)
        return error_of(cl.ecs.create_service, cluster=cl.name, serviceName=name, taskDefinition=td,
                        desiredCount=1, loadBalancers=[entry])

    code, msg = create(containerName="nope")
    assert code == "InvalidParameterException" and "The container nope does not exist" in msg
    code, msg = create(containerPort=9999)
    assert code == "InvalidParameterException" and "did not have a container port 9999" in msg
    code, msg = create(targetGroupArn=tg.rsplit("/", 1)[0] + "/0000000000000000")
    assert code == "InvalidParameterException" and "does not exist" in msg
    code, msg = create(targetGroupArn=lone["TargetGroupArn"])
    assert code == "InvalidParameterException" and "does not have an associated load balancer" in msg
    assert "ServiceNotFoundException" == error_of(cl.ecs.update_service, cluster=cl.name, service=name, desiredCount=1)[0]


def test_a_service_registers_its_tasks_and_replaces_those_failing_health_checks(cl, name):
    tg, url = service_behind(cl, name)
    td = web_taskdef(cl, name, "v1")
    aws_cli(cl.server, "ecs", "create-service", "--cluster", cl.name, "--service-name", name, "--task-definition", td,
            "--desired-count", "2", "--health-check-grace-period-seconds", "0", "--load-balancers",
            f"targetGroupArn={tg},containerName=web,containerPort=8080")
    wait_for("the deployment to complete", lambda: completed(cl, name, td), timeout=60)
    s = describe(cl, name)
    assert s["loadBalancers"] == [{"targetGroupArn": tg, "containerName": "web", "containerPort": 8080}]
    # It acts with ECS's service-linked role, made for it.
    assert s["roleArn"] == "arn:aws:iam::000000000000:role/aws-service-role/ecs.amazonaws.com/AWSServiceRoleForECS"
    assert any("registered 2 targets in (target-group" in e["message"] or "registered 1 targets" in e["message"]
               for e in s["events"])

    # Each task is a target: its host's instance id and its published port.
    arns = cl.ecs.list_tasks(cluster=cl.name, serviceName=name)["taskArns"]
    tasks = cl.ecs.describe_tasks(cluster=cl.name, tasks=arns)["tasks"]
    instances = {v: k for k, v in cl.instances().items()}
    expected = {(instances[t["containerInstanceArn"]], t["containers"][0]["networkBindings"][0]["hostPort"]) for t in tasks}
    assert states(cl, tg) == {k: "healthy" for k in expected}

    answers = {get(url)[1].strip() for _ in range(20)}
    ids = {t["containers"][0]["runtimeId"][:12] for t in tasks}
    assert {a.split()[1] for a in answers} == ids and all(a.startswith("v1 ") for a in answers)

    # One task's health check starts failing: its target goes unhealthy and
    # the service replaces it.
    victim = tasks[0]
    docker("exec", victim["containers"][0]["runtimeId"], "rm", "/www/health")
    stopped = wait_for("the failing task to be stopped", lambda: (lambda t: t if t["lastStatus"] == "STOPPED" else None)(
        cl.task(victim["taskArn"])), timeout=60)
    assert stopped["stopCode"] == "ServiceSchedulerInitiated"
    assert stopped["stoppedReason"] == f"Task failed ELB health checks in (target-group {tg})"
    wait_for("a replacement to be healthy", lambda: len([v for v in states(cl, tg).values() if v == "healthy"]) == 2
             and describe(cl, name)["runningCount"] == 2, timeout=60)
    cl.ecs.update_service(cluster=cl.name, service=name, desiredCount=0)
    cl.ecs.delete_service(cluster=cl.name, service=name)
    wait_for("targets to be gone", lambda: states(cl, tg) == {}, timeout=30)


def test_a_rule_naming_the_load_balancers_group_lets_it_reach_an_awsvpc_target(cl, name):
    """A load balancer's security groups stand for it in other groups'
    rules, as in a VPC: a task whose group lets in nothing fails the load
    balancer's health checks; a rule letting in the load balancer's group
    makes it healthy and reachable through the listener."""
    ec2 = make_client(cl.server.url, "ec2")
    lb_sg = ec2.create_security_group(GroupName=f"{name}-lb", Description="the load balancer")["GroupId"]
    task_sg = ec2.create_security_group(GroupName=f"{name}-task", Description="the tasks")["GroupId"]
    lb = cli(cl, "create-load-balancer", "--name", name, "--subnets", *SUBNETS, "--security-groups", lb_sg)
    lb = lb["LoadBalancers"][0]
    assert lb["SecurityGroups"] == [lb_sg]
    tg = target_group(cl, name, 8080)["TargetGroupArn"]
    port = listener_port()
    cli(cl, "create-listener", "--load-balancer-arn", lb["LoadBalancerArn"], "--protocol", "HTTP", "--port", str(port),
        "--default-actions", f"Type=forward,TargetGroupArn={tg}")
    td = web_taskdef(cl, name, "v1", network_mode="awsvpc")
    t = cl.ecs.run_task(cluster=cl.name, taskDefinition=td, networkConfiguration={"awsvpcConfiguration": {
        "subnets": ["subnet-local-1a"], "securityGroups": [task_sg]}})["tasks"][0]
    t = cl.wait_status(t["taskArn"], "RUNNING")
    ip = next(d["value"] for a in t["attachments"] for d in a["details"] if d["name"] == "privateIPv4Address")
    cli(cl, "register-targets", "--target-group-arn", tg, "--targets", f"Id={ip},Port=8080")
    wait_for("the walled-off target to fail its checks", lambda: states(cl, tg) == {(ip, 8080): "unhealthy"},
             timeout=30)
    ec2.authorize_security_group_ingress(GroupId=task_sg, IpPermissions=[
        {"IpProtocol": "tcp", "FromPort": 8080, "ToPort": 8080, "UserIdGroupPairs": [{"GroupId": lb_sg}]}])
    wait_for("the target to be healthy", lambda: states(cl, tg) == {(ip, 8080): "healthy"}, timeout=30)
    assert get(f"http://127.0.0.1:{port}/")[1].startswith("v1 ")
    cl.ecs.stop_task(cluster=cl.name, task=t["taskArn"])


def test_a_service_acts_with_its_role_which_must_allow_what_it_does(cl, name):
    tg, _ = service_behind(cl, name)
    td = web_taskdef(cl, name, "v1")
    iam = make_client(cl.server.url, "iam")
    ecs_trust = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"Service": "ecs.amazonaws.com"}, "Action": "sts:AssumeRole"}]}
    tasks_trust = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"Service": "ecs-tasks.amazonaws.com"}, "Action": "sts:AssumeRole"}]}
    weak = iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(ecs_trust))["Role"]
    iam.put_role_policy(RoleName=name, PolicyName="describe-only", PolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": "elasticloadbalancing:Describe*", "Resource": "*"}]}))
    wrong = iam.create_role(RoleName=name + "-tasks", AssumeRolePolicyDocument=json.dumps(tasks_trust))["Role"]
    lbs = [{"targetGroupArn": tg, "containerName": "web", "containerPort": 8080}]
    # A role ECS cannot assume, or none that exists, is refused at once.
    for role in (wrong["Arn"], name + "-nope"):
        code, msg = error_of(cl.ecs.create_service, cluster=cl.name, serviceName=name, taskDefinition=td,
                             desiredCount=1, loadBalancers=lbs, role=role)
        assert code == "InvalidParameterException" and "Unable to assume role" in msg
    code, msg = error_of(cl.ecs.create_service, cluster=cl.name, serviceName=name, taskDefinition=td,
                         desiredCount=1, role=weak["Arn"])
    assert code == "InvalidParameterException" and "role" in msg
    # A role that may not register targets: the tasks run, no target is
    # registered, and the service says why.
    cl.ecs.create_service(cluster=cl.name, serviceName=name, taskDefinition=td, desiredCount=1,
                          loadBalancers=lbs, role=name)
    assert describe(cl, name)["roleArn"] == weak["Arn"]
    said = wait_for("the service to say its role may not register targets", lambda: next(
        (e["message"] for e in describe(cl, name)["events"] if "failed to register targets" in e["message"]), None),
        timeout=60)
    assert f"assumed-role/{name}/ecs-service-scheduler is not authorized to perform: " \
           f"elasticloadbalancing:RegisterTargets on resource: {tg}" in said
    assert states(cl, tg) == {}
    # Allowed, it registers them.
    iam.put_role_policy(RoleName=name, PolicyName="targets", PolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": ["elasticloadbalancing:RegisterTargets",
                                           "elasticloadbalancing:DeregisterTargets"], "Resource": tg}]}))
    cl.ecs.update_service(cluster=cl.name, service=name, desiredCount=2)
    wait_for("targets registered with the role's new permission", lambda: len(states(cl, tg)) == 2, timeout=60)
    cl.ecs.update_service(cluster=cl.name, service=name, desiredCount=0)
    cl.ecs.delete_service(cluster=cl.name, service=name)
    wait_for("targets to be gone", lambda: states(cl, tg) == {}, timeout=30)


class Load:
    """Requests in a loop on two threads (new connections and keep-alive),
    counting the answers that were not 2xx."""

    def __init__(self, url):
        self.url, self.running = url, True
        self.ok, self.failed, self.bodies, self.errors = 0, 0, set(), []
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.loop, daemon=True) for _ in range(2)]
        for t in self.threads:
            t.start()

    def loop(self):
        while self.running:
            try:
                status, body, _ = get(self.url, timeout=5)
            except Exception as e:  # a refused or reset connection is a failure too
                status, body = None, repr(e)
            with self.lock:
                if status is not None and 200 <= status < 300:
                    self.ok += 1
                    self.bodies.add(body.split()[0])
                else:
                    self.failed += 1
                    self.errors.append((status, body[:200]))

    def stop(self):
        self.running = False
        for t in self.threads:
            t.join(timeout=10)


def test_a_rolling_deployment_under_load_fails_no_request(cl, name):
    tg, url = service_behind(cl, name)
    v1, v2 = web_taskdef(cl, name, "v1"), web_taskdef(cl, name, "v2")
    cl.ecs.create_service(cluster=cl.name, serviceName=name, taskDefinition=v1, desiredCount=2,
                          loadBalancers=[{"targetGroupArn": tg, "containerName": "web", "containerPort": 8080}],
                          deploymentConfiguration={"minimumHealthyPercent": 100, "maximumPercent": 200})
    wait_for("v1 to be deployed", lambda: completed(cl, name, v1), timeout=60)
    wait_for("traffic to flow", lambda: get(url)[0] == 200, timeout=20)
    load = Load(url)
    try:
        time.sleep(1)
        cl.ecs.update_service(cluster=cl.name, service=name, taskDefinition=v2)
        seen_draining = wait_for("old tasks to drain", lambda: "draining" in states(cl, tg).values(), timeout=60)
        wait_for("v2 to be deployed", lambda: completed(cl, name, v2) and set(states(cl, tg).values()) == {"healthy"},
                 timeout=90)
        time.sleep(1)
    finally:
        load.stop()
    assert seen_draining
    assert load.failed == 0, load.errors[:10]
    assert load.ok > 50 and load.bodies == {"v1", "v2"}, (load.ok, load.bodies)
    assert any("has begun draining connections on" in e["message"] for e in describe(cl, name)["events"])
    # The service revision keeps the load balancers its deployment began with.
    listed = cl.ecs.list_service_deployments(cluster=cl.name, service=name)["serviceDeployments"]
    rev = cl.ecs.describe_service_revisions(serviceRevisionArns=[listed[0]["targetServiceRevisionArn"]])
    assert rev["serviceRevisions"][0]["loadBalancers"] == [
        {"targetGroupArn": tg, "containerName": "web", "containerPort": 8080}]
    cl.ecs.update_service(cluster=cl.name, service=name, desiredCount=0)
    cl.ecs.delete_service(cluster=cl.name, service=name)

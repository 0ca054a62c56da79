"""Conformance fixtures: a freshly started `berth server` and real AWS clients."""

import ipaddress
import json
import os
import random
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import uuid

import boto3
import botocore.config
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BERTH = os.environ.get("BERTH_BIN", os.path.join(ROOT, "target", "debug", "berth"))
# The account root's key every test server is started with
# (--root-access-key-id): servers authenticate every request, so the
# clients, agents and `berth` commands the tests run all sign with it.
AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "AKIABERTHTESTROOT001",
    "AWS_SECRET_ACCESS_KEY": "berthTestRootSecretKey0000000000000000000",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_PAGER": "",
}
os.environ.update(AWS_ENV)
for _k in ("AWS_PROFILE", "AWS_SESSION_TOKEN"):
    os.environ.pop(_k, None)
# Servers sharing a store must share the key that seals its secrets.
_fd, SECRETS_KEY_FILE = tempfile.mkstemp(prefix="berth-secrets-")
os.write(_fd, os.urandom(32).hex().encode())
os.close(_fd)
SERVER_ENV = {
    "BERTH_ROOT_ACCESS_KEY_ID": AWS_ENV["AWS_ACCESS_KEY_ID"],
    "BERTH_ROOT_SECRET_ACCESS_KEY": AWS_ENV["AWS_SECRET_ACCESS_KEY"],
    "BERTH_SECRETS_KEY_FILE": SECRETS_KEY_FILE,
}
os.environ.update(SERVER_ENV)


def signed(method, url, service="ecs", body=b"", headers=None, region="us-east-1",
           key=None, secret=None, token=None):
    """A urllib request signed with SigV4 as botocore signs (the root's key
    unless another is given)."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials
    creds = Credentials(key or AWS_ENV["AWS_ACCESS_KEY_ID"], secret or AWS_ENV["AWS_SECRET_ACCESS_KEY"], token)
    req = AWSRequest(method=method, url=url, data=body, headers=dict(headers or {}))
    SigV4Auth(creds, service, region).add_auth(req)
    return urllib.request.Request(url, data=body if method != "GET" else None, method=method,
                                  headers=dict(req.headers.items()))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listener_port():
    """A free port below the kernel's ephemeral range, where Docker also
    picks tasks' dynamic host ports: a load balancer listener there could
    take a port a task is about to publish."""
    import random
    while True:
        port = random.randint(20000, 30000)
        with socket.socket() as s:
            try:
                s.bind(("0.0.0.0", port))
                return port
            except OSError:
                continue


class Process:
    """A berth process the tests start: stopped politely, or killed."""

    proc = None

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=20)

    def kill9(self):
        self.proc.kill()
        self.proc.wait(timeout=20)


def own_subnets_config():
    """The default network (vpc-local, a /20 subnet per local zone,
    sg-default and sg-allow-all) on a /16 of its own: servers of the suite
    share one Docker engine, where Berth refuses a subnet overlapping one
    another installation's tasks use. The /16s go round 10.160-10.199,
    counted in a file both CI lanes share, past those in use."""
    import fcntl
    # Ranges of bridges with containers on them (tests that leave some
    # behind) are skipped; idle ones are Berth's to take over.
    busy = set()
    ids = subprocess.run(["docker", "network", "ls", "-q"], capture_output=True, text=True).stdout.split()
    if ids:
        nets = subprocess.run(["docker", "network", "inspect", *ids], capture_output=True, text=True).stdout
        for n in json.loads(nets or "[]"):
            for c in (n.get("IPAM") or {}).get("Config") or []:
                parts = c.get("Subnet", "").split(".")
                if n.get("Containers") and len(parts) == 4 and parts[0] == "10":
                    busy.add(int(parts[1]))
    with open(os.path.join(tempfile.gettempdir(), "berth-test-subnets"), "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        f.seek(0)
        n = int(f.read().strip() or "0")
        k = next((k for k in range(40) if 160 + (n + k) % 40 not in busy), 0)
        f.seek(0)
        f.truncate()
        f.write(str(n + k + 1))
    octet = 160 + (n + k) % 40
    rule = lambda **kw: dict({"protocol": "-1", "fromPort": 0, "toPort": 0}, **kw)  # noqa: E731
    return {
        "vpcs": [{"id": "vpc-local", "cidr": f"10.{octet}.0.0/16", "isDefault": True}],
        "subnets": [{"id": f"subnet-local-1{z}", "cidr": f"10.{octet}.{i * 16}.0/20", "availabilityZone": f"local-1{z}",
                     "vpcId": "vpc-local", "defaultForAz": True} for i, z in enumerate("abc")],
        "securityGroups": [
            {"id": "sg-default", "name": "default", "description": "default VPC security group", "vpcId": "vpc-local",
             "ingress": [rule(sourceGroup="sg-default")]},
            {"id": "sg-allow-all", "name": "allow-all", "description": "everything from anywhere", "vpcId": "vpc-local",
             "ingress": [rule(cidr="0.0.0.0/0")]}]}


class Server(Process):
    """A berth server process on its own port and data directory.
    `own_subnets`: the default network moved to a /16 of its own
    (own_subnets_config), unless extra_env names a network config; False
    keeps Berth's 10.128.0.0/16."""

    def __init__(self, data_dir, store=None, extra_env=None, host="127.0.0.1", own_subnets=True):
        self.port = free_port()
        self.host = host
        # A server given a certificate speaks TLS; it is its own CA.
        self.ca = (extra_env or {}).get("BERTH_TLS_CERT")
        self.url = f"{'https' if self.ca else 'http'}://{host}:{self.port}"
        self.data_dir = data_dir
        self.store = store
        self.extra_env = extra_env or {}
        self.own_subnets = own_subnets and "BERTH_NETWORK_CONFIG" not in self.extra_env
        self.proc = None
        self.log = os.path.join(data_dir, "server.log")

    def start(self):
        args = [BERTH, "server", "--listen", f"{self.host}:{self.port}", "--data-dir", self.data_dir, "--log", "warn"]
        if self.store:
            args += ["--store", self.store]
        # extra_env: None removes a variable the server would inherit.
        env = {k: v for k, v in dict(os.environ, **self.extra_env).items() if v is not None}
        if self.own_subnets:
            # Read on the store's first start only: a restart keeps its network.
            path = os.path.join(self.data_dir, "test-network.json")
            if not os.path.exists(path):
                os.makedirs(self.data_dir, exist_ok=True)
                with open(path, "w") as f:
                    json.dump(own_subnets_config(), f)
            env["BERTH_NETWORK_CONFIG"] = path
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=open(self.log, "ab"), env=env, stdin=subprocess.DEVNULL)
        deadline = time.time() + 30
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"berth exited with {self.proc.returncode}: {open(self.log).read()}")
            try:
                ctx = ssl.create_default_context(cafile=self.ca) if self.ca else None
                with urllib.request.urlopen(self.url + "/health", timeout=1, context=ctx) as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("berth did not become healthy")

    def stop(self):
        super().stop()
        if self.own_subnets:
            remove_idle_bridges(os.path.join(self.data_dir, "test-network.json"))


def remove_idle_bridges(config_path):
    """The subnet bridges agents made for a server's own /16 (Berth keeps
    them for the next task), removed once nothing is attached: else each
    test server leaves its bridges, and Docker's filter rules for them,
    on the engine every later test's packets cross."""
    try:
        with open(config_path) as f:
            vpc = ipaddress.ip_network(json.load(f)["vpcs"][0]["cidr"])
    except (OSError, ValueError, KeyError, IndexError):
        return
    ids = subprocess.run(["docker", "network", "ls", "-q", "--filter", "label=berth.subnet"],
                         capture_output=True, text=True).stdout.split()
    if not ids:
        return
    nets = subprocess.run(["docker", "network", "inspect", *ids], capture_output=True, text=True).stdout
    for n in json.loads(nets or "[]"):
        ranges = [c.get("Subnet", "") for c in (n.get("IPAM") or {}).get("Config") or []]
        ours = any(r and ipaddress.ip_network(r, strict=False).subnet_of(vpc) for r in ranges)
        if ours and not n.get("Containers"):
            # One still in use (a test that leaves tasks behind) stays.
            subprocess.run(["docker", "network", "rm", n["Id"]], capture_output=True)


class Etcd(Process):
    """A single-member etcd on free ports, for stores shared by processes."""

    def __init__(self, data_dir):
        self.port, peer = free_port(), free_port()
        self.endpoint = f"127.0.0.1:{self.port}"
        self.args = ["etcd", "--data-dir", os.path.join(data_dir, "etcd"),
                     "--listen-client-urls", f"http://{self.endpoint}", "--advertise-client-urls", f"http://{self.endpoint}",
                     "--listen-peer-urls", f"http://127.0.0.1:{peer}", "--initial-advertise-peer-urls",
                     f"http://127.0.0.1:{peer}", "--initial-cluster", f"default=http://127.0.0.1:{peer}", "--max-txn-ops", "1024"]
        self.log = os.path.join(data_dir, "etcd.log")

    def start(self):
        self.proc = subprocess.Popen(self.args, stdout=subprocess.DEVNULL, stderr=open(self.log, "ab"),
                                     stdin=subprocess.DEVNULL)
        wait_for("etcd to answer", lambda: _answers(f"http://{self.endpoint}/health"), timeout=30)
        return self


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    # Berth's own default network (10.128.0.0/16), which test_ec2 checks;
    # every other server of the suite has subnets of its own.
    s = Server(str(tmp_path_factory.mktemp("berth")), own_subnets=False).start()
    yield s
    s.stop()


def make_client(url, service="ecs", region="us-east-1"):
    return boto3.client(
        service,
        endpoint_url=url,
        region_name=region,
        aws_access_key_id=AWS_ENV["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=AWS_ENV["AWS_SECRET_ACCESS_KEY"],
        config=botocore.config.Config(retries={"max_attempts": 1}),
    )


@pytest.fixture(scope="session")
def ecs(server):
    return make_client(server.url)


@pytest.fixture
def name():
    """A unique resource name per test, so tests never see each other's data."""
    return "t" + uuid.uuid4().hex[:12]


def aws_cli(server, *args, check=True):
    """Runs the real aws CLI against the server; returns parsed JSON output."""
    aws = os.path.join(os.path.dirname(__import__("sys").executable), "aws")
    if not os.path.exists(aws):
        aws = shutil.which("aws")
    env = dict(os.environ, **AWS_ENV)
    p = subprocess.run([aws, "--endpoint-url", server.url, "--output", "json", *args], capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL)
    if check and p.returncode != 0:
        raise AssertionError(f"aws {' '.join(args)} failed ({p.returncode}): {p.stderr}")
    return p if not check else (json.loads(p.stdout) if p.stdout.strip() else {})


def container(name="app", **kw):
    c = {"name": name, "image": "busybox", "memory": 64}
    c.update(kw)
    return c


IMAGE = "berth-test/busybox:latest"


class Agent(Process):
    """A `berth agent` process: one container instance, on the shared engine."""

    def __init__(self, server, cluster, data_dir, instance_id, attributes=(), zone="local-1a", wrap=(), extra=(),
                 token=None):
        self.server, self.cluster, self.data_dir, self.token = server, cluster, data_dir, token
        self.instance_id, self.attributes, self.zone = instance_id, list(attributes), zone
        # `wrap`: a command to run the agent under (e.g. `ip netns exec NS`).
        self.wrap, self.extra = list(wrap), list(extra)
        self.proc = None
        self.log = os.path.join(data_dir, "agent.log")
        os.makedirs(data_dir, exist_ok=True)

    def join_token(self):
        """A join token for this agent's cluster, or the Fargate pool's when it is Fargate capacity."""
        fargate = any(a == "--capacity" and b == "fargate" for a, b in zip(self.extra, self.extra[1:]))
        target = ["--capacity", "fargate"] if fargate else ["--cluster", self.cluster]
        return make_token(self.server, *target)

    def start(self):
        # The host joins once; restarts use the credentials it kept.
        if not os.path.exists(os.path.join(self.data_dir, "credentials.json")):
            self.extra = [*self.extra, "--token", self.token or self.join_token()]
        args = [*self.wrap, BERTH, "agent", "--server", self.server.url, "--cluster", self.cluster,
                "--data-dir", self.data_dir, "--instance-id", self.instance_id,
                "--availability-zone", self.zone, "--log", os.environ.get("AGENT_LOG", "info"), *self.extra]
        for a in self.attributes:
            args += ["--attribute", a]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=open(self.log, "ab"), stdin=subprocess.DEVNULL)
        return self


def make_token(server, *target, expires_in=3600):
    """Issues a join token (`berth token create`), signed as the account root."""
    # An agent may be told of several servers; any one issues tokens.
    p = subprocess.run([BERTH, "token", "create", "--server", server.url.split(",")[0], *target, "--expires-in", str(expires_in)],
                       capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if p.returncode != 0:
        raise AssertionError(f"berth token create failed: {p.stderr}")
    return p.stdout.strip()


def wait_for(what, check, timeout=30, interval=0.1):
    """Polls `check` until it returns something truthy; fails naming `what`."""
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}; last saw {last!r}")


def docker(*args):
    p = subprocess.run(["docker", *args], capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if p.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} failed: {p.stderr}")
    return p.stdout


def docker_inspect(container_id):
    return json.loads(docker("inspect", container_id))[0]


def cgroup_dir(pid, resource, enclosing):
    """The directory of the nearest cgroup named `enclosing` (or, with
    systemd, the slice `berth-<enclosing>.slice`) among the ancestors of
    process `pid`'s cgroup (or that cgroup itself) that holds its `memory`
    or `cpu` limit, in whichever hierarchy the host has; and whether that
    is cgroup v1."""
    mounts = {}
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, right = line.split(" - ", 1)
            fstype, _, options = right.split()[:3]
            point = left.split()[4]
            if fstype == "cgroup2":
                mounts.setdefault("", point)
            elif fstype == "cgroup" and resource in options.split(","):
                mounts[resource] = point
    with open(f"/proc/{pid}/cgroup") as f:
        lines = [line.rstrip("\n").split(":", 2) for line in f]
    names = (enclosing, f"berth-{enclosing.replace('-', '_')}.slice")
    for _, controllers, path in lines:
        v1 = resource in controllers.split(",") and resource in mounts
        if not (v1 or (controllers == "" and "" in mounts and resource not in mounts)):
            continue
        parts = path.strip("/").split("/")
        while parts and parts[-1] not in names:
            parts.pop()
        if not parts:
            raise AssertionError(f"process {pid} is not under a cgroup named {enclosing}: {path}")
        return os.path.join(mounts[resource] if v1 else mounts[""], *parts), v1
    raise AssertionError(f"no {resource} cgroup for process {pid}: {lines}")


def cgroup_limit(pid, resource, enclosing):
    """The `memory` limit in bytes, or the `cpu` quota in microseconds per
    100 ms period, that process `pid` is under from its cgroup named
    `enclosing` (cgroup_dir): v2's memory.max and cpu.max, or v1's
    memory.limit_in_bytes and cpu.cfs_quota_us."""
    group, v1 = cgroup_dir(pid, resource, enclosing)
    name = {("memory", True): "memory.limit_in_bytes", ("cpu", True): "cpu.cfs_quota_us",
            ("memory", False): "memory.max", ("cpu", False): "cpu.max"}[(resource, v1)]
    with open(os.path.join(group, name)) as f:
        return int(f.read().split()[0])


def agents_connected(ecs, cluster, n):
    arns = ecs.list_container_instances(cluster=cluster)["containerInstanceArns"]
    if len(arns) < n:
        return None
    d = ecs.describe_container_instances(cluster=cluster, containerInstances=arns)["containerInstances"]
    up = [c for c in d if c["agentConnected"]]
    return up if len(up) >= n else None


def remove_containers(cluster):
    """Agents leave their containers (tasks' and warm namespaces') running by design; tests clean up theirs."""
    ids = docker("ps", "-aq", "--filter", f"label=com.amazonaws.ecs.cluster={cluster}").split()
    if ids:
        subprocess.run(["docker", "rm", "-f", *ids], capture_output=True)


class Cluster:
    """A cluster on its own server with agents on the local engine."""

    def __init__(self, tmp, name, agents, extra_env=None, agent_extra=()):
        self.tmp, self.name = tmp, name
        self.server = Server(os.path.join(tmp, "server"), extra_env=extra_env)
        os.makedirs(self.server.data_dir, exist_ok=True)
        self.agent_specs = agents
        self.agent_extra = list(agent_extra)
        self.agents = []

    def start(self):
        self.server.start()
        self.ecs = make_client(self.server.url)
        self.ecs.create_cluster(clusterName=self.name)
        for i, attrs in enumerate(self.agent_specs):
            iid = "i-" + uuid.uuid4().hex[:17]
            zone = f"local-1{'abc'[i % 3]}"
            a = Agent(self.server, self.name, os.path.join(self.tmp, f"agent{i}"), iid, attrs, zone,
                      extra=self.agent_extra).start()
            self.agents.append(a)
        wait_for("agents to connect", lambda: agents_connected(self.ecs, self.name, len(self.agents)))
        return self

    def instances(self):
        """instance id (EC2-style) -> container instance ARN."""
        arns = self.ecs.list_container_instances(cluster=self.name)["containerInstanceArns"]
        d = self.ecs.describe_container_instances(cluster=self.name, containerInstances=arns)["containerInstances"]
        return {c["ec2InstanceId"]: c["containerInstanceArn"] for c in d}

    def task(self, arn):
        return self.ecs.describe_tasks(cluster=self.name, tasks=[arn])["tasks"][0]

    def wait_status(self, arn, status, timeout=30):
        seen = {}

        def check():
            t = self.task(arn)
            seen.update(t)
            return t if t["lastStatus"] == status else None
        try:
            return wait_for(f"task {arn} to be {status}", check, timeout)
        except AssertionError:
            raise AssertionError(f"task {arn} is {seen.get('lastStatus')}, not {status}: stopCode "
                                 f"{seen.get('stopCode')}, reason {seen.get('stoppedReason')!r}, containers "
                                 f"{[(c['name'], c['lastStatus'], c.get('reason')) for c in seen.get('containers', [])]}")

    def stop(self):
        for a in self.agents:
            a.stop()
        remove_containers(self.name)
        self.server.stop()


class Registry(Process):
    """A local image registry (Debian's docker-registry) on its own port;
    `log` holds its access log, so tests can tell a real pull from a cached one."""

    def __init__(self, data_dir, user=None):
        """`user`: (name, password) the registry asks for (htpasswd), or None for an open one."""
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.data_dir = data_dir
        self.log = os.path.join(data_dir, "registry.log")
        self.user = user
        # The pushing client's own docker config, so its login stays here.
        self.docker_config = os.path.join(data_dir, "docker-config")
        os.makedirs(data_dir, exist_ok=True)

    def start(self):
        config = os.path.join(self.data_dir, "config.yml")
        auth = ""
        if self.user:
            import bcrypt
            htpasswd = os.path.join(self.data_dir, "htpasswd")
            with open(htpasswd, "wb") as f:
                f.write(self.user[0].encode() + b":" + bcrypt.hashpw(self.user[1].encode(), bcrypt.gensalt(rounds=5)) + b"\n")
            auth = f"auth:\n  htpasswd:\n    realm: berth-test\n    path: {htpasswd}\n"
        with open(config, "w") as f:
            f.write("version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n"
                    f"    rootdirectory: {os.path.join(self.data_dir, 'store')}\n"
                    f"http:\n  addr: {self.host}\n{auth}")
        self.proc = subprocess.Popen(["docker-registry", "serve", config], stdout=subprocess.DEVNULL,
                                     stderr=open(self.log, "ab"), stdin=subprocess.DEVNULL)
        wait_for("the registry", lambda: _answers(f"http://{self.host}/v2/"))
        return self

    def push(self, local, name):
        """Pushes a local image as NAME on this registry; returns the reference."""
        ref = f"{self.host}/{name}"
        docker("tag", local, ref)
        if self.user:
            os.makedirs(self.docker_config, exist_ok=True)
            subprocess.run(["docker", "--config", self.docker_config, "login", "-u", self.user[0],
                            "--password-stdin", self.host], input=self.user[1], text=True,
                           check=True, capture_output=True)
            subprocess.run(["docker", "--config", self.docker_config, "push", ref], check=True, capture_output=True)
        else:
            docker("push", ref)
        return ref

    def manifest_gets(self, name):
        """How many times the engine asked for NAME's manifest (a pull does, by HEAD or GET)."""
        repo, tag = name.rsplit(":", 1)
        return sum(1 for line in open(self.log) if f"uri=/v2/{repo}/manifests/{tag} " in line
                   and ("method=GET" in line or "method=HEAD" in line))


def _answers(url):
    try:
        with urllib.request.urlopen(url, timeout=1):
            return True
    except urllib.error.HTTPError:
        # It answered, if only to ask who is there.
        return True
    except OSError:
        return False


def production_task(ecs, cluster, url, name, launch_type):
    """A task definition as production accounts write them (awslogs,
    secrets from both stores, task and execution roles, a health check,
    dependsOn, a sidecar), registered and run with `launch_type` on
    awsvpc; returns the RUNNING and HEALTHY task, and what it was given."""
    account = "000000000000"
    ssm, sm, iam, logs = (make_client(url, s) for s in ("ssm", "secretsmanager", "iam", "logs"))
    param = ssm.put_parameter(Name=f"/{name}/db/password", Value="db-secret", Type="SecureString")
    secret = sm.create_secret(Name=f"{name}/api", SecretString=json.dumps({"key": "api-secret"}))["ARN"]
    group = f"/ecs/{name}"
    logs.create_log_group(logGroupName=group)
    trust = json.dumps({"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Action": "sts:AssumeRole", "Principal": {"Service": "ecs-tasks.amazonaws.com"}}]})
    execution = iam.create_role(RoleName=f"{name}-exec", AssumeRolePolicyDocument=trust)["Role"]["Arn"]
    iam.put_role_policy(RoleName=f"{name}-exec", PolicyName="run", PolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": "ssm:GetParameters",
             "Resource": f"arn:aws:ssm:us-east-1:{account}:parameter/{name}/*"},
            {"Effect": "Allow", "Action": "secretsmanager:GetSecretValue",
             "Resource": f"arn:aws:secretsmanager:us-east-1:{account}:secret:{name}/*"},
            {"Effect": "Allow", "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
             "Resource": f"arn:aws:logs:us-east-1:{account}:log-group:{group}:*"}]}))
    app = iam.create_role(RoleName=f"{name}-app", AssumeRolePolicyDocument=trust)["Role"]["Arn"]
    iam.put_role_policy(RoleName=f"{name}-app", PolicyName="read", PolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "ecs:ListClusters", "Resource": "*"}]}))
    log = {"logDriver": "awslogs", "options": {"awslogs-group": group, "awslogs-region": "us-east-1",
                                               "awslogs-stream-prefix": "ecs"}}
    web = {
        "name": "web", "image": IMAGE, "essential": True, "stopTimeout": 2,
        "portMappings": [{"containerPort": 8080, "protocol": "tcp"}],
        "command": ["sh", "-c", "mkdir -p /tmp/www && echo ok > /tmp/www/health && echo web up && "
                    "exec httpd -f -p 8080 -h /tmp/www"],
        "environment": [{"name": "STAGE", "value": "prod"}],
        "secrets": [{"name": "DB_PASSWORD", "valueFrom": f"/{name}/db/password"},
                    {"name": "API_KEY", "valueFrom": f"{secret}:key::"}],
        "healthCheck": {"command": ["CMD-SHELL", "wget -qO- http://127.0.0.1:8080/health || exit 1"],
                        "interval": 5, "timeout": 2, "retries": 3, "startPeriod": 1},
        "dependsOn": [{"containerName": "sidecar", "condition": "START"}],
        "logConfiguration": log,
    }
    sidecar = {"name": "sidecar", "image": IMAGE, "essential": False, "stopTimeout": 2,
               "command": ["sh", "-c", "echo sidecar up; exec sleep 3600"], "logConfiguration": log}
    ecs.register_task_definition(
        family=name, taskRoleArn=app, executionRoleArn=execution, networkMode="awsvpc",
        requiresCompatibilities=["EC2", "FARGATE"], cpu="256", memory="512", containerDefinitions=[web, sidecar])
    r = ecs.run_task(cluster=cluster, taskDefinition=name, launchType=launch_type, networkConfiguration={
        "awsvpcConfiguration": {"subnets": ["subnet-local-1a"], "securityGroups": ["sg-default"]}})
    assert r["failures"] == [], r["failures"]
    arn = r["tasks"][0]["taskArn"]

    def healthy():
        t = ecs.describe_tasks(cluster=cluster, tasks=[arn])["tasks"][0]
        assert t["lastStatus"] != "STOPPED", (t.get("stoppedReason"), t["containers"])
        return t if t["lastStatus"] == "RUNNING" and t.get("healthStatus") == "HEALTHY" else None

    task = wait_for("the production task to run healthy", healthy, timeout=60)
    return task, {"group": group, "app_role": app, "logs": logs}


def check_production_task(ecs, cluster, task, given):
    """What a production task's containers see and write."""
    by_name = {c["name"]: c for c in task["containers"]}
    web = docker_inspect(by_name["web"]["runtimeId"])
    env = dict(e.split("=", 1) for e in web["Config"]["Env"])
    assert (env["DB_PASSWORD"], env["API_KEY"], env["STAGE"]) == ("db-secret", "api-secret", "prod")
    side = docker_inspect(by_name["sidecar"]["runtimeId"])
    assert side["State"]["StartedAt"] <= web["State"]["StartedAt"], "dependsOn START: the sidecar first"
    creds = json.loads(docker("exec", web["Id"], "wget", "-qO-",
                              "http://169.254.170.2" + env["AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"]))
    assert creds["RoleArn"] == given["app_role"], creds
    meta = json.loads(docker("exec", web["Id"], "wget", "-qO-", env["ECS_CONTAINER_METADATA_URI_V4"] + "/task"))
    assert meta["TaskARN"] == task["taskArn"] and {c["Name"] for c in meta["Containers"]} == {"web", "sidecar"}
    task_id = task["taskArn"].rsplit("/", 1)[1]
    logs = given["logs"]

    def shipped():
        out = {}
        for c in ("web", "sidecar"):
            ev = logs.get_log_events(logGroupName=given["group"], logStreamName=f"ecs/{c}/{task_id}",
                                     startFromHead=True)["events"]
            out[c] = [e["message"] for e in ev]
        return out if out == {"web": ["web up"], "sidecar": ["sidecar up"]} else None

    wait_for("both containers' output in the Logs API", shipped, timeout=30)
    ecs.stop_task(cluster=cluster, task=task["taskArn"])


class EngineHost:
    """A second machine, as far as Berth can tell: a network namespace
    linked to ours by a veth pair (its default route goes through us, so
    such hosts reach each other and the server), with a Docker engine of
    its own in it that holds the test image. Agents run in it with
    `agent_args()`. `mtu`: the link's, if not 1500; `runtimes`: the
    engine's own OCI runtimes (its daemon.json then is its own, not this
    machine's)."""

    def __init__(self, tmp, mtu=None, runtimes=None):
        tag = uuid.uuid4().hex[:6]
        self.mtu, self.runtimes = mtu, runtimes
        self.tag, self.tmp = tag, tmp
        self.ns, self.outside, self.inside = f"berth-h{tag}", f"bo{tag}", f"bi{tag}"
        net = f"10.233.{random.randrange(64) * 4}"
        self.gateway, self.ip = f"{net}.1", f"{net}.2"
        self.run_dir = f"/run/berth-test-{tag}"
        self.sock = f"{self.run_dir}/docker.sock"
        self.dockerd = None

    def _sh(self, *args):
        p = subprocess.run(args, capture_output=True, text=True, stdin=subprocess.DEVNULL)
        if p.returncode != 0:
            raise AssertionError(f"{' '.join(args)} failed: {p.stderr}")
        return p.stdout

    def docker(self, *args):
        return self._sh("docker", "-H", f"unix://{self.sock}", *args)

    def start(self):
        self._sh("ip", "netns", "add", self.ns)
        self._sh("ip", "link", "add", self.outside, "type", "veth", "peer", "name", self.inside)
        if self.mtu:
            for d in (self.outside, self.inside):
                self._sh("ip", "link", "set", d, "mtu", str(self.mtu))
        self._sh("ip", "link", "set", self.inside, "netns", self.ns)
        self._sh("ip", "addr", "add", f"{self.gateway}/30", "dev", self.outside)
        self._sh("ip", "link", "set", self.outside, "up")
        inside = ["ip", "netns", "exec", self.ns]
        self._sh(*inside, "ip", "addr", "add", f"{self.ip}/30", "dev", self.inside)
        self._sh(*inside, "ip", "link", "set", self.inside, "up")
        self._sh(*inside, "ip", "link", "set", "lo", "up")
        self._sh(*inside, "ip", "route", "add", "default", "via", self.gateway)
        # Our engine's FORWARD policy drops what it does not know: let the
        # hosts' traffic through.
        for d in ("-i", "-o"):
            self._sh("iptables", "-I", "DOCKER-USER", d, self.outside, "-j", "ACCEPT")
        os.makedirs(self.run_dir, exist_ok=True)
        # Only the network namespace: `ip netns exec` would remount /sys
        # and hide the cgroup hierarchies from the engine.
        config = []
        if self.runtimes is not None:
            path = os.path.join(self.tmp, "daemon.json")
            with open(path, "w") as f:
                json.dump({"runtimes": self.runtimes}, f)
            config = ["--config-file", path]
        self.dockerd = subprocess.Popen(
            ["nsenter", f"--net=/var/run/netns/{self.ns}", "dockerd", "--data-root", os.path.join(self.tmp, "docker"),
             "--exec-root", f"{self.run_dir}/exec", "-H", f"unix://{self.sock}", "--pidfile", f"{self.run_dir}/docker.pid",
             "--containerd-namespace", f"bh{self.tag}", "--containerd-plugins-namespace", f"bh{self.tag}p", *config],
            stdout=subprocess.DEVNULL, stderr=open(os.path.join(self.tmp, "dockerd.log"), "ab"), stdin=subprocess.DEVNULL)
        wait_for("the host's engine", lambda: subprocess.run(
            ["docker", "-H", f"unix://{self.sock}", "info"], capture_output=True).returncode == 0, timeout=60)
        save = subprocess.Popen(["docker", "save", IMAGE], stdout=subprocess.PIPE)
        self._sh_in(save)
        return self

    def _sh_in(self, producer):
        p = subprocess.run(["docker", "-H", f"unix://{self.sock}", "load"], stdin=producer.stdout, capture_output=True, text=True)
        producer.wait()
        if p.returncode != 0:
            raise AssertionError(f"docker load failed: {p.stderr}")

    def agent_args(self):
        """`wrap` and `extra` for an Agent on this host."""
        return ["nsenter", f"--net=/var/run/netns/{self.ns}"], ["--docker-socket", self.sock]

    def stop(self):
        if self.dockerd:
            ids = subprocess.run(["docker", "-H", f"unix://{self.sock}", "ps", "-aq"], capture_output=True,
                                 text=True).stdout.split()
            if ids:
                subprocess.run(["docker", "-H", f"unix://{self.sock}", "rm", "-f", *ids], capture_output=True)
            self.dockerd.terminate()
            try:
                self.dockerd.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.dockerd.kill()
        for d in ("-i", "-o"):
            subprocess.run(["iptables", "-D", "DOCKER-USER", d, self.outside, "-j", "ACCEPT"], capture_output=True)
        subprocess.run(["ip", "netns", "del", self.ns], capture_output=True)
        subprocess.run(["ip", "link", "del", self.outside], capture_output=True)
        shutil.rmtree(self.run_dir, ignore_errors=True)
        shutil.rmtree(os.path.join(self.tmp, "docker"), ignore_errors=True)

"""Conformance fixtures: a freshly started `berth server` and real AWS clients."""

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.request
import uuid

import boto3
import botocore.config
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BERTH = os.environ.get("BERTH_BIN", os.path.join(ROOT, "target", "debug", "berth"))
AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "AKIDBERTHTEST",
    "AWS_SECRET_ACCESS_KEY": "secret",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_PAGER": "",
}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A berth server process on its own port and data directory."""

    def __init__(self, data_dir, store=None, extra_env=None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.data_dir = data_dir
        self.store = store
        self.extra_env = extra_env or {}
        self.proc = None
        self.log = os.path.join(data_dir, "server.log")

    def start(self):
        args = [BERTH, "server", "--listen", f"127.0.0.1:{self.port}", "--data-dir", self.data_dir, "--log", "warn"]
        if self.store:
            args += ["--store", self.store]
        env = dict(os.environ, **self.extra_env)
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=open(self.log, "ab"), env=env, stdin=subprocess.DEVNULL)
        deadline = time.time() + 30
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"berth exited with {self.proc.returncode}: {open(self.log).read()}")
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=1) as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("berth did not become healthy")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=20)

    def kill9(self):
        self.proc.kill()
        self.proc.wait(timeout=20)


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    s = Server(str(tmp_path_factory.mktemp("berth"))).start()
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

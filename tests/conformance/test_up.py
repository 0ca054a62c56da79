"""The README's first command: `scripts/demo.sh` starts `berth up` (the
control plane and this host as the `default` cluster's container instance)
and runs tasks on Docker with the aws CLI: one prints and exits, one serves
a page on a dynamic host port, a Fargate task, and a service behind the
load balancer."""

import json
import os
import re
import signal
import subprocess
import time

from conftest import BERTH, ROOT, free_port, listener_port


def test_berth_up_and_the_demo_work(tmp_path):
    port = free_port()
    data = tmp_path / "data"
    env = dict(os.environ, BERTH_BIN=BERTH, BERTH_LISTEN=f"127.0.0.1:{port}", BERTH_DATA_DIR=str(data),
               BERTH_DEMO_LB_PORT=str(listener_port()))
    for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION", "BERTH_ROOT_ACCESS_KEY_ID",
              "BERTH_ROOT_SECRET_ACCESS_KEY", "BERTH_SECRETS_KEY_FILE"):
        env.pop(k, None)
    # berth up writes its `berth` profile into the AWS CLI's files, keeping
    # the profiles already there.
    config, credentials = tmp_path / "aws-config", tmp_path / "aws-credentials"
    config.write_text("[default]\nregion = eu-west-1\n")
    credentials.write_text("[default]\naws_access_key_id = AKIAOTHER\naws_secret_access_key = other\n")
    env.update(AWS_CONFIG_FILE=str(config), AWS_SHARED_CREDENTIALS_FILE=str(credentials))
    p = subprocess.run([os.path.join(ROOT, "scripts", "demo.sh")], capture_output=True, text=True,
                       env=env, stdin=subprocess.DEVNULL, timeout=600)
    started = re.search(r"started berth up \(pid (\d+)\)", p.stdout)
    try:
        out = p.stdout + p.stderr
        assert p.returncode == 0, out[-4000:]
        assert started, "the demo starts its own berth up"
        assert "hello | hello from a Berth task on " in p.stdout
        assert "hello | bye" in p.stdout
        assert "hello over HTTP" in p.stdout
        assert '"stopCode": "EssentialContainerExited"' in p.stdout
        assert '"exitCode": 0' in p.stdout
        assert "hello from Fargate" in p.stdout, "a FARGATE task on berth up's own Fargate capacity"
        assert "Fargate tasks (per task" in p.stdout and "web-fargate" in p.stdout
        assert p.stdout.count("through the load balancer: hello from revision 2") == 3, "a service behind the load balancer"
        assert f"Berth is running at http://127.0.0.1:{port}" in p.stdout
        assert '"Arn": "arn:aws:iam::000000000000:root"' in p.stdout, "the demo signs as the account root"
        assert "[default]\nregion = eu-west-1\n" in config.read_text()
        assert f"[profile berth]\nregion = us-east-1\nendpoint_url = http://127.0.0.1:{port}\n" in config.read_text()
        creds = credentials.read_text()
        assert "aws_access_key_id = AKIAOTHER" in creds and "[berth]\naws_access_key_id = AKIA" in creds
        assert creds.split("[berth]")[1] == (data / "root-credentials").read_text().split("[berth]")[1]
    finally:
        if started:
            pid = int(started.group(1))
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            # Gone before its containers are cleaned up, so that it makes
            # no warm namespace after the clean-up.
            deadline = time.time() + 30
            while os.path.exists(f"/proc/{pid}") and time.time() < deadline:
                time.sleep(0.1)
        # Only this berth up's containers: another one may run on this engine.
        instance = re.search(r"container-instance/default/([0-9a-f]+)", p.stdout)
        if instance:
            ids = subprocess.run(["docker", "ps", "-aq", "--filter", f"label=berth.instance={instance.group(1)}"],
                                 capture_output=True, text=True).stdout.split()
            if ids:
                subprocess.run(["docker", "rm", "-f", *ids], capture_output=True)
        # And its Fargate host's (tasks and warm namespaces), named in its state file.
        state = data / "agent-fargate" / "agent-state.json"
        if state.exists():
            arn = json.loads(state.read_text()).get("containerInstanceArn") or ""
            ids = subprocess.run(["docker", "ps", "-aq", "--filter", f"label=berth.instance={arn.rsplit('/', 1)[-1]}"],
                                 capture_output=True, text=True).stdout.split() if arn else []
            if ids:
                subprocess.run(["docker", "rm", "-f", *ids], capture_output=True)

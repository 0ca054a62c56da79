"""Several servers, one leader: three `berth server` processes share one
etcd store; all serve the API and accept agents, one runs the controllers.
`kill -9` of the leader loses no acknowledged write, places no task twice;
another server takes over the controllers, and agents move to a survivor.
And the ways a server or an agent can be started wrong."""

import os
import subprocess
import threading
import time
import types
import urllib.request
import uuid

import pytest

from conftest import BERTH, IMAGE, Agent, Etcd, Server, docker, free_port, make_client, wait_for


def leading(server):
    """Whether `server` says (in its metrics) that it runs the controllers."""
    try:
        with urllib.request.urlopen(server.url + "/metrics", timeout=2) as r:
            text = r.read().decode()
    except OSError:
        return False
    return any(line.strip() == "berth_leader 1" for line in text.splitlines())


def running_tasks(ecs, cluster, service=None):
    kw = {"serviceName": service} if service else {}
    arns = ecs.list_tasks(cluster=cluster, desiredStatus="RUNNING", **kw)["taskArns"]
    if not arns:
        return []
    tasks = ecs.describe_tasks(cluster=cluster, tasks=arns)["tasks"]
    return [t for t in tasks if t["lastStatus"] == "RUNNING"]


@pytest.fixture(scope="module")
def trio(tmp_path_factory):
    tmp = str(tmp_path_factory.mktemp("failover"))
    etcd = Etcd(tmp).start()
    store = f"etcd://{etcd.endpoint}"
    env = {"BERTH_LB": "false", "BERTH_AGENT_TIMEOUT": "3", "BERTH_HOST_LOSS_GRACE": "30"}
    servers = []
    for i in range(3):
        d = os.path.join(tmp, f"server{i}")
        os.makedirs(d)
        servers.append(Server(d, store=store, extra_env=env).start())
    yield tmp, etcd, servers
    for p in (*servers, etcd):
        p.stop()


def test_kill_9_of_the_leader_loses_nothing_and_another_takes_over(trio):
    tmp, etcd, servers = trio
    wait_for("one server to lead", lambda: sum(map(leading, servers)) == 1)
    leader = next(s for s in servers if leading(s))
    survivors = [s for s in servers if s is not leader]
    clients = {s.url: make_client(s.url) for s in servers}
    cluster = "failover"
    ecs = clients[survivors[0].url]
    ecs.create_cluster(clusterName=cluster)

    # Two hosts, each told of every server; the first connects through the leader.
    urls = [leader.url] + [s.url for s in survivors]
    agents = []
    for i in range(2):
        listed = types.SimpleNamespace(url=",".join(urls[i:] + urls[:i]))
        agents.append(Agent(listed, cluster, os.path.join(tmp, f"agent{i}"),
                            "i-" + uuid.uuid4().hex[:17], zone=f"local-1{'ab'[i]}").start())
    try:
        def connected():
            arns = ecs.list_container_instances(cluster=cluster)["containerInstanceArns"]
            d = ecs.describe_container_instances(cluster=cluster, containerInstances=arns)["containerInstances"] \
                if arns else []
            return len(d) == 2 and all(c["agentConnected"] for c in d)
        wait_for("both agents to connect", connected)

        ecs.register_task_definition(family="fo", containerDefinitions=[
            {"name": "c", "image": IMAGE, "memory": 16, "command": ["sleep", "600"], "stopTimeout": 1}])
        ecs.create_service(cluster=cluster, serviceName="web", taskDefinition="fo", desiredCount=2)
        wait_for("the service's two tasks", lambda: len(running_tasks(ecs, cluster, "web")) == 2, timeout=60)

        # A stream of writes through every server while the leader dies.
        acked, stop = [], threading.Event()

        def writer():
            n = 0
            while not stop.is_set():
                s = servers[n % 3]
                n += 1
                try:
                    td = clients[s.url].register_task_definition(family="stream", containerDefinitions=[
                        {"name": "c", "image": IMAGE, "memory": 16, "environment": [{"name": "N", "value": str(n)}]}])
                    acked.append((td["taskDefinition"]["revision"], str(n)))
                except Exception:  # the dead server's share fails; that is the point
                    time.sleep(0.01)
        t = threading.Thread(target=writer)
        t.start()
        time.sleep(1)
        leader.kill9()
        wait_for("a survivor to lead", lambda: sum(map(leading, survivors)) == 1, timeout=30)
        time.sleep(1)
        stop.set()
        t.join()

        # Every acknowledged write is there, each once.
        assert len(acked) > 10, acked
        revisions = [r for r, _ in acked]
        assert len(set(revisions)) == len(revisions), "a revision acknowledged twice"
        for rev, n in acked:
            td = ecs.describe_task_definition(taskDefinition=f"stream:{rev}")["taskDefinition"]
            assert td["containerDefinitions"][0]["environment"] == [{"name": "N", "value": n}]

        # The new leader's service controller acts, and agents came over.
        wait_for("both agents on a survivor", connected, timeout=30)
        ecs.update_service(cluster=cluster, service="web", desiredCount=4)
        wait_for("the service at four", lambda: len(running_tasks(ecs, cluster, "web")) == 4, timeout=60)
        # A task run through the other survivor reaches its host, pushed from wherever it connected.
        other = clients[survivors[1].url]
        arn = other.run_task(cluster=cluster, taskDefinition="fo")["tasks"][0]["taskArn"]
        wait_for("the run task to run",
                 lambda: ecs.describe_tasks(cluster=cluster, tasks=[arn])["tasks"][0]["lastStatus"] == "RUNNING")
        # Its logs through either survivor: the one not holding its agent's
        # connection passes the request to the one that does.
        ecs.register_task_definition(family="talk", containerDefinitions=[
            {"name": "c", "image": IMAGE, "memory": 16, "stopTimeout": 1,
             "command": ["sh", "-c", "echo said on the host; exec sleep 600"]}])
        talk = ecs.run_task(cluster=cluster, taskDefinition="talk")["tasks"][0]["taskArn"]
        for s in survivors:
            def said(url=s.url):
                p = subprocess.run([BERTH, "logs", talk, "--cluster", cluster, "--server", url],
                                   capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
                return "c | said on the host" in p.stdout or p.stderr
            assert wait_for(f"the logs through {s.url}", lambda: said() is True) is True
        ecs.stop_task(cluster=cluster, task=talk)

        # Nothing placed twice: one container per task, no stray ones.
        time.sleep(2)
        tasks = running_tasks(ecs, cluster)
        tasks = [t for t in tasks if t["taskArn"] != talk]
        assert len(tasks) == 5, [t["taskArn"] for t in tasks]
        assert len(running_tasks(ecs, cluster, "web")) == 4
        for task in tasks:
            ids = docker("ps", "-q", "--filter", f"label=com.amazonaws.ecs.task-arn={task['taskArn']}").split()
            assert len(ids) == 1, (task["taskArn"], ids)
        # (The hosts' warm network namespaces are containers too; tasks' carry a task ARN.)
        all_ids = docker("ps", "-q", "--filter", f"label=com.amazonaws.ecs.cluster={cluster}",
                         "--filter", "label=com.amazonaws.ecs.task-arn").split()
        all_ids = [i for i in all_ids if i not in docker("ps", "-q", "--filter",
                                                          f"label=com.amazonaws.ecs.task-arn={talk}").split()]
        assert len(all_ids) == 5, all_ids
    finally:
        for a in agents:
            a.stop()
        ids = docker("ps", "-aq", "--filter", f"label=com.amazonaws.ecs.cluster={cluster}").split()
        if ids:
            subprocess.run(["docker", "rm", "-f", *ids], capture_output=True)


def test_a_server_on_an_unreachable_etcd_fails_fast_and_says_so(tmp_path):
    dead = f"127.0.0.1:{free_port()}"
    began = time.time()
    p = subprocess.run([BERTH, "server", "--listen", f"127.0.0.1:{free_port()}", "--data-dir", str(tmp_path),
                        "--store", f"etcd://{dead}"], capture_output=True, text=True, stdin=subprocess.DEVNULL,
                       timeout=60)
    assert p.returncode != 0
    assert f"cannot open store etcd://{dead}" in p.stderr and "cannot reach etcd" in p.stderr, p.stderr
    assert time.time() - began < 30, "it must not hang"


def test_a_second_server_on_a_held_sqlite_store_refuses_to_start(tmp_path):
    first = Server(str(tmp_path)).start()
    try:
        p = subprocess.run([BERTH, "server", "--listen", f"127.0.0.1:{free_port()}", "--data-dir", str(tmp_path)],
                           capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=60)
        assert p.returncode != 0
        assert "another process has this store open" in p.stderr, p.stderr
        # The first one is untouched.
        make_client(first.url).list_clusters()
    finally:
        first.stop()


def test_an_agent_given_only_dead_servers_keeps_retrying_and_says_why(tmp_path):
    dead = types.SimpleNamespace(url=f"http://127.0.0.1:{free_port()},http://127.0.0.1:{free_port()}")
    a = Agent(dead, "default", str(tmp_path / "agent"), "i-" + uuid.uuid4().hex[:17],
              token="abcdef.0123456789abcdef0123456789abcdef").start()
    try:
        def retries():
            log = open(a.log).read()
            return log.count("no server answers; retrying") >= 3 and log
        log = wait_for("the agent to retry", retries, timeout=30)
        assert "cannot register through this server" in log and "Connection refused" in log, log
        assert a.proc.poll() is None, "it must keep trying, not exit"
    finally:
        a.stop()

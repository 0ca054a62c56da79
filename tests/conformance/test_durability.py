"""Everything acknowledged survives kill -9."""

import concurrent.futures
import json
import os
import threading
import time
import urllib.error
import urllib.request

from conftest import Server, make_client, signed

TARGET = "AmazonEC2ContainerServiceV20141113.RegisterTaskDefinition"


def register(url, family):
    body = json.dumps({"family": family, "containerDefinitions": [{"name": "a", "image": "busybox", "memory": 16}]}).encode()
    req = signed("POST", url + "/", body=body,
                 headers={"X-Amz-Target": TARGET, "Content-Type": "application/x-amz-json-1.1"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.loads(r.read())["taskDefinition"]["revision"]
    except (urllib.error.URLError, ConnectionError, OSError, ValueError):
        return None  # not acknowledged


def test_kill_9_during_500_concurrent_registrations_loses_nothing(tmp_path):
    d = str(tmp_path)
    server = Server(d).start()
    families = ["alpha", "beta"]
    acked = {f: [] for f in families}
    lock = threading.Lock()
    started = threading.Event()
    count = [0]

    def one(i):
        fam = families[i % 2]
        rev = register(server.url, fam)
        with lock:
            count[0] += 1
            if count[0] >= 100:
                started.set()
            if rev is not None:
                acked[fam].append(rev)

    with concurrent.futures.ThreadPoolExecutor(500) as pool:
        futures = [pool.submit(one, i) for i in range(500)]
        started.wait(timeout=60)
        server.kill9()  # in the middle: some calls done, many in flight
        concurrent.futures.wait(futures)

    total = sum(len(v) for v in acked.values())
    assert 100 <= total < 500, f"the kill should land mid-run (acknowledged {total})"

    server = Server(d).start()
    ecs = make_client(server.url)
    for fam in families:
        revs = []
        for page in ecs.get_paginator("list_task_definitions").paginate(familyPrefix=fam):
            revs += [int(a.rsplit(":", 1)[1]) for a in page["taskDefinitionArns"]]
        assert set(acked[fam]) <= set(revs), "every acknowledged revision survived"
        assert revs == list(range(1, len(revs) + 1)), "no gaps"
        # Each stored revision is whole and readable.
        for r in acked[fam][:20]:
            assert ecs.describe_task_definition(taskDefinition=f"{fam}:{r}")["taskDefinition"]["status"] == "ACTIVE"
        # Numbering continues after the last stored revision.
        nxt = ecs.register_task_definition(family=fam, containerDefinitions=[{"name": "a", "image": "i", "memory": 8}])
        assert nxt["taskDefinition"]["revision"] == len(revs) + 1
    server.stop()


def test_clean_shutdown_on_sigterm_keeps_data(tmp_path):
    d = str(tmp_path)
    s = Server(d).start()
    make_client(s.url).create_cluster(clusterName="kept")
    t = time.time()
    s.stop()
    assert s.proc.returncode == 0 and time.time() - t < 10
    s = Server(d).start()
    assert make_client(s.url).describe_clusters(clusters=["kept"])["clusters"][0]["status"] == "ACTIVE"
    s.stop()


def test_memory_store_starts_empty_each_time(tmp_path):
    d = str(tmp_path)
    s = Server(d, store="memory://").start()
    make_client(s.url).create_cluster(clusterName="ephemeral")
    s.stop()
    s = Server(d, store="memory://").start()
    assert make_client(s.url).list_clusters()["clusterArns"] == []
    s.stop()
    assert not os.path.exists(os.path.join(d, "berth.db"))

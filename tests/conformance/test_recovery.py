"""Restarts never disturb running containers: kill -9 of the agent and of
the server leaves every container running; after the restart each task's
state is right (including one whose container exited while its agent was
down) and nothing is duplicated; containers of no desired task are removed."""

import subprocess
import time

from conftest import IMAGE, Cluster, docker, docker_inspect, wait_for


def containers_of(task_arn):
    return docker("ps", "-aq", "--filter", f"label=com.amazonaws.ecs.task-arn={task_arn}").split()


def test_kill_9_of_agent_and_server_disturbs_nothing(tmp_path):
    # The agent is away for longer than the default host-loss grace; this
    # is about it coming back, not about its host being given up for lost.
    cl = Cluster(str(tmp_path), "recover", [[]],
                 extra_env={"BERTH_AGENT_TIMEOUT": "2", "BERTH_HOST_LOSS_GRACE": "60"}).start()
    try:
        ecs = cl.ecs
        ecs.register_task_definition(family="long", containerDefinitions=[
            {"name": "c", "image": IMAGE, "memory": 16, "command": ["sleep", "600"], "stopTimeout": 1}])
        ecs.register_task_definition(family="short", containerDefinitions=[
            {"name": "c", "image": IMAGE, "memory": 16, "command": ["sh", "-c", "sleep 4; exit 5"]}])
        long_tasks = [t["taskArn"] for t in ecs.run_task(cluster=cl.name, taskDefinition="long", count=2)["tasks"]]
        short = ecs.run_task(cluster=cl.name, taskDefinition="short")["tasks"][0]["taskArn"]
        for t in long_tasks + [short]:
            cl.wait_status(t, "RUNNING")
        ids = {t: cl.task(t)["containers"][0]["runtimeId"] for t in long_tasks + [short]}
        instance = cl.task(short)["containerInstanceArn"]

        # A container labelled as this agent's but of no task the server knows.
        owner = instance.rsplit("/", 1)[1]
        stray = docker("run", "-d", "--label", f"berth.instance={owner}", "--label",
                       "com.amazonaws.ecs.task-arn=arn:aws:ecs:us-east-1:000000000000:task/recover/" + "f" * 32,
                       "--label", "com.amazonaws.ecs.container-name=c", "--label", "com.amazonaws.ecs.cluster=recover",
                       IMAGE, "sleep", "600").strip()

        cl.agents[0].kill9()
        for cid in ids.values():
            assert docker_inspect(cid)["State"]["Running"], "the agent's death must not stop containers"
        wait_for("the agent to count as disconnected", lambda: not ecs.describe_container_instances(
            cluster=cl.name, containerInstances=[instance])["containerInstances"][0]["agentConnected"], timeout=15)
        # The short task's container exits while no agent watches.
        wait_for("the short container to exit", lambda: not docker_inspect(ids[short])["State"]["Running"], timeout=15)

        cl.agents[0].start()
        t = cl.wait_status(short, "STOPPED")
        assert t["stopCode"] == "EssentialContainerExited"
        assert t["containers"][0]["exitCode"] == 5
        for task in long_tasks:
            t = cl.task(task)
            assert t["lastStatus"] == "RUNNING"
            assert t["containers"][0]["runtimeId"] == ids[task], "adopted, not replaced"
            assert containers_of(task) == [ids[task][:12]], "nothing duplicated"
            assert docker_inspect(ids[task])["State"]["Running"]
        wait_for("the stray container to be removed", lambda: subprocess.run(
            ["docker", "inspect", stray], capture_output=True).returncode != 0)

        cl.server.kill9()
        for task in long_tasks:
            assert docker_inspect(ids[task])["State"]["Running"], "the server's death must not stop containers"
        cl.server.start()
        wait_for("the agent to reconnect", lambda: ecs.describe_container_instances(
            cluster=cl.name, containerInstances=[instance])["containerInstances"][0]["agentConnected"], timeout=30)
        for task in long_tasks:
            t = cl.task(task)
            assert t["lastStatus"] == "RUNNING"
            assert t["containers"][0]["runtimeId"] == ids[task]
            assert containers_of(task) == [ids[task][:12]]
        # And the pair still works: stop goes through.
        ecs.stop_task(cluster=cl.name, task=long_tasks[0])
        t = cl.wait_status(long_tasks[0], "STOPPED")
        assert t["stopCode"] == "UserInitiated"
        assert cl.task(long_tasks[1])["lastStatus"] == "RUNNING"
        assert sorted(ecs.list_tasks(cluster=cl.name)["taskArns"]) == [long_tasks[1]]
    finally:
        cl.stop()


def test_a_task_placed_while_its_agent_is_away_runs_when_it_returns(tmp_path):
    cl = Cluster(str(tmp_path), "away", [[]]).start()
    try:
        ecs = cl.ecs
        ecs.register_task_definition(family="f", containerDefinitions=[
            {"name": "c", "image": IMAGE, "memory": 16, "command": ["sleep", "600"], "stopTimeout": 1}])
        cl.server.kill9()
        cl.server.start()
        # The agent reconnects with backoff; a task placed now reaches it.
        wait_for("the agent to reconnect", lambda: ecs.describe_container_instances(
            cluster=cl.name, containerInstances=list(cl.instances().values()))["containerInstances"][0]["agentConnected"], timeout=30)
        arn = ecs.run_task(cluster=cl.name, taskDefinition="f")["tasks"][0]["taskArn"]
        cl.wait_status(arn, "RUNNING")
        assert len(containers_of(arn)) == 1
    finally:
        cl.stop()


def test_awslogs_output_survives_kill_9_of_agent_and_server(tmp_path):
    """The agent's copy of a container's output is the buffer: lines
    written while the agent or the server is down reach the Logs API once
    they are back, and none is lost (a batch in flight at a kill may come
    twice)."""
    cl = Cluster(str(tmp_path), "logsrecover", [[]],
                 extra_env={"BERTH_AGENT_TIMEOUT": "2", "BERTH_HOST_LOSS_GRACE": "60"}).start()
    try:
        from conftest import make_client
        logs = make_client(cl.server.url, "logs")
        logs.create_log_group(logGroupName="/ecs/recover")
        n = 300
        cl.ecs.register_task_definition(family="talker", containerDefinitions=[{
            "name": "c", "image": IMAGE, "memory": 16, "stopTimeout": 1,
            "command": ["sh", "-c", f"i=0; while [ $i -lt {n} ]; do echo line $i; i=$((i+1)); sleep 0.03; done;"
                        " exec sleep 600"],
            "logConfiguration": {"logDriver": "awslogs", "options": {
                "awslogs-group": "/ecs/recover", "awslogs-stream-prefix": "r"}}}])
        task = cl.ecs.run_task(cluster=cl.name, taskDefinition="talker")["tasks"][0]["taskArn"]
        cl.wait_status(task, "RUNNING")
        stream = f"r/c/{task.rsplit('/', 1)[1]}"
        time.sleep(1)
        cl.agents[0].kill9()
        time.sleep(2)
        cl.agents[0].start()
        time.sleep(1)
        cl.server.kill9()
        time.sleep(2)
        cl.server.start()
        logs = make_client(cl.server.url, "logs")

        def shipped():
            got, token = [], None
            while True:
                kw = {"nextToken": token} if token else {"startFromHead": True}
                r = logs.get_log_events(logGroupName="/ecs/recover", logStreamName=stream, **kw)
                got += [e["message"] for e in r["events"]]
                if r["nextForwardToken"] == token:
                    break
                token = r["nextForwardToken"]
            return got if len(set(got)) == n else None

        got = wait_for("every line in the Logs API", shipped, timeout=60)
        first = list(dict.fromkeys(got))
        assert first == [f"line {i}" for i in range(n)], first
    finally:
        cl.stop()

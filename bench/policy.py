"""The peer of benchmark 9's policy evaluation: moto's IAM evaluator
(moto.iam.access_control.IAMPolicy) asked the same questions about the same
ten documents (written by berth-bench-policy), timed per evaluation, as moto
evaluates a request: every policy, an explicit deny winning."""
import json
import sys
import time

from moto.iam.access_control import IAMPolicy, PermissionResult

docs = json.load(open(sys.argv[1]))
n = int(sys.argv[2])
policies = [IAMPolicy(json.dumps(d)) for d in docs]
asks = [("ecs:DescribeTaskDefinition", "arn:aws:ecs:us-east-1:000000000000:task-definition/web:3"),
        ("ecs:RunTask", "arn:aws:ecs:us-east-1:000000000000:task-definition/web:3"),
        ("ecs:DeleteCluster", "arn:aws:ecs:us-east-1:000000000000:cluster/prod3")]
ctx = {"aws:RequestedRegion": "us-east-1"}
lat = []
for i in range(n):
    action, resource = asks[i % 3]
    t = time.perf_counter()
    allowed = False
    for p in policies:
        r = p.is_action_permitted(action, resource, incoming_condition_values=ctx)
        if r == PermissionResult.DENIED:
            allowed = False
            break
        if r == PermissionResult.PERMITTED:
            allowed = True
    lat.append(time.perf_counter() - t)
lat.sort()
us = lambda q: lat[int((len(lat) - 1) * q)] * 1e6
print(json.dumps({"name": "moto", "policies": len(policies), "evaluations": n,
                  "p50_us": us(0.5), "p99_us": us(0.99), "p999_us": us(0.999), "max_us": us(1.0)}))

#!/usr/bin/env python3
"""Vendors a botocore service model into models/, trimmed to the operations
Berth serves: those keep their input, output and errors and every shape they
reach; the others keep only their names (so docs/api-coverage.md can list
them as missing and the front door can say they are not implemented), and
their shapes are left out, so the build generates types only for what is
served.

    .venv/bin/python scripts/vendor-model.py iam 2010-05-08 models/iam-2010-05-08.json OP...

`--query-model PATH` (before the operations) takes awsQuery's wire names
from an older query model of the same service: current models of services
that moved to JSON (SQS) dropped the `locationName`s, `flattened` flags,
error codes and XML namespace that clients still speaking awsQuery (such as
Debian's AWS CLI v2) send and expect.
"""
import gzip
import json
import os
import sys

import botocore

args = sys.argv[1:]
query_model = None
if "--query-model" in args:
    i = args.index("--query-model")
    query_model = json.load(open(args[i + 1]))
    del args[i : i + 2]
service, version, out, *served = args
base = os.path.join(os.path.dirname(botocore.__file__), "data", service, version)
path = os.path.join(base, "service-2.json.gz")
if os.path.exists(path):
    model = json.load(gzip.open(path))
else:
    model = json.load(open(os.path.join(base, "service-2.json")))
unknown = [op for op in served if op not in model["operations"]]
if unknown:
    sys.exit(f"not operations of {service}: {unknown}")

keep = set()


def reach(name):
    if name in keep:
        return
    keep.add(name)
    shape = model["shapes"][name]
    for m in shape.get("members", {}).values():
        reach(m["shape"])
    for k in ("member", "key", "value"):
        if k in shape:
            reach(shape[k]["shape"])


ops = {}
for name, op in model["operations"].items():
    if name in served:
        for k in ("input", "output"):
            if k in op:
                reach(op[k]["shape"])
        for e in op.get("errors", []):
            reach(e["shape"])
        ops[name] = {k: op[k] for k in ("name", "http", "input", "output", "errors") if k in op}
    else:
        ops[name] = {"name": name}
trimmed = {
    "version": model.get("version"),
    "metadata": model["metadata"],
    "operations": ops,
    "shapes": {k: v for k, v in model["shapes"].items() if k in keep},
}
if query_model:
    meta = trimmed["metadata"]
    meta["xmlNamespace"] = query_model["metadata"]["xmlNamespace"]
    if "query" not in meta.setdefault("protocols", [meta["protocol"]]):
        meta["protocols"].append("query")
    for name, shape in trimmed["shapes"].items():
        old = query_model["shapes"].get(name)
        if not old:
            continue
        for k in ("flattened", "locationName", "error"):
            if k in old:
                shape[k] = old[k]
        for k in ("member", "key", "value"):
            if k in shape and "locationName" in old.get(k, {}):
                shape[k]["locationName"] = old[k]["locationName"]
        for m, spec in shape.get("members", {}).items():
            loc = old.get("members", {}).get(m, {}).get("locationName")
            if loc:
                spec["locationName"] = loc
for shape in trimmed["shapes"].values():
    shape.pop("documentation", None)
    for m in shape.get("members", {}).values():
        m.pop("documentation", None)
with open(out, "w") as f:
    json.dump(trimmed, f, indent=1, sort_keys=True)
    f.write("\n")
print(f"{out}: {len(served)} of {len(ops)} operations, {len(keep)} shapes")

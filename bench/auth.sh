#!/usr/bin/env bash
# Authentication and authorization cost (issue 17, benchmark 9): the
# control-plane API benchmark against three Berth servers in one run, on the
# same machine and the same requests:
#   off   --auth off: nobody is asked who they are (the peer);
#   root  every request's SigV4 signature verified (the root bypasses policies);
#   user  verified, then authorized: an IAM user with ten attached policies.
# Prints a markdown table with ratios to `off`; raw JSON lines go to
# bench/results/.
#   bench/auth.sh [seconds-per-round] [rounds]
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/credentials.sh
secs=${1:-3}
rounds=${2:-3}
scripts/setup.sh
cargo build --release --locked -p berth -p berth-bench
mkdir -p bench/results
out=bench/results/auth-$(date +%Y%m%d-%H%M%S).jsonl
d_on=$(mktemp -d); d_off=$(mktemp -d)
p_on=18760; p_off=18761
target/release/berth server --listen 127.0.0.1:$p_on --data-dir "$d_on" --log warn --lb false &
on_pid=$!
target/release/berth server --listen 127.0.0.1:$p_off --data-dir "$d_off" --log warn --lb false --auth off 2>/dev/null &
off_pid=$!
trap 'kill $on_pid $off_pid 2>/dev/null; rm -rf "$d_on" "$d_off"' EXIT
for p in $p_on $p_off; do
  for _ in $(seq 100); do curl -sf -o /dev/null "http://127.0.0.1:$p/health" && break || sleep 0.1; done
done
# The user: ten customer-managed policies, the one that allows the
# benchmark's operations last, so that evaluation walks all ten.
user_env=$(.venv/bin/python - "http://127.0.0.1:$p_on" <<'PY'
import json, sys, boto3
iam = boto3.client("iam", endpoint_url=sys.argv[1], region_name="us-east-1")
iam.create_user(UserName="bench")
for i in range(10):
    actions = ["ecs:RegisterTaskDefinition", "ecs:DescribeTaskDefinition", "ecs:ListTaskDefinitions"] if i == 9 \
        else [f"ecs:Describe{s}{i}" for s in ("Clusters", "Services", "Tasks")] + ["elasticloadbalancing:Describe*"]
    doc = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": actions, "Resource": "*",
         "Condition": {"StringEquals": {"aws:RequestedRegion": "us-east-1"}}},
        {"Effect": "Deny", "Action": f"ecs:DeleteCluster", "Resource": f"arn:aws:ecs:*:*:cluster/prod{i}"}]}
    arn = iam.create_policy(PolicyName=f"bench{i}", PolicyDocument=json.dumps(doc))["Policy"]["Arn"]
    iam.attach_user_policy(UserName="bench", PolicyArn=arn)
k = iam.create_access_key(UserName="bench")["AccessKey"]
print(f"{k['AccessKeyId']} {k['SecretAccessKey']}")
PY
)
user_key=${user_env% *}; user_secret=${user_env#* }
run=r$RANDOM
# Reads first: the durable writes leave each server with as many task
# definitions as it managed to register, and the faster server would then
# read from a bigger store. Every read cell meets the same content.
# Each cell runs in rounds, off, root and user in turn within a round:
# what the machine does meanwhile (it has two cores, shared with the load
# generator) then falls on all three alike, and each round gives a ratio.
for op in describe list register; do
  for c in 1 32; do
    for r in $(seq "$rounds"); do
      for who in off root user; do
        case $who in
          off) port=$p_off; key=$AWS_ACCESS_KEY_ID; secret=$AWS_SECRET_ACCESS_KEY ;;
          root) port=$p_on; key=$AWS_ACCESS_KEY_ID; secret=$AWS_SECRET_ACCESS_KEY ;;
          user) port=$p_on; key=$user_key; secret=$user_secret ;;
        esac
        AWS_ACCESS_KEY_ID=$key AWS_SECRET_ACCESS_KEY=$secret target/release/berth-bench \
          --target "http://127.0.0.1:$port" --name "$who" --op $op --clients $c \
          --seconds "$secs" --run "$run-$who-$op-$c-$r" | sed "s/^{/{\"round\":$r,/" | tee -a "$out"
      done
    done
  done
done
.venv/bin/python - "$out" <<'PY'
import json, sys
from statistics import median
rows = [json.loads(l) for l in open(sys.argv[1])]
cells = {}
for r in rows:
    cells.setdefault((r["op"], r["clients"]), {}).setdefault(r["round"], {})[r["name"]] = r
print("\nMedians over the rounds; a ratio is the median of the rounds' ratios to `off`.")
print("\n| operation | clients | off req/s | off p99 ms | root (SigV4) req/s | ratio | p99 ms | user (SigV4 + 10 policies) req/s | ratio | p99 ms | rounds |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
names = {"register": "RegisterTaskDefinition (durable write)", "describe": "DescribeTaskDefinition", "list": "ListTaskDefinitions"}
for op in ("register", "describe", "list"):
    for c in (1, 32):
        rounds = [x for x in cells[(op, c)].values() if len(x) == 3]
        med = lambda who, f: median(x[who][f] for x in rounds)
        ratio = lambda who: median(x[who]["rps"] / x["off"]["rps"] for x in rounds)
        print(f"| {names[op]} | {c} | {med('off','rps'):.0f} | {med('off','p99_ms'):.2f} "
              f"| {med('root','rps'):.0f} | {ratio('root'):.2f}x | {med('root','p99_ms'):.2f} "
              f"| {med('user','rps'):.0f} | {ratio('user'):.2f}x | {med('user','p99_ms'):.2f} | {len(rounds)} |")
errs = sum(r["errors"] for r in rows)
print(f"\nerrors: {errs}")
PY

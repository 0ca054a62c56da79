#!/usr/bin/env bash
# Starts Berth on this machine (`berth up`) and shows it at work with the real
# aws CLI. Installs what is missing first. Berth keeps running afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --release --locked -p berth
export AWS_ACCESS_KEY_ID=${AWS_ACCESS_KEY_ID:-demo} AWS_SECRET_ACCESS_KEY=${AWS_SECRET_ACCESS_KEY:-demo}
export AWS_DEFAULT_REGION=${AWS_DEFAULT_REGION:-us-east-1} AWS_PAGER=""
listen=${BERTH_LISTEN:-127.0.0.1:8750}
url="http://$listen"
data=${BERTH_DATA_DIR:-$PWD/.berth}
mkdir -p "$data"

if ! curl -sf "$url/health" >/dev/null 2>&1; then
  nohup target/release/berth up --listen "$listen" --data-dir "$data" >"$data/berth.log" 2>&1 </dev/null &
  echo "started berth up (pid $!), log: $data/berth.log"
  for _ in $(seq 100); do curl -sf "$url/health" >/dev/null 2>&1 && break; sleep 0.1; done
fi
curl -sf "$url/health" >/dev/null || { echo "berth did not start; see $data/berth.log" >&2; exit 1; }

aws() { .venv/bin/aws --endpoint-url "$url" "$@"; }
set -x
aws sts get-caller-identity
aws ecs create-cluster --cluster-name demo --tags key=team,value=platform
aws ecs register-task-definition --family web \
  --container-definitions '[{"name":"web","image":"nginx:alpine","memory":128,"portMappings":[{"containerPort":80}]}]' \
  --query 'taskDefinition.{arn:taskDefinitionArn,revision:revision,compatibilities:compatibilities}'
aws ecs register-task-definition --family web --requires-compatibilities FARGATE --network-mode awsvpc \
  --cpu "0.25 vCPU" --memory "0.5 GB" --container-definitions '[{"name":"web","image":"nginx:alpine"}]' \
  --query 'taskDefinition.{arn:taskDefinitionArn,cpu:cpu,memory:memory,compatibilities:compatibilities}'
aws ecs list-task-definitions --family-prefix web
aws ecs describe-clusters --clusters demo missing --include TAGS SETTINGS
aws ecs register-task-definition --family web --requires-compatibilities FARGATE --network-mode awsvpc \
  --cpu 256 --memory 4096 --container-definitions '[{"name":"web","image":"nginx:alpine"}]' || true
set +x
echo
echo "Berth is running at $url (data in $data). Stop it with: pkill -f 'berth up'"

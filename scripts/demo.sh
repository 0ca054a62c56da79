#!/usr/bin/env bash
# Starts Berth on this machine (`berth up`) and shows it at work with the real
# aws CLI. Installs what is missing first. Berth keeps running afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
# BERTH_BIN: a berth binary to use instead of building one (the tests use
# their debug build).
berth=${BERTH_BIN:-}
if [ -z "$berth" ]; then
  cargo build --release --locked -p berth
  berth=target/release/berth
fi
# Berth checks every request's signature: on first start `berth up` makes
# the account root's access key and writes the `berth` profile (the AWS
# CLI's config and credentials files) that signs with it.
unset AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_SESSION_TOKEN
export AWS_PROFILE=berth
export AWS_DEFAULT_REGION=${AWS_DEFAULT_REGION:-us-east-1} AWS_PAGER=""
listen=${BERTH_LISTEN:-127.0.0.1:8750}
# The demo's load balancer listens here.
lbport=${BERTH_DEMO_LB_PORT:-8000}
url="http://$listen"
data=${BERTH_DATA_DIR:-$PWD/.berth}
mkdir -p "$data"

if ! curl -sf "$url/health" >/dev/null 2>&1; then
  nohup "$berth" up --listen "$listen" --data-dir "$data" >"$data/berth.log" 2>&1 </dev/null &
  echo "started berth up (pid $!), log: $data/berth.log"
  for _ in $(seq 100); do curl -sf "$url/health" >/dev/null 2>&1 && break; sleep 0.1; done
fi
curl -sf "$url/health" >/dev/null || { echo "berth did not start; see $data/berth.log" >&2; exit 1; }

aws() { .venv/bin/aws --endpoint-url "$url" "$@"; }
# berth up registers this host in the default cluster; wait for its agent.
for _ in $(seq 100); do
  [ "$(aws ecs list-container-instances --query 'length(containerInstanceArns)' --output text 2>/dev/null)" = "1" ] && break
  sleep 0.1
done
set -x
aws sts get-caller-identity
aws ecs list-container-instances
aws ecs register-task-definition --family hello \
  --container-definitions '[{"name":"hello","image":"berth-test/busybox:latest","memory":32,
    "command":["sh","-c","echo hello from a Berth task on $(hostname); sleep 2; echo bye"]}]' \
  --query 'taskDefinition.taskDefinitionArn'
task=$(aws ecs run-task --task-definition hello --query 'tasks[0].taskArn' --output text)
aws ecs wait tasks-stopped --tasks "$task"
aws ecs describe-tasks --tasks "$task" \
  --query 'tasks[0].{lastStatus:lastStatus,stopCode:stopCode,exitCode:containers[0].exitCode,startedAt:startedAt,stoppedAt:stoppedAt}'
"$berth" logs "$task" --server "$url"
aws ecs register-task-definition --family web \
  --container-definitions '[{"name":"web","image":"berth-test/busybox:latest","memory":32,"stopTimeout":2,
    "command":["sh","-c","mkdir -p /www && echo hello over HTTP > /www/index.html && exec httpd -f -p 8080 -h /www"],"portMappings":[{"containerPort":8080}]}]' --query 'taskDefinition.revision'
# A service keeps two web tasks running: a killed container is replaced
# within about a second, and a new revision rolls out without downtime.
aws ecs create-service --service-name web --task-definition web --desired-count 2 \
  --query 'service.{status:status,desired:desiredCount,deployment:deployments[0].id}'
aws ecs wait services-stable --services web
web=$(aws ecs list-tasks --service-name web --query 'taskArns[0]' --output text)
port=$(aws ecs describe-tasks --tasks "$web" --query 'tasks[0].containers[0].networkBindings[0].hostPort' --output text)
curl -s --retry 10 --retry-connrefused --retry-delay 0 "http://127.0.0.1:$port/"
docker kill "$(aws ecs describe-tasks --tasks "$web" --query 'tasks[0].containers[0].runtimeId' --output text)" >/dev/null
aws ecs wait tasks-stopped --tasks "$web"
aws ecs wait services-stable --services web
"$berth" service events web --server "$url"
aws ecs register-task-definition --family web \
  --container-definitions '[{"name":"web","image":"berth-test/busybox:latest","memory":32,"stopTimeout":2,
    "command":["sh","-c","mkdir -p /www && echo hello from revision 2 > /www/index.html && exec httpd -f -p 8080 -h /www"],"portMappings":[{"containerPort":8080}]}]' --query 'taskDefinition.revision'
"$berth" service deploy web --task-definition web --server "$url"
"$berth" service ls --server "$url"
aws ecs delete-service --service web --force --query 'service.status'
aws ecs wait services-inactive --services web
# Fargate: the same host is Fargate capacity no one sees as an instance.
# The task gets its own address; sg-allow-all lets this host reach it.
aws ecs register-task-definition --family web-fargate --requires-compatibilities FARGATE \
  --network-mode awsvpc --cpu 256 --memory 512 \
  --container-definitions '[{"name":"web","image":"berth-test/busybox:latest","stopTimeout":2,
    "command":["sh","-c","mkdir -p /www && echo hello from Fargate > /www/index.html && exec httpd -f -p 8080 -h /www"]}]' \
  --query 'taskDefinition.revision'
fargate=$(aws ecs run-task --launch-type FARGATE --task-definition web-fargate \
  --network-configuration 'awsvpcConfiguration={subnets=[subnet-local-1a],securityGroups=[sg-allow-all]}' \
  --query 'tasks[0].taskArn' --output text)
aws ecs wait tasks-running --tasks "$fargate"
ip=$(aws ecs describe-tasks --tasks "$fargate" \
  --query "tasks[0].attachments[0].details[?name=='privateIPv4Address'].value | [0]" --output text)
curl -s --retry 10 --retry-connrefused --retry-delay 0 "http://$ip:8080/"
aws ecs list-container-instances --query 'length(containerInstanceArns)'
aws ecs stop-task --task "$fargate" --query 'task.desiredStatus'
aws ecs wait tasks-stopped --tasks "$fargate"
# A load balancer in front of a service: its tasks register as targets and
# take traffic once they pass their health checks.
lb=$(aws elbv2 create-load-balancer --name demo --subnets subnet-local-1a subnet-local-1b \
  --query 'LoadBalancers[0].LoadBalancerArn' --output text)
tg=$(aws elbv2 create-target-group --name demo --protocol HTTP --port 8080 --vpc-id vpc-local \
  --target-type instance --health-check-interval-seconds 5 --health-check-timeout-seconds 2 \
  --healthy-threshold-count 2 --query 'TargetGroups[0].TargetGroupArn' --output text)
# A stopped task drains this long first (ALB's default is 300 s).
aws elbv2 modify-target-group-attributes --target-group-arn "$tg" \
  --attributes Key=deregistration_delay.timeout_seconds,Value=3 --query 'length(Attributes)'
aws elbv2 create-listener --load-balancer-arn "$lb" --protocol HTTP --port "$lbport" \
  --default-actions "Type=forward,TargetGroupArn=$tg" --query 'Listeners[0].Port'
aws ecs create-service --service-name web-lb --task-definition web --desired-count 2 \
  --load-balancers "targetGroupArn=$tg,containerName=web,containerPort=8080" --query 'service.status'
aws ecs wait services-stable --services web-lb
aws elbv2 describe-target-health --target-group-arn "$tg" --query 'TargetHealthDescriptions[].TargetHealth.State'
for _ in 1 2 3; do curl -s "http://127.0.0.1:$lbport/" | sed 's/^/through the load balancer: /'; done
aws ecs delete-service --service web-lb --force --query 'service.status'
aws ecs wait services-inactive --services web-lb
"$berth" billing --server "$url"
set +x
echo
echo "Berth is running at $url (data in $data). Stop it with: pkill -f 'berth up'"

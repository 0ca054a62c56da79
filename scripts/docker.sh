#!/usr/bin/env bash
# Makes sure a Docker Engine answers on /var/run/docker.sock: installs
# docker.io if it is missing and starts dockerd in the background if none
# runs (through systemd when the machine has it). Idempotent.
set -euo pipefail
if docker info >/dev/null 2>&1; then
  exit 0
fi
if ! command -v dockerd >/dev/null; then
  echo "docker: installing docker.io"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq docker.io </dev/null
fi
if docker info >/dev/null 2>&1; then
  exit 0
fi
if [ -d /run/systemd/system ] && systemctl start docker 2>/dev/null; then
  :
else
  echo "docker: starting dockerd (log: /var/log/berth-dockerd.log)"
  setsid dockerd >/var/log/berth-dockerd.log 2>&1 </dev/null &
fi
for _ in $(seq 120); do
  docker info >/dev/null 2>&1 && exit 0
  sleep 0.5
done
echo "docker: the engine did not come up; see /var/log/berth-dockerd.log" >&2
tail -20 /var/log/berth-dockerd.log >&2 || true
exit 1

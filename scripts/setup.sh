#!/usr/bin/env bash
# Installs what Berth's build and tests need on a Debian machine, idempotently:
# system packages, a Rust toolchain check, a Python venv (.venv) with the
# real AWS clients used by the conformance tests and benchmarks, a running
# Docker Engine and the local test images.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v cc >/dev/null || need_apt+=(build-essential)
command -v curl >/dev/null || need_apt+=(curl)
python3 -c 'import venv, ensurepip' 2>/dev/null || need_apt+=(python3-venv)
# The test images are FROM scratch, so they need the static busybox.
dpkg -s busybox-static >/dev/null 2>&1 || need_apt+=(busybox-static)
# Tests put an agent in its own network namespace, as another host.
command -v ip >/dev/null || need_apt+=(iproute2)
# Security groups are iptables tables inside task namespaces; pull tests
# use a local registry.
command -v iptables-restore >/dev/null || need_apt+=(iptables)
command -v nsenter >/dev/null || need_apt+=(util-linux)
command -v docker-registry >/dev/null || need_apt+=(docker-registry)
# Fargate hosts run each task on a gVisor kernel of its own.
command -v runsc >/dev/null || need_apt+=(runsc)
# The etcd store's tests, and `berth lb` beside a server, run a real etcd.
command -v etcd >/dev/null || need_apt+=(etcd-server)
# The aws CLI v2 (Debian's), for `aws logs tail`, which v1 lacks.
[ -x /usr/bin/aws ] || need_apt+=(awscli)
# Scheduled scaling reads time zones from the system's database.
[ -d /usr/share/zoneinfo/America ] || need_apt+=(tzdata)
# The AWS SDK for JavaScript v3 is one of the clients the tests sign with.
command -v node >/dev/null || need_apt+=(nodejs)
command -v npm >/dev/null || need_apt+=(npm)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "setup: installing ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need_apt[@]}" </dev/null
fi

command -v cargo >/dev/null || { echo "setup: cargo is missing; install a stable Rust toolchain" >&2; exit 1; }
if ! cargo nextest --version >/dev/null 2>&1; then
  echo "setup: installing cargo-nextest"
  cargo install --locked cargo-nextest
fi

# The venv is rebuilt when requirements change.
req=tests/conformance/requirements.txt
stamp=.venv/.requirements
if [ ! -x .venv/bin/python ] || ! cmp -s "$req" "$stamp"; then
  echo "setup: creating .venv"
  python3 -m venv .venv
  .venv/bin/pip install -q --disable-pip-version-check -r "$req"
  cp "$req" "$stamp"
fi

# The JavaScript SDK, as pinned by tests/js/package-lock.json (versions
# that still run on Debian 12's Node 18).
jsstamp=tests/js/node_modules/.package-lock.json
if [ ! -f "$jsstamp" ] || [ tests/js/package-lock.json -nt "$jsstamp" ]; then
  echo "setup: installing the AWS SDK for JavaScript (tests/js)"
  (cd tests/js && npm ci --no-audit --no-fund --loglevel=error)
fi

# The container runtime's and agent's tests drive a real Docker Engine.
scripts/docker.sh
scripts/test-images.sh

#!/usr/bin/env bash
# The cluster manager at scale and under failure (issue 16), with simulated
# hosts (bench/src/bin/hosts.rs: real agent protocol, one WebSocket each,
# no Docker):
#   1. RunTask (32 clients, count 10) at 10, 100 and 1,000 hosts, measured
#      at 1,000, 10,000 and 100,000 running tasks, and a 10,000-task
#      service from CreateService to all RUNNING; the server's RSS and CPU.
#   2. A host falling silent (no heartbeat, connection left open) at 100
#      hosts, 20 times: seconds until its service tasks run elsewhere.
#   3. Three servers on one etcd, 20 hosts, a write stream; kill -9 of the
#      leader: seconds until writes succeed and the controller acts again.
# Raw JSON lines go to bench/results/cluster-<time>.jsonl; prints tables.
#   bench/cluster.sh [levels] [hosts...]    e.g. bench/cluster.sh 1000,10000 10 100
# PARTS (default "scale silent failover") picks what runs.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/credentials.sh
levels=${1:-1000,10000,100000}
shift || true
hosts=("${@:-10 100 1000}")
read -r -a hosts <<<"${hosts[*]}"
scripts/setup.sh >/dev/null
cargo build --release --locked -p berth -p berth-bench
mkdir -p bench/results
out=bench/results/cluster-$(date +%Y%m%d-%H%M%S).jsonl
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
ulimit -n 65536 || true

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
healthy() { for _ in $(seq 200); do curl -sf -o /dev/null "$1/health" && return 0; sleep 0.05; done; return 1; }

parts=${PARTS:-scale silent failover}
has() { [[ " $parts " == *" $1 "* ]]; }

# 1. Scale, one server on its default store (SQLite), a fresh one per host count.
has scale && for n in "${hosts[@]}"; do
  p=$(port); d="$work/scale-$n"; mkdir -p "$d"
  target/release/berth server --listen 127.0.0.1:$p --data-dir "$d" --log warn --lb false 2>"$d/log" &
  pid=$!; pids+=("$pid"); healthy "http://127.0.0.1:$p"
  target/release/berth-bench-hosts --servers "http://127.0.0.1:$p" --hosts "$n" --levels "$levels" \
    --calls 640 --service-tasks 10000 --server-pid "$pid" --label "scale-$n" 2>>"$d/tool.log" | tee -a "$out"
  kill "$pid"; wait "$pid" 2>/dev/null || true
done

# 2. A silent host, 20 times, at 100 hosts, with the default timeout and grace.
if has silent; then
p=$(port); d="$work/silent"; mkdir -p "$d"
target/release/berth server --listen 127.0.0.1:$p --data-dir "$d" --log warn --lb false 2>"$d/log" &
pid=$!; pids+=("$pid"); healthy "http://127.0.0.1:$p"
target/release/berth-bench-hosts --servers "http://127.0.0.1:$p" --hosts 100 --levels 1000 --calls 0 \
  --silent-trials 20 --server-pid "$pid" --label silent 2>>"$d/tool.log" | tee -a "$out"
kill "$pid"; wait "$pid" 2>/dev/null || true
fi

# 3. Failover: three servers on one etcd, 20 hosts spread over them.
if has failover; then
ep=$(port); peer=$(port); d="$work/failover"; mkdir -p "$d"
etcd --data-dir "$d/etcd" --listen-client-urls "http://127.0.0.1:$ep" --advertise-client-urls "http://127.0.0.1:$ep" \
  --listen-peer-urls "http://127.0.0.1:$peer" --initial-advertise-peer-urls "http://127.0.0.1:$peer" \
  --initial-cluster "default=http://127.0.0.1:$peer" --max-txn-ops 1024 >"$d/etcd.log" 2>&1 &
pids+=("$!")
for _ in $(seq 200); do curl -sf -o /dev/null "http://127.0.0.1:$ep/health" && break; sleep 0.05; done
urls=(); spids=()
for i in 0 1 2; do
  p=$(port)
  target/release/berth server --listen 127.0.0.1:$p --data-dir "$d/s$i" --store "etcd://127.0.0.1:$ep" \
    --log warn --lb false 2>"$d/s$i.log" &
  spids+=("$!"); pids+=("$!"); urls+=("http://127.0.0.1:$p")
done
for u in "${urls[@]}"; do healthy "$u"; done
leader=""
for _ in $(seq 200); do
  for i in 0 1 2; do
    curl -sf "${urls[$i]}/metrics" | grep -qx 'berth_leader 1' && leader=$i && break 2
  done
  sleep 0.05
done
[ -n "$leader" ] || { echo "no leader" >&2; exit 1; }
# Clients start on the leader, so that its death is felt.
order="${urls[$leader]}"; for i in 0 1 2; do [ "$i" = "$leader" ] || order="$order,${urls[$i]}"; done
kill_file="$d/killed"
target/release/berth-bench-hosts --servers "$order" --hosts 20 --levels 0 --calls 0 --kill-file "$kill_file" \
  --label failover 2>>"$d/tool.log" | tee -a "$out" &
tool=$!
# Wait until the tool's service is whole and its writes flow, then kill.
sleep 8
kill -9 "${spids[$leader]}"
touch "$kill_file"
wait "$tool"
fi

python3 - "$out" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
print("\n| hosts | running tasks | RunTask p50 ms | p99 ms | placements/s (answered) | placements/s (all RUNNING) | server RSS MiB | server CPU cores |")
print("|---|---|---|---|---|---|---|---|")
for r in rows:
    if r["kind"] == "runtask" and r["calls"] > 0:
        print(f"| {r['hosts']} | {r['running_before']} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['placements_per_sec_answered']:.0f} | "
              f"{r['placements_per_sec_running']:.0f} | {r['server_rss_mib'] or 0:.0f} | {r['server_cpu_cores'] or 0:.2f} |")
print("\n| hosts | service tasks | CreateService to all RUNNING, s | server RSS MiB |")
print("|---|---|---|---|")
for r in rows:
    if r["kind"] == "service":
        print(f"| {r['hosts']} | {r['tasks']} | {r['seconds_to_all_running'] or float('nan'):.2f} | {r['server_rss_mib'] or 0:.0f} |")
for r in rows:
    if r["kind"] == "silent_summary":
        print(f"\nsilent host replaced ({r['trials']} trials, {r['hosts']} hosts): p50 {r['p50_s']:.2f} s, p99 {r['p99_s']:.2f} s, max {r['max_s']:.2f} s")
    if r["kind"] == "failover":
        print(f"\nfailover: first write ok {r['first_write_ok_after_s']:.2f} s after kill, scale-up accepted {r['scale_accepted_after_s']:.2f} s, "
              f"controller acted {r['controller_acted_after_s']} s; acked {r['acked_writes']}, missing {r['missing_acked']}, "
              f"hosts connected {r['hosts_connected']}")
PY
echo "raw: $out"

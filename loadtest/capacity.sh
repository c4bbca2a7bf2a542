#!/usr/bin/env bash
# Capacity sweep for BENCHMARKS.md: one teacher -> N pupils, N stepping 50, 100, 200, 400 ...
# until video loss exceeds 1 % or forwarding latency p99 exceeds 50 ms (the stop rule of the
# issue), for "video" (middle layer + audio) and "audio" (audio only). Each step is one
# `loadtest --spawn-server` run; its JSON goes to OUT/<scenario>-<N>.json, and plot.py turns the
# directory into a table (capacity.md) and a plot (capacity.png).
#
# usage: loadtest/capacity.sh [OUT_DIR] [MAX_N]
#   CLASSROOM_BIN  server binary (default target/release/classroom)
#   LOADTEST_BIN   loadtest binary (default target/release/loadtest)
#   DURATION       steady window per step (default 20s)
#
# On a shared machine the kernel's autogroup scheduler splits CPU between sessions, and `nice`
# does not reach across them: each run gets its own session at a high autogroup priority (root),
# so that what is measured is the server, not the neighbours' builds (see loadtest/README.md).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out=${1:-$root/target/capacity}
max_n=${2:-1600}
server=${CLASSROOM_BIN:-$root/target/release/classroom}
loadtest=${LOADTEST_BIN:-$root/target/release/loadtest}
duration=${DURATION:-20s}

for bin in "$server" "$loadtest"; do
  [ -x "$bin" ] || { echo "capacity: no binary at $bin (cargo build --release -p classroom -p loadtest)"; exit 2; }
done
mkdir -p "$out"

run_step() {
  local scenario=$1 n=$2 json=$out/$scenario-$n.json
  local extra=()
  [ "$scenario" = audio ] && extra+=(--audio-only)
  echo "capacity: $scenario, $n pupils"
  # Joins at up to 40/s so large steps do not spend the whole run ramping.
  local rate=$(( n / 10 > 40 ? 40 : (n / 10 < 10 ? 10 : n / 10) ))
  setsid bash -c 'echo -15 > /proc/self/autogroup 2>/dev/null || true; exec "$@"' _ \
    "$loadtest" --spawn-server "$server" --pupils "$n" --join-rate "$rate" \
    --duration "$duration" --max-layer medium --quiet --json "$json" "${extra[@]}" \
    >"$out/$scenario-$n.txt" 2>&1 || true
  [ -f "$json" ] || { echo "capacity: no result for $scenario $n (see $out/$scenario-$n.txt)"; return 1; }
  # Over the limit: stop this scenario after this step.
  python3 - "$json" "$scenario" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
lat = d["audio_latency" if sys.argv[2] == "audio" else "video_latency"]
loss = d["audio_loss_pct" if sys.argv[2] == "audio" else "video_loss_pct"]
over = loss > 1.0 or lat["p99_ms"] > 50.0 or d["failed_participants"] > 0
print(f"  loss {loss:.2f} %, latency p99 {lat['p99_ms']:.1f} ms, "
      f"server {d['server']['us_per_rx_packet']:.1f} us/packet{'  -> limit reached' if over else ''}")
sys.exit(3 if over else 0)
PY
}

for scenario in video audio; do
  n=50
  while [ "$n" -le "$max_n" ]; do
    status=0
    run_step "$scenario" "$n" || status=$?
    [ "$status" -eq 0 ] || break
    n=$((n * 2))
  done
done

python3 "$root/loadtest/plot.py" "$out"

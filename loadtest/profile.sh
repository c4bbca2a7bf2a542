#!/usr/bin/env bash
# Where the whole server's CPU goes under load, for BENCHMARKS.md: one `loadtest --spawn-server`
# run (one teacher, N pupils on the middle layer), `perf record -e cpu-clock` on the server
# during its steady state, then profile_split.py, which sorts the samples into what the media
# thread spends them on (the kernel's send, str0m's output and timeout handling, our forwarding,
# the event loop) and prints each as a share and as microseconds per forwarded packet.
#
# usage: loadtest/profile.sh [OUT_DIR] [PUPILS]      (default target/profile 100)
#   CLASSROOM_BIN, LOADTEST_BIN   binaries (default target/release/{classroom,loadtest})
#   SECONDS_RECORDED              length of the recording (default 12)
# Needs perf (Debian: linux-perf) and root; hardware counters are not needed (cpu-clock).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out=${1:-$root/target/profile}
pupils=${2:-100}
server=${CLASSROOM_BIN:-$root/target/release/classroom}
loadtest=${LOADTEST_BIN:-$root/target/release/loadtest}
recorded=${SECONDS_RECORDED:-12}
command -v perf >/dev/null || { echo "profile: perf is missing (apt-get install linux-perf)"; exit 2; }
for bin in "$server" "$loadtest"; do
  [ -x "$bin" ] || { echo "profile: no binary at $bin (cargo build --release -p classroom -p loadtest)"; exit 2; }
done
mkdir -p "$out"
server=$(realpath "$server")

# Joins take PUPILS/20 seconds; the recording starts once every pupil has had time to settle.
join_s=$(( pupils / 20 + 1 ))
duration=$(( recorded + 8 ))
setsid bash -c 'echo -15 > /proc/self/autogroup 2>/dev/null || true; exec "$@"' _ \
  "$loadtest" --spawn-server "$server" --pupils "$pupils" --join-rate 20 \
  --duration "${duration}s" --max-layer medium --quiet --json "$out/run.json" \
  >"$out/run.txt" 2>&1 &
runner=$!
trap 'kill "$runner" 2>/dev/null || true' EXIT

pid=
for _ in $(seq 100); do
  pid=$(pgrep -P "$runner" -x classroom || true)
  [ -n "$pid" ] && break
  sleep 0.1
done
[ -n "$pid" ] || { echo "profile: the server did not start (see $out/run.txt)"; exit 1; }
sleep $(( join_s + 3 ))
echo "profile: recording server $pid for ${recorded}s"
perf record -q -e cpu-clock -F 2000 --call-graph dwarf,16384 -p "$pid" -o "$out/perf.data" \
  -- sleep "$recorded" 2>/dev/null
wait "$runner" || true
trap - EXIT
grep -E "server CPU steady|steady rx|latency video" "$out/run.txt" || true
perf script -i "$out/perf.data" -F comm,tid,ip,sym 2>/dev/null \
  | python3 "$root/loadtest/profile_split.py" --run "$out/run.json" | tee "$out/split.txt"

#!/usr/bin/env bash
# Memory per subscriber for BENCHMARKS.md: the server's RSS with 0, 100, 200, 400 pupils (one
# fresh `loadtest --spawn-server` run each, the teacher always publishing), and the slope of a
# least-squares fit of RSS against pupils, in KiB per subscriber.
#
# usage: loadtest/memory.sh [OUT_DIR] [PUPIL COUNTS...]     (default counts: 0 100 200 400)
#   CLASSROOM_BIN  server binary (default $CARGO_TARGET_DIR/release/classroom, else target/release/classroom)
#   LOADTEST_BIN   loadtest binary (likewise)
#   SCENARIO       video (middle layer + audio, default) or audio (audio only)
#   DURATION       steady window per step (default 30s); RSS is the mean over it
#
# RSS is read from /proc/PID/status (VmRSS) every second; the figure per step is the mean over
# the steady window, after every pupil has its media and before anyone leaves. Each step gets
# its own session at a raised autogroup priority (root), as in capacity.sh.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
target_dir=${CARGO_TARGET_DIR:-$root/target}
out=${1:-$target_dir/memory}
shift || true
counts=("$@")
[ ${#counts[@]} -gt 0 ] || counts=(0 100 200 400)
server=${CLASSROOM_BIN:-$target_dir/release/classroom}
loadtest=${LOADTEST_BIN:-$target_dir/release/loadtest}
scenario=${SCENARIO:-video}
duration=${DURATION:-30s}

for bin in "$server" "$loadtest"; do
  [ -x "$bin" ] || { echo "memory: no binary at $bin (cargo build --release -p classroom -p loadtest)"; exit 2; }
done
case "$scenario" in
  video) extra=() ;;
  audio) extra=(--audio-only) ;;
  *) echo "memory: SCENARIO is video or audio"; exit 2 ;;
esac
mkdir -p "$out"

files=()
for n in "${counts[@]}"; do
  json=$out/$scenario-$n.json
  # Joins at up to 40/s so that the large steps do not spend the run ramping.
  rate=$(( n / 10 > 40 ? 40 : (n / 10 < 10 ? 10 : n / 10) ))
  echo "memory: $scenario, $n pupils (load average $(cut -d' ' -f1-3 /proc/loadavg))"
  setsid bash -c 'echo -15 > /proc/self/autogroup 2>/dev/null || true; exec "$@"' _ \
    "$loadtest" --spawn-server "$server" --pupils "$n" --join-rate "$rate" \
    --duration "$duration" --max-layer medium --quiet --json "$json" "${extra[@]}" \
    >"$out/$scenario-$n.txt" 2>&1 || true
  if [ -f "$json" ]; then files+=("$json"); else echo "memory: no result for $n (see $out/$scenario-$n.txt)"; fi
done
[ ${#files[@]} -ge 2 ] || { echo "memory: fewer than two results, no fit"; exit 1; }

python3 - "$scenario" "${files[@]}" <<'PY' | tee "$out/$scenario.md"
import json, sys
scenario, paths = sys.argv[1], sys.argv[2:]
rows = []
for p in paths:
    d = json.load(open(p))
    rows.append((d["pupils_planned"], d["server"]["rss_steady_mb"], d["server"]["rss_peak_mb"],
                 d["generator"]["rss_steady_mb"], d["pupils_with_audio"],
                 d["pupils_with_video"], d["failed_participants"]))
rows.sort()
base = next((r[1] for r in rows if r[0] == 0), None)
print(f"| {scenario}: pupils | server RSS MiB (steady mean) | peak | above 0 pupils, KiB per pupil | pupils with video / audio | failed | generator RSS MiB |")
print("|---:|---:|---:|---:|---:|---:|---:|")
for n, rss, peak, gen, audio, video, failed in rows:
    per = "-" if base is None or n == 0 else f"{(rss - base) * 1024 / n:.0f}"
    print(f"| {n} | {rss:.1f} | {peak:.1f} | {per} | {video} / {audio} | {failed} | {gen:.1f} |")
xs, ys = [r[0] for r in rows], [r[1] for r in rows]
mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
sxx = sum((x - mx) ** 2 for x in xs)
if sxx == 0:
    print("no fit: one pupil count only")
    sys.exit(1)
slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx
intercept = my - slope * mx
ss_tot = sum((y - my) ** 2 for y in ys)
ss_res = sum((y - (intercept + slope * x)) ** 2 for x, y in zip(xs, ys))
r2 = 1 - ss_res / ss_tot if ss_tot > 0 else 1.0
print(f"\nfit: RSS = {intercept:.1f} MiB + {slope * 1024:.0f} KiB × pupils (R² {r2:.4f}); "
      f"target < 200 KiB per subscriber: {'met' if slope * 1024 < 200 else 'not met'}")
PY

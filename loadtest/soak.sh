#!/usr/bin/env bash
# Soak with churn for BENCHMARKS.md: one teacher and PUPILS pupils for DURATION, CHURN pupils
# per second leaving (every second one vanishing without a word) and as many fresh clients
# joining in their place; then the verdict on the server's memory: RSS one minute into the
# steady window against its end, and the slope of a least-squares fit from minute 1 on.
#
# usage: loadtest/soak.sh [OUT_DIR]
#   CLASSROOM_BIN        server binary (default $CARGO_TARGET_DIR/release/classroom, else target/release/classroom)
#   LOADTEST_BIN         loadtest binary (likewise)
#   PUPILS               pupils in the room (default 100)
#   CHURN                pupils leaving and rejoining per second (default 2)
#   DURATION             steady window (default 10m)
#   MAX_SLOPE_KIB_MIN    verdict threshold on the RSS slope (default 256 KiB per minute: two
#                        10-minute runs without a leak fitted +6 and -68 KiB/min, so the noise
#                        is below 100; at 2/s churn 256 KiB/min is a leak of ≈ 2 KiB per pupil,
#                        while one pupil's state is ≈ 460 KiB)
#   EXTRA                more loadtest options, e.g. "--audio-only"
#
# Exit status: 0 when the RSS does not grow (slope within the threshold), no participant
# failed and the server's gauges are back to zero once everyone left, 1 otherwise, 2 when the run could not start. Writes OUT/soak.json, OUT/soak.txt and,
# with matplotlib, OUT/soak.png.
#
# The run gets its own session at a raised autogroup priority (root), as in capacity.sh, so
# that neighbours' builds on a shared machine do not take its CPU share.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
target_dir=${CARGO_TARGET_DIR:-$root/target}
out=${1:-$target_dir/soak}
server=${CLASSROOM_BIN:-$target_dir/release/classroom}
loadtest=${LOADTEST_BIN:-$target_dir/release/loadtest}
pupils=${PUPILS:-100}
churn=${CHURN:-2}
duration=${DURATION:-10m}
max_slope=${MAX_SLOPE_KIB_MIN:-256}

for bin in "$server" "$loadtest"; do
  [ -x "$bin" ] || { echo "soak: no binary at $bin (cargo build --release -p classroom -p loadtest)"; exit 2; }
done
mkdir -p "$out"
json=$out/soak.json

echo "soak: $pupils pupils, $churn/s churn, $duration; load average: $(cut -d' ' -f1-3 /proc/loadavg)"
# The progress bar goes to the terminal (stderr); the table is kept in soak.txt.
# shellcheck disable=SC2086  # EXTRA is a list of options
setsid bash -c 'echo -15 > /proc/self/autogroup 2>/dev/null || true; exec "$@"' _ \
  "$loadtest" --spawn-server "$server" --pupils "$pupils" --join-rate 20 \
  --duration "$duration" --churn-per-sec "$churn" --churn-abrupt --json "$json" ${EXTRA:-} \
  | tee "$out/soak.txt" || true
echo "soak: load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
[ -f "$json" ] || { echo "soak: no result (see $out/soak.txt)"; exit 2; }

python3 "$root/loadtest/plot.py" --soak "$json" || true

python3 - "$json" "$max_slope" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
max_slope = float(sys.argv[2])
r, c = d["server_rss"], d["churn"] or {}
slope = r["slope_kib_per_min"]
fmt = lambda v, spec=".1f": "-" if v is None else format(v, spec)
print(f"server RSS at minute 1: {fmt(r['at_1min_mb'])} MiB, at the end: {fmt(r['at_end_mb'])} MiB")
print(f"slope from minute 1 on: {fmt(slope)} KiB/min "
      f"({fmt(r['kib_per_churned_pupil'], '.2f')} KiB per churned pupil; "
      f"{r['fit_samples']} samples, {r['fit_from_s']:.0f}-{r['fit_to_s']:.0f} s)")
print(f"churn: {c.get('churned', 0)} left, {c.get('rejoined', 0)} rejoined, "
      f"live pupils {c.get('live_min', '-')}-{c.get('live_max', '-')}; "
      f"failed participants: {d['failed_participants']}")
# What the server still counted once everyone had left (its /metrics gauges): sessions or
# peer connections leaked by the churn show here even when they cost too little memory for RSS.
left = d.get("server_after_leave")
if left:
    g = left["gauges"]
    print(f"server after everyone left ({left['after_s']:.1f} s): participants {g['participants']}, "
          f"websockets {g['websockets']}, peer connections {g['peer_connections']}, "
          f"tracks {g['tracks']}, rooms {g['rooms']}")
leaked = bool(left) and not left["all_closed"]
grows = slope is None or slope > max_slope
failed = d["failed_participants"] > 0
verdict = "GROWS" if grows else "flat"
print(f"verdict: server RSS {verdict} (threshold {max_slope:.0f} KiB/min)"
      + ("; the server still holds sessions or peers after everyone left" if leaked else "")
      + ("; some participants failed, see soak.txt" if failed else ""))
sys.exit(1 if grows or failed or leaked else 0)
PY

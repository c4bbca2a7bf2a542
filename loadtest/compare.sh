#!/usr/bin/env bash
# Runs the same lesson against classroom and against Janus 1.1 (VideoRoom), on this machine, in
# one network namespace, and prints them side by side.
#
#   loadtest/compare.sh [--pupils "50 100"] [--duration 20s] [--event-loops "default 2"]
#                       [--join-rate 10] [--max-layer medium] [--out DIR] [--no-build]
#                       [-- EXTRA LOADTEST ARGS]
#
# Everything (the load generator, the spawned classroom, Janus) runs inside the namespace that
# loadtest/janus/run-janus.sh creates: classroom on the namespace's loopback, Janus on its veth
# (Janus gathers no candidates on loopback), so no test packet leaves the machine and both
# servers see the same kernel path (same-host traffic is routed over `lo` either way).
#
# For each pupil count: classroom (spawned with its defaults), then Janus once per
# `event_loops` value ("default" = Janus' default, a thread per handle). JSON results and logs
# go to DIR (default: a fresh /tmp/classroom-compare.XXXX). Needs root.
set -euo pipefail

PUPILS="50 100"
DURATION=20s
LOOPS="default 2"
JOIN_RATE=10
MAX_LAYER=medium
OUT=
BUILD=1
EXTRA=()
while [ $# -gt 0 ]; do
	case "$1" in
	--pupils) PUPILS=$2; shift 2 ;;
	--duration) DURATION=$2; shift 2 ;;
	--event-loops) LOOPS=$2; shift 2 ;;
	--join-rate) JOIN_RATE=$2; shift 2 ;;
	--max-layer) MAX_LAYER=$2; shift 2 ;;
	--out) OUT=$2; shift 2 ;;
	--no-build) BUILD=0; shift ;;
	--) shift; EXTRA=("$@"); break ;;
	-h|--help) sed -n '2,17p' "$0"; exit 0 ;;
	*) echo "compare.sh: unknown argument $1" >&2; exit 2 ;;
	esac
done

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
target_dir=${CARGO_TARGET_DIR:-$root/target}
LOADTEST=$target_dir/release/loadtest
CLASSROOM=$target_dir/release/classroom
if [ "$BUILD" = 1 ]; then
	(cd "$root" && cargo build --release -p loadtest --bin loadtest && cargo build --release --bin classroom)
fi
for b in "$LOADTEST" "$CLASSROOM"; do
	[ -x "$b" ] || { echo "compare.sh: $b missing (build it, or set CARGO_TARGET_DIR)" >&2; exit 2; }
done
[ -n "$OUT" ] || OUT=$(mktemp -d /tmp/classroom-compare.XXXXXX)
mkdir -p "$OUT"

# The namespace and its veth; prints JANUS_NETNS and JANUS_IP.
eval "$("$here/janus/run-janus.sh" --netns-only)"
NS=$JANUS_NETNS
NS_IP=$JANUS_IP
in_ns() { ip netns exec "$NS" "$@"; }

JANUS_PID=
cleanup() {
	if [ -n "$JANUS_PID" ]; then
		kill "$JANUS_PID" 2>/dev/null || true
		wait "$JANUS_PID" 2>/dev/null || true
	fi
}
trap cleanup EXIT

common=(--duration "$DURATION" --join-rate "$JOIN_RATE" --max-layer "$MAX_LAYER" --quiet)

run_loadtest() { # name pupils args...
	local name=$1 n=$2
	shift 2
	local args=(--pupils "$n" "${common[@]}")
	echo "== $name, $n pupils" >&2
	# Exit status 1 (some pupil failed) still yields a report worth printing.
	in_ns "$LOADTEST" "${args[@]}" "$@" "${EXTRA[@]}" --json "$OUT/$name-$n.json" \
		>"$OUT/$name-$n.txt" 2>"$OUT/$name-$n.err" || {
		rc=$?
		if [ "$rc" -ge 2 ]; then
			echo "   failed to run (exit $rc), see $OUT/$name-$n.err" >&2
			tail -n 5 "$OUT/$name-$n.err" >&2
		else
			echo "   some participants failed (exit $rc)" >&2
		fi
	}
}

for n in $PUPILS; do
	run_loadtest classroom "$n" --spawn-server "$CLASSROOM"
	for loops in $LOOPS; do
		line=$("$here/janus/run-janus.sh" --netns "$NS" --event-loops "$loops" \
			--log "$OUT/janus-el$loops-$n.log")
		eval "$line"
		run_loadtest "janus-el$loops" "$n" --target janus --janus-url "$JANUS_URL" \
			--janus-pid "$JANUS_PID" --bind-ip "$NS_IP" --room "compare-$n-$loops"
		kill "$JANUS_PID" 2>/dev/null || true
		wait "$JANUS_PID" 2>/dev/null || true
		JANUS_PID=
		sleep 1
	done
done
names=(classroom)
for loops in $LOOPS; do names+=("janus-el$loops"); done

/usr/bin/python3 - "$OUT" "$PUPILS" "${names[@]}" <<'EOF'
import json, os, sys

out, pupils, names = sys.argv[1], sys.argv[2].split(), sys.argv[3:]

def load(name, n):
    path = os.path.join(out, f"{name}-{n}.json")
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None

def fmt(v, digits=1):
    return "-" if v is None else f"{v:.{digits}f}"

def rows(s):
    srv = s["server"]
    us_rx = srv.get("us_per_rx_packet")
    us_fwd = s.get("server_us_per_forwarded_packet")
    samples = [x["server_rss_mb"] for x in s.get("samples", []) if x.get("server_rss_mb")]
    peak = srv.get("rss_peak_mb")
    base = samples[0] if samples else None
    per_sub = None
    if peak is not None and base is not None and s["pupils_joined"]:
        per_sub = (peak - base) * 1024 / s["pupils_joined"]
    jr, jv = s["join_reply_ms"], s["join_first_video_ms"]
    vl, al = s["video_latency"], s["audio_latency"]
    return [
        ("pupils with video / audio", f'{s["pupils_with_video"]}/{s["pupils_with_audio"]} of {s["pupils_planned"]}'),
        ("failed participants", str(s["failed_participants"])),
        ("steady rx by pupils (pkt/s)", fmt(s["rx_pps_steady"], 0)),
        ("server cores (steady)", fmt(srv.get("cores_steady"), 2)),
        ("server CPU µs / pkt rx by pupils", fmt(us_rx, 1)),
        ("server CPU µs / pkt fwd (own count)", fmt(us_fwd, 1)),
        ("pkts per server CPU-second (rx)", fmt(1e6 / us_rx, 0) if us_rx else "-"),
        ("server RSS peak (MiB)", fmt(peak, 1)),
        ("RSS per subscriber (KiB)", fmt(per_sub, 0)),
        ("join → joined p50/p95 (ms)", f'{fmt(jr["p50"], 0)} / {fmt(jr["p95"], 0)}'),
        ("join → video p50/p95 (ms)", f'{fmt(jv["p50"], 0)} / {fmt(jv["p95"], 0)}'),
        ("loss video / audio (%)", f'{fmt(s["video_loss_pct"], 3)} / {fmt(s["audio_loss_pct"], 3)}'),
        ("latency video p50/p99 (ms)", f'{fmt(vl["p50_ms"], 2)} / {fmt(vl["p99_ms"], 2)}'),
        ("latency audio p50/p99 (ms)", f'{fmt(al["p50_ms"], 2)} / {fmt(al["p99_ms"], 2)}'),
        ("video layers q/h/f (% pkts)", " / ".join(fmt(x, 1) for x in s["layer_packets_pct"])),
        ("teacher keyframe requests", str(s["teacher_keyframe_requests"])),
        ("generator cores (steady)", fmt(s["generator"].get("cores_steady"), 2)),
    ]

for n in pupils:
    results = [(name, load(name, n)) for name in names]
    print(f"\n{n} pupils (results in {out})")
    width = 38
    cols = [name for name, _ in results]
    print(f'{"":{width}}' + "".join(f"{c:>20}" for c in cols))
    table = [rows(s) if s else None for _, s in results]
    labels = next((r for r in table if r), None)
    if labels is None:
        print("  no results")
        continue
    for i, (label, _) in enumerate(labels):
        line = f"{label:{width}}"
        for r in table:
            line += f'{(r[i][1] if r else "no result"):>20}'
        print(line)
print("\nµs / pkt rx: server CPU in the steady window / RTP packets all pupils received in it (the"
      "\nsame yardstick for both; Janus has no forwarded counter). RSS per subscriber: (peak − first"
      "\nsample, teacher already publishing) / pupils joined.")
EOF

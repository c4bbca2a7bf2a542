#!/usr/bin/env bash
# Browser test of issue 13's "no click to get back in": reconnect.mjs with a teacher page and a
# pupil page whose network the test breaks — the pupil's link dropped for 5 s and for 40 s (past
# the signaling's idle limit, after the pupil's short join token has expired), the pupil's address
# moved, the server SIGKILLed and started again on the same data directory. Every time the pages
# must come back by themselves.
#
# Own namespaces and subnets (10.225.0.0/24), own server instance, so it runs beside run.sh's
# scenarios. The server and the teacher's Chromium are in namespace "srv"; the pupil's Chromium
# is in namespace "pupil", joined to it by a veth pair: its link is what the test takes away.
# reconnect.mjs starts, kills and restarts the server itself (it runs in "srv").
#
# Environment:
#   CLASSROOM_BIN  server binary (default: build target/release/classroom)
#   E2E_TIMEOUT    seconds for the scenario (default 240)
#   ARTIFACT_DIR   where to keep server logs and failure screenshots
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
limit=${E2E_TIMEOUT:-240}

srv_ns=clsrs$$
pupil_ns=clsrp$$
addr=10.225.0.1
pupil_addr=10.225.0.2
moved_addr=10.225.0.3
http_port=8080
media_port=50000
base_url=http://$addr:$http_port
work=$(mktemp -d /tmp/classroom-reconnect.XXXXXX)
test_pid=

log() { echo "reconnect: $*"; }
. "$here/common.sh"

cleanup() {
  local status=$?
  trap - EXIT
  if [ -n "$test_pid" ]; then
    kill -TERM "$test_pid" 2>/dev/null || true
    wait "$test_pid" 2>/dev/null || true
  fi
  local pid n
  for n in "$srv_ns" "$pupil_ns"; do
    for pid in $(ip netns pids "$n" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null || true; done
    ip netns del "$n" 2>/dev/null || true
  done
  if [ "$status" -ne 0 ]; then
    for f in "$work"/server-*.log; do
      [ -f "$f" ] || continue
      echo "---- last 150 lines of $f ----"
      tail -n 150 "$f"
    done
  fi
  if [ -n "${ARTIFACT_DIR:-}" ]; then
    mkdir -p "$ARTIFACT_DIR" && cp "$work"/server-*.log "$ARTIFACT_DIR/" 2>/dev/null || true
  fi
  rm -rf "$work"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if [ "$(id -u)" -ne 0 ]; then
  log "must run as root (it creates network namespaces)"
  exit 2
fi
for tool in ip nft node timeout /usr/bin/chromium; do
  command -v "$tool" >/dev/null || { log "missing $tool"; exit 2; }
done
if [ ! -d "$here/node_modules/playwright-core" ]; then
  (cd "$here" && npm ci --no-audit --no-fund)
fi
server_binary

ip netns add "$srv_ns"
ip netns add "$pupil_ns"
quiet_ipv6 "$srv_ns"
quiet_ipv6 "$pupil_ns"
ip netns exec "$srv_ns" ip link set lo up
ip netns exec "$pupil_ns" ip link set lo up
ip netns exec "$srv_ns" ip link add vrs0 type veth peer name vrs1 netns "$pupil_ns"
ip netns exec "$srv_ns" ip addr add "$addr/24" dev vrs0
ip netns exec "$srv_ns" ip link set vrs0 up
# Chromium picks its host candidate by routing towards the internet: this makes it 10.225.0.1.
ip netns exec "$srv_ns" ip route add default dev vrs0 src "$addr"
# The address move adds the new address before removing the old one; without promotion,
# removing the subnet's first address would take the second with it.
ip netns exec "$pupil_ns" sysctl -qw net.ipv4.conf.all.promote_secondaries=1
ip netns exec "$pupil_ns" sysctl -qw net.ipv4.conf.default.promote_secondaries=1
ip netns exec "$pupil_ns" ip addr add "$pupil_addr/24" dev vrs1
ip netns exec "$pupil_ns" ip link set vrs1 up
ip netns exec "$pupil_ns" ip route add default via "$addr" dev vrs1 src "$pupil_addr"
printf '#!/bin/sh\nexec ip netns exec %s /usr/bin/chromium "$@"\n' "$pupil_ns" >"$work/chromium-pupil"
chmod +x "$work/chromium-pupil"

CLASSROOM_TOKEN_SECRET=$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')
export CLASSROOM_TOKEN_SECRET
room=reconnect-$$
invite() { "$bin" invite --room "$room" --base-url "$base_url" "$@"; }
teacher_url=$(invite --name "Tanaka Sensei" --role teacher --identity t-rc --ttl 1h)
# A short join token: it has expired long before the 40 s outage (the resume credential is what
# brings the pupil back, not the link).
pupil_url=$(invite --name "Sato Hana" --role student --identity s-rc --ttl 20s)

mkdir -p "$work/tmp" "$work/data"
log "scenario reconnect (server at $base_url, pupil in $pupil_ns)"
ip netns exec "$srv_ns" timeout --kill-after=10 "$limit" env \
  TMPDIR="$work/tmp" \
  BASE_URL="$base_url" \
  CLASSROOM_BIN="$bin" \
  SERVER_ARGS="serve --http $addr:$http_port --media-bind $addr:$media_port --announce $addr --data-dir $work/data" \
  SERVER_LOG_DIR="$work" \
  TEACHER_URL="$teacher_url" \
  PUPIL_URL="$pupil_url" \
  PUPIL_IDENTITY=s-rc \
  PUPIL_NS="$pupil_ns" \
  PUPIL_DEV=vrs1 \
  PUPIL_ADDR="$pupil_addr" \
  MOVED_ADDR="$moved_addr" \
  GATEWAY="$addr" \
  PUPIL_CHROMIUM="$work/chromium-pupil" \
  node "$here/reconnect.mjs" &
test_pid=$!
status=0
wait "$test_pid" || status=$?
test_pid=
if grep -q 'panicked' "$work"/server-*.log 2>/dev/null; then
  log "a server log shows a panic"
  status=1
fi
exit "$status"

#!/usr/bin/env bash
# Browser test of a lesson link between two schools' servers (issue 15, docs/PARTNER.md), run by
# link.mjs: two classroom servers, each with its own SQLite database and roster, in two network
# namespaces joined through a third that shapes the path like an international one.
#
#   cllh$$  the host school: its server at 10.230.0.2 and a Chromium (teacher, two pupils)
#   cllp$$  the partner school: its server at 10.231.0.2 and a Chromium (teacher, two pupils)
#   cllg$$  the path between them, 10.230.0.1 and 10.231.0.1: everything it forwards goes through
#           delayline.py (a TUN device, written here because the kernel has no netem: 75 ms each
#           way, so 150 ms round trip, 1 % loss each way, in order), and out through veths limited
#           to 20 Mbit/s with tc tbf. link.mjs runs here (it reaches both servers directly) and
#           cuts the path for 5 s with an nftables forward chain in this namespace.
#
# The link is set up as the schools would: administrators sign in with one-time links
# (`classroom signin-link`), create today's lessons, mark the pupils online, the host invites and
# the partner accepts with the code over the API (docs/API.md "Lesson links"); the partner's
# server then dials the host by itself. Teachers and pupils join with `classroom invite` links.
#
# Environment:
#   CLASSROOM_BIN  server binary (default: build target/release/classroom)
#   E2E_TIMEOUT    seconds for the scenario (default 300)
#   ARTIFACT_DIR   where to keep both server logs, the delay line's counts and failure screenshots
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
limit=${E2E_TIMEOUT:-300}

host_ns=cllh$$
partner_ns=cllp$$
path_ns=cllg$$
host_addr=10.230.0.2
host_gw=10.230.0.1
partner_addr=10.231.0.2
partner_gw=10.231.0.1
http_port=8080
media_port=50000
host_url=http://$host_addr:$http_port
partner_url=http://$partner_addr:$http_port
# The path: one way delay and loss in delayline.py, rate on each veth out of the path namespace.
one_way_ms=75
loss_pct=1
rate=20mbit
# As run.sh: each subscriber's estimate and chosen layer every 500 ms, so that a picture that
# stops can be told apart as the server's choice or the network's doing.
server_log_filter=info,classroom_sfu::shard::allocation=trace
work=$(mktemp -d /tmp/classroom-link.XXXXXX)
host_pid=
partner_pid=
line_pid=
test_pid=

log() { echo "link: $*"; }
. "$here/common.sh"

cleanup() {
  local status=$?
  trap - EXIT
  if [ -n "$test_pid" ]; then
    kill -TERM "$test_pid" 2>/dev/null || true
    wait "$test_pid" 2>/dev/null || true
  fi
  if [ -n "${ARTIFACT_DIR:-}" ]; then
    # Each server's counters as the lesson left them (send errors, drops, estimates).
    local side ns
    for side in host partner; do
      ns=${side}_ns
      ip netns exec "${!ns}" python3 -c 'import urllib.request,sys; sys.stdout.write(urllib.request.urlopen("http://127.0.0.1:9464/metrics", timeout=2).read().decode())' \
        >"$work/$side-metrics.txt" 2>/dev/null || true
    done
  fi
  stop_pid "$host_pid"
  stop_pid "$partner_pid"
  stop_pid "$line_pid"
  local pid n
  for n in "$host_ns" "$partner_ns" "$path_ns"; do
    for pid in $(ip netns pids "$n" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null || true; done
    ip netns del "$n" 2>/dev/null || true
  done
  if [ "$status" -ne 0 ]; then
    for f in host.log partner.log delayline.log; do
      [ -f "$work/$f" ] || continue
      echo "---- last 200 lines of $f ----"
      tail -n 200 "$work/$f"
    done
  fi
  if [ -n "${ARTIFACT_DIR:-}" ]; then
    mkdir -p "$ARTIFACT_DIR"
    for f in host.log partner.log delayline.log host-metrics.txt partner-metrics.txt; do
      [ -f "$work/$f" ] && cp "$work/$f" "$ARTIFACT_DIR/link-$f"
    done
  fi
  rm -rf "$work"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---- prerequisites ----
if [ "$(id -u)" -ne 0 ]; then
  log "must run as root (it creates network namespaces)"
  exit 2
fi
for tool in ip tc nft node python3 timeout /usr/bin/chromium; do
  command -v "$tool" >/dev/null || { log "missing $tool (scripts/test installs what is needed)"; exit 2; }
done
[ -c /dev/net/tun ] || { log "missing /dev/net/tun (the delay line is a TUN device)"; exit 2; }
if [ ! -d "$here/node_modules/playwright-core" ]; then
  (cd "$here" && npm ci --no-audit --no-fund)
fi
server_binary

# ---- namespaces: host -- path -- partner ----
for n in "$host_ns" "$partner_ns" "$path_ns"; do
  ip netns add "$n"
  quiet_ipv6 "$n"
  ip netns exec "$n" ip link set lo up
done
pathrun() { ip netns exec "$path_ns" "$@"; }
# A school's namespace behind a veth to the path: $1 namespace, $2 link name, $3 gateway, $4 address.
school_ns() {
  pathrun ip link add "${2}0" type veth peer name "${2}1" netns "$1"
  pathrun ip addr add "$3/24" dev "${2}0"
  pathrun ip link set "${2}0" up
  ip netns exec "$1" ip addr add "$4/24" dev "${2}1"
  ip netns exec "$1" ip link set "${2}1" up
  # Also Chromium's host candidate and the server's way out: both go through the path.
  ip netns exec "$1" ip route add default via "$3" dev "${2}1" src "$4"
  printf '#!/bin/sh\nexec ip netns exec %s /usr/bin/chromium "$@"\n' "$1" >"$work/chromium-$1"
  chmod +x "$work/chromium-$1"
}
school_ns "$host_ns" lh "$host_gw" "$host_addr"
school_ns "$partner_ns" lp "$partner_gw" "$partner_addr"
# What the path forwards goes into the delay line (policy routing by incoming veth) and, written
# back by it, leaves by the main table's connected routes. Packets to the path's own addresses
# are delivered locally first (the `local` table comes before every rule). The written-back
# packets arrive on dl0 from addresses routed elsewhere: reverse path filtering must be off.
pathrun sysctl -qw net.ipv4.ip_forward=1
pathrun ip tuntap add dev dl0 mode tun
pathrun ip link set dl0 up
for conf in all default dl0 lh0 lp0; do pathrun sysctl -qw "net.ipv4.conf.$conf.rp_filter=0"; done
pathrun ip route add default dev dl0 table 230
pathrun ip rule add iif lh0 lookup 230
pathrun ip rule add iif lp0 lookup 230
for dev in lh0 lp0; do pathrun tc qdisc add dev "$dev" root tbf rate "$rate" burst 32kb latency 100ms; done
# Not through pathrun: a function in the background would be a subshell, and $! not the line.
ip netns exec "$path_ns" python3 "$here/delayline.py" dl0 "$one_way_ms" "$loss_pct" >"$work/delayline.log" 2>&1 &
line_pid=$!

# ---- two schools: each its own roster, database, secret and configuration ----
# The sample roster plus an administrator (as run.sh does); the partner's school gets another name.
school() {
  local dir=$work/$1 name=$2
  mkdir -p "$dir/data"
  cp -r "$root/domain/tests/fixtures/oneroster-sample" "$dir/roster"
  grep '^t-002,' "$dir/roster/users.csv" | sed -e 's/^t-002,/a-001,/' -e 's/t\.sato@/principal@/g' \
    -e 's/健一,佐藤/一郎,田中/' -e 's/けんいち,さとう/いちろう,たなか/' >>"$dir/roster/users.csv"
  printf 'role-a-001,,,a-001,primary,administrator,,,org-es-mizuho,\r\n' >>"$dir/roster/roles.csv"
  sed -i "s/高岡市立瑞穂小学校/$name/" "$dir/roster/orgs.csv"
  "$bin" roster import "$dir/roster" --data-dir "$dir/data" >/dev/null
}
school host 高岡市立瑞穂小学校
school partner 富山市立北小学校
# The host is reached over plain http on a private subnet: allow_http is for tests only.
for side in host partner; do
  url=${side}_url
  cat >"$work/$side/classroom.toml" <<TOML
[links]
public_url = "${!url}"
allow_http = true
TOML
done
host_secret=$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')
partner_secret=$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')
host_room=link-host-$$
partner_room=link-partner-$$
# $1 side, then `classroom invite` arguments.
invite() {
  local side=$1 secret url room base
  shift
  secret=${side}_secret room=${side}_room base=${side}_url
  url=$(CLASSROOM_TOKEN_SECRET=${!secret} "$bin" invite --room "${!room}" --base-url "${!base}" --ttl 1h "$@")
  case "$url" in
    "${!base}"/*) printf '%s' "$url" ;;
    *) log "classroom invite $* printed '$url'"; return 1 ;;
  esac
}
signin_link() {
  local base=${1}_url
  "$bin" signin-link --person a-001 --ttl 30m --base-url "${!base}" --data-dir "$work/$1/data"
}

start_server() {
  local side=$1 ns=$2 addr=$3 secret=${1}_secret base=${1}_url
  log "starting the $side server in $ns at ${!base}"
  ip netns exec "$ns" env RUST_LOG="${RUST_LOG:-$server_log_filter}" CLASSROOM_TOKEN_SECRET="${!secret}" "$bin" serve \
    --config "$work/$side/classroom.toml" \
    --http "$addr:$http_port" \
    --public-url "${!base}" \
    --media-bind "$addr:$media_port" \
    --announce "$addr" \
    --data-dir "$work/$side/data" \
    >"$work/$side.log" 2>&1 &
}
start_server host "$host_ns" "$host_addr"
host_pid=$!
start_server partner "$partner_ns" "$partner_addr"
partner_pid=$!

mkdir -p "$work/tmp"
log "scenario link (path: $((2 * one_way_ms)) ms round trip, $loss_pct % loss each way, $rate)"
# Directly, not through pathrun, so that $! is the test itself (as for the delay line).
ip netns exec "$path_ns" timeout --kill-after=10 "$limit" env \
  TMPDIR="$work/tmp" \
  HOST_URL="$host_url" \
  PARTNER_URL="$partner_url" \
  HOST_ADMIN_LINK="$(signin_link host)" \
  PARTNER_ADMIN_LINK="$(signin_link partner)" \
  HOST_ROOM="$host_room" \
  PARTNER_ROOM="$partner_room" \
  HOST_TEACHER_URL="$(invite host --name "山田 花子" --role teacher --identity t-001)" \
  HOST_PUPIL1_URL="$(invite host --name "佐藤 はな" --role student --identity s-001)" \
  HOST_PUPIL2_URL="$(invite host --name "鈴木 けんた" --role student --identity s-002)" \
  PARTNER_TEACHER_URL="$(invite partner --name "高橋 先生" --role teacher --identity t-001)" \
  PARTNER_PUPIL1_URL="$(invite partner --name "伊藤 ゆい" --role student --identity s-001)" \
  PARTNER_PUPIL2_URL="$(invite partner --name "渡辺 そら" --role student --identity s-002)" \
  HOST_CHROMIUM="$work/chromium-$host_ns" \
  PARTNER_CHROMIUM="$work/chromium-$partner_ns" \
  PATH_DESCRIPTION="$((2 * one_way_ms)) ms round trip, $loss_pct % loss each way, $rate" \
  node "$here/link.mjs" &
test_pid=$!
status=0
wait "$test_pid" || status=$?
test_pid=
[ "$status" -ne 124 ] && [ "$status" -ne 137 ] || log "scenario link did not finish within $limit s"
for side in host partner; do
  pid=${side}_pid
  if ! kill -0 "${!pid}" 2>/dev/null; then
    log "the $side server exited during the test"
    status=1
  fi
  if grep -q 'panicked' "$work/$side.log"; then
    log "the $side server log shows a panic"
    grep -m5 -A3 'panicked' "$work/$side.log"
    status=1
  fi
done
stop_pid "$line_pid"
line_pid=
log "delay line: $(tail -n 1 "$work/delayline.log")"
exit "$status"

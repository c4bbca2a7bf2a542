#!/usr/bin/env bash
# Browser end-to-end tests: starts a real classroom server and headless Chromium, then runs
#   e2e.mjs     a lesson's audio and video flow between the pages (teacher, pupils, screen share)
#   portal.mjs  the signed-in pages: a guardian's one-tap mode change, the teacher's lobby, a pupil
#               admitted from it (school prepared with `classroom roster import` / `signin-link`),
#               and a partner lecturer invited from the lobby whose camera that pupil decodes
#   shaped.mjs  a pupil on a shaped "home" link gets a smaller simulcast layer than an unshaped
#               pupil, and both keep decoding
#   bursty.mjs  (scenario "bursty") the same on a line that lets a 16 kB burst through at full
#               speed: from its first frame the pupil never gets a layer above h, and decodes at
#               least 5 frames in every second (issue 17)
#   moderation.mjs  the teacher runs the lesson, pages in Japanese: a raised hand reaches the
#               teacher's queue, a pupil is heard by a classmate only while holding the floor,
#               the teacher's grid highlights the speaker, quick check and chat
#   reconnect   (reconnect.sh + reconnect.mjs, own namespaces and server) pages get back into the
#               lesson by themselves: link down 5 s and 40 s, address change, server SIGKILL
#   transport   transport.sh, its own server and namespaces: ICE-TCP with UDP dropped, TURN over
#               TLS through coturn, a Firefox pupil against the default configuration
#   link        (link.sh + link.mjs, issue 15) two servers, each with its own database and roster,
#               in two namespaces joined through a third whose path delays (userspace, 150 ms
#               round trip), loses 1 % and rate-limits: a lesson link set up through the API, a
#               teacher and two pupils on each side, every pupil decodes both teachers, a partner
#               pupil given the floor by the partner teacher is heard on both sides. With
#               LINK_OUTAGE=1 also the path cut for 5 s: own teachers never stop, the other
#               school's teacher is back within 5 s (not met yet: see link.mjs)
# First, without a browser (plain node --test): next.test.mjs, the sign-in page's check of `?next=`;
# i18n.test.mjs, every locale's keys and placeholders in step and every key the pages use defined.
#
# All run inside a network namespace made for this run. Outside one, Chromium offers the
# machine's outward address as its ICE candidate and the test would depend on that network;
# inside, the only addresses are a veth pair that exists nowhere else, so the test is the same on
# every machine and cannot disturb (or be disturbed by) anything. Needs root for that.
# The shaped pupil's Chromium runs in a second namespace, "home", joined to the first by a veth
# pair whose server-side end is rate-limited with tc tbf and drops packets at random (nftables):
# the kernel here has no netem, and these two shape the same way on every machine.
#
# Environment:
#   CLASSROOM_BIN  server binary to test (default: build target/release/classroom)
#   E2E_TIMEOUT    seconds for each scenario (default 240)
#   ARTIFACT_DIR   where to keep the server log and failure screenshots (default: discarded)
#   SCENARIOS      which scenarios to run (default "e2e portal moderation shaped reconnect transport link"), e.g. to repeat one
#   LESSON_SCREENSHOTS  a directory for moderation.mjs's named screenshots (docs/LESSON.md's:
#                  LESSON_SCREENSHOTS=docs/img SCENARIOS=moderation tests/browser/run.sh)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
limit=${E2E_TIMEOUT:-240}
# "bursty" (issue 17) is not met yet and runs only when asked for: on 300 kbit/s with a 16 kB
# burst and 5 % loss the pupil stays at or below h, but Chromium's estimate falls to 0.1-0.2
# Mbit/s and the video pauses for seconds (measured 2026-12-07, docs/ADAPTATION.md).
#   SCENARIOS=bursty tests/browser/run.sh
wanted=" ${SCENARIOS:-e2e portal moderation shaped reconnect transport link} "
want() { [[ $wanted == *" $1 "* ]]; }

ns=clsbr$$
home_ns=clshm$$
addr=10.213.0.1
peer_addr=10.213.0.2
home_gw=10.214.0.1
home_addr=10.214.0.2
# The bursty pupil's home (bursty.mjs): a third namespace, its own veth and subnet.
bursty_ns=clsbh$$
bursty_gw=10.216.0.1
bursty_addr=10.216.0.2
# A weak home downlink: the "congested" profile of ../shared/data/home-links.csv (several
# siblings on one weak connection: 0.6 Mbit/s, 5 % loss), narrowed to 0.3 Mbit/s, the rate at
# which the issue expects the lowest layer. Upper layers are only sent from half their frame rate:
# for shaped.mjs's 960x540 camera the server measures the middle one there at 0.28-0.33 Mbit/s
# and the full one at 1.2-1.8, so beside the audio neither fits 0.3 with the upgrade margin and
# the pupil must get the smallest picture. (An earlier, lighter camera's full layer at half rate
# cost 0.4-0.47 Mbit/s, which a 0.6 Mbit/s link carried now and then, and a 0.45 Mbit/s one too
# while the teacher's Chromium was short of CPU: loss-based estimation holds at 5 % loss.)
# Rate and loss apply to what the server sends the pupil (tc tbf adds up to 300 ms of queue).
home_rate=300kbit
home_loss_pct=5
# The bursty line (issue 17): the same rate and loss, but the bucket holds 16 kB, as many home
# routers, mobile plans throttled after their cap and ISP policers let through at full speed.
bursty_burst=16kb
# Each subscriber's estimate, loss and chosen layer every 500 ms (the allocator's trace): when a
# pupil's picture stops in CI, the log's tail shows whether the server or the network stopped it.
server_log_filter=info,classroom_sfu::shard::allocation=trace
http_port=8080
media_port=50000
base_url=http://$addr:$http_port
work=$(mktemp -d /tmp/classroom-e2e.XXXXXX)
server_pid=
test_pid=

log() { echo "e2e: $*"; }
. "$here/common.sh"

stop_server() {
  [ -n "$server_pid" ] || return 0
  if kill -0 "$server_pid" 2>/dev/null; then
    kill -TERM "$server_pid" 2>/dev/null || true
    # A graceful shutdown is part of what is tested; a hung one must not hang the run.
    timeout 10 tail --pid="$server_pid" -f /dev/null || kill -KILL "$server_pid" 2>/dev/null || true
  fi
  wait "$server_pid" 2>/dev/null || true
  server_pid=
}

cleanup() {
  local status=$?
  trap - EXIT
  if [ -n "$test_pid" ]; then
    kill -TERM "$test_pid" 2>/dev/null || true # `timeout` passes it on to node
    wait "$test_pid" 2>/dev/null || true
  fi
  stop_server
  # Whatever still runs in the namespace was started by this run (e.g. a Chromium left behind
  # by a killed test); the namespace is ours alone, so these are our processes.
  local pid n
  for n in "$ns" "$home_ns" "$bursty_ns"; do
    for pid in $(ip netns pids "$n" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null || true; done
    ip netns del "$n" 2>/dev/null || true
  done
  if [ "$status" -ne 0 ] && [ -f "$work/server.log" ]; then
    echo "---- last 300 lines of the server log ($work/server.log) ----"
    tail -n 300 "$work/server.log"
    echo "---- end of server log ----"
  fi
  if [ -n "${ARTIFACT_DIR:-}" ] && [ -f "$work/server.log" ]; then
    mkdir -p "$ARTIFACT_DIR" && cp "$work/server.log" "$ARTIFACT_DIR/"
  fi
  rm -rf "$work"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---- page scripts' unit tests: plain Node, no browser, no namespace ----
command -v node >/dev/null || { log "missing node (scripts/test installs what is needed)"; exit 2; }
log "page script unit tests (node --test)"
(cd "$here" && timeout 60 node --test next.test.mjs i18n.test.mjs)

# ---- prerequisites ----
if [ "$(id -u)" -ne 0 ]; then
  log "must run as root (it creates a network namespace)"
  exit 2
fi
for tool in ip tc nft node timeout /usr/bin/chromium; do
  command -v "$tool" >/dev/null || { log "missing $tool (scripts/test installs what is needed)"; exit 2; }
done
if [ ! -d "$here/node_modules/playwright-core" ]; then
  log "installing playwright-core (npm ci)"
  (cd "$here" && npm ci --no-audit --no-fund)
fi

server_binary

# ---- network namespace: two ends of a veth pair, both inside it ----
# IPv6 off in every namespace of the run (common.sh says why).
ip netns add "$ns"
quiet_ipv6 "$ns"
nsrun() { ip netns exec "$ns" "$@"; }
nsrun ip link set lo up
nsrun ip link add veth0 type veth peer name veth1
nsrun ip addr add "$addr/24" dev veth0
nsrun ip addr add "$peer_addr/24" dev veth1
nsrun ip link set veth0 up
nsrun ip link set veth1 up
# Chromium picks its "default" local address by routing towards the internet; this route makes
# that 10.213.0.1. Nothing answers beyond it, so no packet leaves the namespace.
nsrun ip route add default dev veth0 src "$addr"

# ---- the shaped pupil's home: another namespace behind a rate-limited, lossy veth ----
ip netns add "$home_ns"
quiet_ipv6 "$home_ns"
homerun() { ip netns exec "$home_ns" "$@"; }
homerun ip link set lo up
nsrun ip link add vhome0 type veth peer name vhome1 netns "$home_ns"
nsrun ip addr add "$home_gw/24" dev vhome0
nsrun ip link set vhome0 up
homerun ip addr add "$home_addr/24" dev vhome1
homerun ip link set vhome1 up
# Also makes 10.214.0.2 Chromium's host candidate (it routes towards the internet to pick one).
homerun ip route add default via "$home_gw" dev vhome1 src "$home_addr"
# Downlink shaping: a token bucket at the rate, with a queue of at most 300 ms at that rate, as a
# loaded home router would hold. The bucket holds two full packets, as a slow line passes no
# burst faster than its rate: with 16 kB, str0m's probe clusters (a few packets in 15 ms) crossed
# at the veth's speed and measured 0.8-1.4 Mbit/s on this 0.3 Mbit/s link.
nsrun tc qdisc add dev vhome0 root tbf rate "$home_rate" burst 3000 latency 300ms
nsrun nft -f - <<NFT
table inet homelink {
  chain out {
    type filter hook postrouting priority 0; policy accept;
    oifname "vhome0" numgen random mod 100 < $home_loss_pct drop
  }
}
NFT
printf '#!/bin/sh\nexec ip netns exec %s /usr/bin/chromium "$@"\n' "$home_ns" >"$work/chromium-home"
chmod +x "$work/chromium-home"

# ---- the bursty pupil's home: like the one above, but its token bucket holds 16 kB ----
if want bursty; then
  ip netns add "$bursty_ns"
  quiet_ipv6 "$bursty_ns"
  burstyrun() { ip netns exec "$bursty_ns" "$@"; }
  burstyrun ip link set lo up
  nsrun ip link add vburst0 type veth peer name vburst1 netns "$bursty_ns"
  nsrun ip addr add "$bursty_gw/24" dev vburst0
  nsrun ip link set vburst0 up
  burstyrun ip addr add "$bursty_addr/24" dev vburst1
  burstyrun ip link set vburst1 up
  burstyrun ip route add default via "$bursty_gw" dev vburst1 src "$bursty_addr"
  nsrun tc qdisc add dev vburst0 root tbf rate "$home_rate" burst "$bursty_burst" latency 300ms
  nsrun nft -f - <<NFT
table inet burstylink {
  chain out {
    type filter hook postrouting priority 0; policy accept;
    oifname "vburst0" numgen random mod 100 < $home_loss_pct drop
  }
}
NFT
  printf '#!/bin/sh\nexec ip netns exec %s /usr/bin/chromium "$@"\n' "$bursty_ns" >"$work/chromium-bursty"
  chmod +x "$work/chromium-bursty"
fi

# ---- server ----
CLASSROOM_TOKEN_SECRET=$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')
export CLASSROOM_TOKEN_SECRET
room=e2e-$$
invite() {
  local url
  url=$("$bin" invite --room "$room" --base-url "$base_url" "$@")
  case "$url" in
    "$base_url"/*) printf '%s' "$url" ;;
    *) log "classroom invite $* printed '$url', not a link under $base_url"; return 1 ;;
  esac
}
teacher_url=$(invite --name "Tanaka Sensei" --role teacher --identity t-e2e --ttl 1h)
student_url=$(invite --name "Sato Hana" --role student --identity s-e2e-1 --ttl 1h)
observer_url=$(invite --name "Ito (observer)" --role observer --identity o-e2e-1 --ttl 1h)
# The adaptation lesson is a room of its own, so the two scenarios cannot disturb each other.
room=shaped-$$
shaped_teacher_url=$(invite --name "Kobayashi Sensei" --role teacher --identity t-shaped --ttl 1h)
near_url=$(invite --name "Mori Yui" --role student --identity s-near --ttl 1h)
home_url=$(invite --name "Abe Ren" --role student --identity s-home --ttl 1h)
# The bursty line's lesson: a room of its own as well.
room=bursty-$$
bursty_teacher_url=$(invite --name "Kato Sensei" --role teacher --identity t-bursty --ttl 1h)
bursty_near_url=$(invite --name "Ono Mio" --role student --identity s-bnear --ttl 1h)
bursty_home_url=$(invite --name "Ueda Sora" --role student --identity s-bhome --ttl 1h)
# The moderation lesson: a room of its own too (its floor and hands must not meet the others').
room=mod-$$
mod_teacher_url=$(invite --name "田中 先生" --role teacher --identity t-mod --ttl 1h)
mod_speaker_url=$(invite --name "佐藤 はな" --role student --identity s-mod-1 --ttl 1h)
mod_classmate_url=$(invite --name "鈴木 けんた" --role student --identity s-mod-2 --ttl 1h)
# Relative to where run.sh was started, as a user would expect; node runs elsewhere.
if [ -n "${LESSON_SCREENSHOTS:-}" ]; then
  LESSON_SCREENSHOTS=$(realpath -m "$LESSON_SCREENSHOTS")
  export LESSON_SCREENSHOTS
fi

# The signed-in pages' school (portal.mjs): the sample OneRoster roster plus an administrator
# (the sample has none), imported the way a school does it, and one-time sign-in links.
roster=$work/roster
cp -r "$root/domain/tests/fixtures/oneroster-sample" "$roster"
grep '^t-002,' "$roster/users.csv" | sed -e 's/^t-002,/a-001,/' -e 's/t\.sato@/principal@/g' \
  -e 's/健一,佐藤/一郎,田中/' -e 's/けんいち,さとう/いちろう,たなか/' >>"$roster/users.csv"
printf 'role-a-001,,,a-001,primary,administrator,,,org-es-mizuho,\r\n' >>"$roster/roles.csv"
"$bin" roster import "$roster" --data-dir "$work/data" >/dev/null
signin_link() { "$bin" signin-link --person "$1" --ttl 30m --base-url "$base_url" --data-dir "$work/data"; }
admin_link=$(signin_link a-001)
guardian_link=$(signin_link g-001)
teacher_link=$(signin_link t-001)
pupil_link=$(signin_link s-003)

log "starting the server in namespace $ns at $base_url"
mkdir -p "$work/data"
# Started with `ip netns exec` directly (not through a function) so that $! is the server itself.
ip netns exec "$ns" env RUST_LOG="${RUST_LOG:-$server_log_filter}" "$bin" serve \
  --http "$addr:$http_port" \
  --media-bind "$addr:$media_port" \
  --announce "$addr" \
  --data-dir "$work/data" \
  >"$work/server.log" 2>&1 &
server_pid=$!

# ---- browser part (each scenario waits for /healthz itself, with a deadline) ----
# In the background plus `wait`: bash runs a signal trap only after a foreground command ends,
# but interrupts `wait` at once, so an interrupted run still cleans up promptly.
mkdir -p "$work/tmp" # Chromium's profile and Playwright's files: removed with $work, even if node is killed
scenario() {
  local name=$1 status=0
  shift
  log "scenario $name"
  ip netns exec "$ns" timeout --kill-after=10 "$limit" env \
    TMPDIR="$work/tmp" \
    BASE_URL="$base_url" \
    "$@" \
    node "$here/$name.mjs" &
  test_pid=$!
  wait "$test_pid" || status=$?
  test_pid=
  if [ "$status" -eq 124 ] || [ "$status" -eq 137 ]; then
    log "scenario $name did not finish within $limit s"
  fi
  return "$status"
}
status=0
! want e2e || scenario e2e \
  TEACHER_URL="$teacher_url" \
  STUDENT_URL="$student_url" \
  STUDENT_IDENTITY=s-e2e-1 \
  OBSERVER_URL="$observer_url" || status=$?
! want portal || scenario portal \
  ADMIN_LINK="$admin_link" \
  GUARDIAN_LINK="$guardian_link" \
  TEACHER_LINK="$teacher_link" \
  PUPIL_LINK="$pupil_link" || status=$?
! want moderation || scenario moderation \
  TEACHER_URL="$mod_teacher_url" \
  SPEAKER_URL="$mod_speaker_url" \
  CLASSMATE_URL="$mod_classmate_url" || status=$?
if [ "$status" -eq 0 ] && want shaped; then
  scenario shaped \
    TEACHER_URL="$shaped_teacher_url" \
    NEAR_URL="$near_url" \
    HOME_URL="$home_url" \
    HOME_CHROMIUM="$work/chromium-home" \
    HOME_LINK="$home_rate, $home_loss_pct % loss" || status=$?
fi
if [ "$status" -eq 0 ] && want bursty; then
  scenario bursty \
    TEACHER_URL="$bursty_teacher_url" \
    NEAR_URL="$bursty_near_url" \
    HOME_URL="$bursty_home_url" \
    HOME_CHROMIUM="$work/chromium-bursty" \
    HOME_LINK="$home_rate, $bursty_burst burst, $home_loss_pct % loss" || status=$?
fi
# Its own namespaces, subnet and server (reconnect.sh): the pupil's link and the server are
# taken away and given back.
! want reconnect || CLASSROOM_BIN="$bin" E2E_TIMEOUT="$limit" "$here/reconnect.sh" || status=$?
! want transport || { log "scenario transport (transport.sh)"; CLASSROOM_BIN="$bin" "$here/transport.sh" || status=$?; }
# Two servers of two schools and the path between them (link.sh): namespaces and subnets of its own.
! want link || { log "scenario link (link.sh)"; CLASSROOM_BIN="$bin" "$here/link.sh" || status=$?; }
if ! kill -0 "$server_pid" 2>/dev/null; then
  log "the server exited during the test"
  status=1
fi
if grep -q 'panicked' "$work/server.log"; then
  log "the server log shows a panic"
  grep -m5 -A3 'panicked' "$work/server.log"
  status=1
fi
exit "$status"

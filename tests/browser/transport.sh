#!/usr/bin/env bash
# Browser tests of how media reaches a pupil whose network is not friendly (issue 13), each
# scenario run by transport.mjs:
#   tcp      a Chromium pupil whose outgoing UDP is all dropped (nftables `meta l4proto udp drop`)
#            decodes the teacher's video and hears the audio over ICE-TCP; the selected candidate
#            pair is TCP (getStats)
#   firefox  a Firefox ESR pupil (puppeteer-core over WebDriver BiDi) receives video and audio from
#            a server started with the default media configuration: no --announce, media bound to
#            every interface, the machine's addresses announced
#   turn     a Chromium pupil that may reach nothing but TCP 443 of a coturn started here (TLS, a
#            certificate of a test CA made now with openssl, the CA trusted in the pupil's NSS
#            database, no --ignore-certificate-errors) and the web port: media flows through the relay,
#            and the pupil's selected local candidate is `relay` with relayProtocol `tls`
#
# Namespaces (own names and subnets, so other runners can run beside this one):
#   clts$$  the server, coturn and the teacher's Chromium: 10.221.0.1 (and 10.221.0.2, the other
#           end of its veth pair, where Chromium routes "outward")
#   cltu$$  the UDP-blocked pupil, 10.222.1.2, behind 10.222.1.1 in clts$$
#   cltr$$  the TURN-only pupil, 10.222.2.2, behind 10.222.2.1 in clts$$
# A pupil namespace reaches the server's addresses through its default route: they are local
# addresses of clts$$, so no forwarding is involved.
#
# Environment: CLASSROOM_BIN (default: build target/release/classroom), E2E_TIMEOUT (seconds per
# scenario, default 240), SCENARIOS (default "tcp firefox turn"), ARTIFACT_DIR.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
limit=${E2E_TIMEOUT:-240}

ns=clts$$
udp_ns=cltu$$
turn_ns=cltr$$
addr=10.221.0.1
peer_addr=10.221.0.2
udp_gw=10.222.1.1
udp_addr=10.222.1.2
turn_gw=10.222.2.1
turn_addr=10.222.2.2
http_port=8080
base_url=http://$addr:$http_port
work=$(mktemp -d /tmp/classroom-transport.XXXXXX)
server_pid=
turn_pid=
test_pid=

log() { echo "transport: $*"; }
. "$here/common.sh"

cleanup() {
  local status=$?
  trap - EXIT
  if [ -n "$test_pid" ]; then
    kill -TERM "$test_pid" 2>/dev/null || true
    wait "$test_pid" 2>/dev/null || true
  fi
  stop_pid "$server_pid"
  stop_pid "$turn_pid"
  local pid n
  for n in "$ns" "$udp_ns" "$turn_ns"; do
    for pid in $(ip netns pids "$n" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null || true; done
    ip netns del "$n" 2>/dev/null || true
  done
  if [ "$status" -ne 0 ]; then
    for f in server.log turn.log; do
      [ -f "$work/$f" ] || continue
      echo "---- last 150 lines of $f ----"
      tail -n 150 "$work/$f"
    done
  fi
  if [ -n "${ARTIFACT_DIR:-}" ]; then
    mkdir -p "$ARTIFACT_DIR"
    cp "$work"/*.log "$ARTIFACT_DIR/" 2>/dev/null || true
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
for tool in ip nft node timeout openssl certutil turnserver /usr/bin/chromium /usr/bin/firefox-esr; do
  command -v "$tool" >/dev/null || { log "missing $tool (scripts/test installs what is needed)"; exit 2; }
done
if [ ! -d "$here/node_modules/playwright-core" ] || [ ! -d "$here/node_modules/puppeteer-core" ]; then
  log "installing the test's npm packages (npm ci)"
  (cd "$here" && npm ci --no-audit --no-fund)
fi
server_binary

# ---- namespaces ----
nsrun() { ip netns exec "$ns" "$@"; }
ip netns add "$ns"
quiet_ipv6 "$ns"
nsrun ip link set lo up
nsrun ip link add tv0 type veth peer name tv1
nsrun ip addr add "$addr/24" dev tv0
nsrun ip addr add "$peer_addr/24" dev tv1
nsrun ip link set tv0 up
nsrun ip link set tv1 up
nsrun ip route add default dev tv0 src "$addr"

# A pupil's namespace behind a veth pair: $1 namespace, $2 link name, $3 gateway, $4 address.
pupil_ns() {
  ip netns add "$1"
  quiet_ipv6 "$1"
  ip netns exec "$1" ip link set lo up
  nsrun ip link add "${2}0" type veth peer name "${2}1" netns "$1"
  nsrun ip addr add "$3/24" dev "${2}0"
  nsrun ip link set "${2}0" up
  ip netns exec "$1" ip addr add "$4/24" dev "${2}1"
  ip netns exec "$1" ip link set "${2}1" up
  ip netns exec "$1" ip route add default via "$3" dev "${2}1" src "$4"
  printf '#!/bin/sh\nexec ip netns exec %s /usr/bin/chromium "$@"\n' "$1" >"$work/chromium-$1"
  chmod +x "$work/chromium-$1"
}
pupil_ns "$udp_ns" tu "$udp_gw" "$udp_addr"
pupil_ns "$turn_ns" tr "$turn_gw" "$turn_addr"
# Nothing by UDP at all; and not the TURN port either, so that TCP can only mean ICE-TCP.
ip netns exec "$udp_ns" nft -f - <<NFT
table inet noudp {
  chain out {
    type filter hook output priority 0; policy accept;
    meta l4proto udp drop
    tcp dport 443 drop
  }
}
NFT
# Only the web port of the server and TLS on 443 towards coturn.
ip netns exec "$turn_ns" nft -f - <<NFT
table inet only443 {
  chain out {
    type filter hook output priority 0; policy drop;
    oifname "lo" accept
    ip daddr $addr tcp dport { $http_port, 443 } accept
  }
}
NFT

# ---- links ----
CLASSROOM_TOKEN_SECRET=$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')
export CLASSROOM_TOKEN_SECRET
invite() {
  local url
  url=$("$bin" invite --base-url "$base_url" --ttl 1h "$@")
  case "$url" in
    "$base_url"/*) printf '%s' "$url" ;;
    *) log "classroom invite $* printed '$url'"; return 1 ;;
  esac
}

start_server() {
  log "starting the server ($*)"
  ip netns exec "$ns" env RUST_LOG="${RUST_LOG:-info}" "$bin" serve \
    --http "$addr:$http_port" --data-dir "$work/data" "$@" >>"$work/server.log" 2>&1 &
  server_pid=$!
}

mkdir -p "$work/tmp" "$work/data"
scenario() {
  local name=$1 status=0
  shift
  log "scenario $name"
  ip netns exec "$ns" timeout --kill-after=10 "$limit" env \
    TMPDIR="$work/tmp" BASE_URL="$base_url" SCENARIO="$name" "$@" \
    node "$here/transport.mjs" &
  test_pid=$!
  wait "$test_pid" || status=$?
  test_pid=
  [ "$status" -ne 124 ] && [ "$status" -ne 137 ] || log "scenario $name did not finish within $limit s"
  return "$status"
}

status=0
wanted=" ${SCENARIOS:-tcp firefox turn} "
want() { [[ $wanted == *" $1 "* ]]; }

# ---- the default media configuration: no --announce, no --media-bind ----
if want tcp || want firefox; then
  start_server
  ! want tcp || scenario tcp \
    TEACHER_URL="$(invite --room tcp-$$ --name "Tanaka Sensei" --role teacher --identity t-tcp)" \
    PUPIL_URL="$(invite --room tcp-$$ --name "Sato Hana" --role student --identity s-tcp)" \
    PUPIL_CHROMIUM="$work/chromium-$udp_ns" || status=$?
  ! want firefox || scenario firefox \
    TEACHER_URL="$(invite --room ff-$$ --name "Ito Sensei" --role teacher --identity t-ff)" \
    PUPIL_URL="$(invite --room ff-$$ --name "Mori Yui" --role student --identity s-ff)" || status=$?
  grep -m1 -A3 'Media (UDP) offered' "$work/server.log" || true
  stop_pid "$server_pid"
  server_pid=
fi

# ---- TURN over TLS through a coturn started here ----
if want turn; then
  secret=$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')
  # A test CA and the relay's certificate signed by it, made now (never a file kept in the
  # repository). The pupil's Chromium trusts the CA the way a school's managed tablet would trust
  # its own: in its NSS database, which Chromium on Linux reads from $HOME/.pki/nssdb. Its HOME
  # is a directory of this test, so the machine's own trust is never touched; no flag makes
  # Chromium ignore certificate errors.
  openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj "/CN=classroom test CA $$" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -keyout "$work/ca.key" -out "$work/ca.pem" 2>/dev/null
  openssl req -new -newkey rsa:2048 -nodes -subj "/CN=$addr" \
    -keyout "$work/turn.key" -out "$work/turn.csr" 2>/dev/null
  printf 'subjectAltName=IP:%s\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n' "$addr" \
    >"$work/turn.ext"
  openssl x509 -req -in "$work/turn.csr" -CA "$work/ca.pem" -CAkey "$work/ca.key" \
    -CAcreateserial -days 1 -extfile "$work/turn.ext" -out "$work/turn.crt" 2>/dev/null
  # coturn sends the whole chain.
  cat "$work/turn.crt" "$work/ca.pem" >"$work/turn.pem"
  pupil_home=$work/turn-pupil-home
  mkdir -p "$pupil_home/.pki/nssdb"
  certutil -d "sql:$pupil_home/.pki/nssdb" -N --empty-password
  certutil -d "sql:$pupil_home/.pki/nssdb" -A -t "C,," -n "classroom test CA" -i "$work/ca.pem"
  printf '#!/bin/sh\nexec ip netns exec %s env HOME=%s /usr/bin/chromium "$@"\n' \
    "$turn_ns" "$pupil_home" >"$work/chromium-turn-pupil"
  chmod +x "$work/chromium-turn-pupil"
  ip netns exec "$ns" turnserver -n --listening-ip="$addr" --relay-ip="$addr" \
    --listening-port=3478 --tls-listening-port=443 --cert="$work/turn.pem" --pkey="$work/turn.key" \
    --use-auth-secret --static-auth-secret="$secret" --realm=classroom.test \
    --fingerprint --no-cli --no-tcp-relay --no-multicast-peers --min-port=49152 --max-port=49500 \
    --pidfile="$work/turn.pid" --userdb="$work/turndb" --log-file=stdout --simple-log --verbose \
    >"$work/turn.log" 2>&1 &
  turn_pid=$!
  cat >"$work/turn.toml" <<TOML
[turn]
urls = ["turns:$addr:443?transport=tcp"]
secret = "$secret"
ttl = "1h"
TOML
  start_server --config "$work/turn.toml"
  scenario turn \
    TEACHER_URL="$(invite --room turn-$$ --name "Kato Sensei" --role teacher --identity t-turn)" \
    PUPIL_URL="$(invite --room turn-$$ --name "Abe Ren" --role student --identity s-turn)" \
    PUPIL_CHROMIUM="$work/chromium-turn-pupil" || status=$?
  stop_pid "$server_pid"
  server_pid=
fi

if grep -q 'panicked' "$work/server.log" 2>/dev/null; then
  log "the server log shows a panic"
  grep -m5 -A3 'panicked' "$work/server.log"
  status=1
fi
exit "$status"

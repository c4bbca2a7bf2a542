# Shared by run.sh, reconnect.sh, transport.sh and link.sh, which source it after defining `log`, `here`
# and `root`.

# IPv6 off in a namespace: otherwise each veth gains a link-local address a second or two after
# it comes up (duplicate address detection), Chromium sees the network change under a page that
# is loading and aborts its requests with ERR_NETWORK_CHANGED (seen in CI). A kernel without IPv6
# has nothing to switch off.
quiet_ipv6() { ip netns exec "$1" sh -c '[ ! -d /proc/sys/net/ipv6 ] || { echo 1 >/proc/sys/net/ipv6/conf/all/disable_ipv6 && echo 1 >/proc/sys/net/ipv6/conf/default/disable_ipv6; }'; }

# Sets `bin`: the server binary to test, $CLASSROOM_BIN or a release build of this tree.
server_binary() {
  if [ -n "${CLASSROOM_BIN:-}" ]; then
    bin=$CLASSROOM_BIN
  else
    log "building the server (cargo build --release --bin classroom)"
    (cd "$root" && cargo build --release --bin classroom)
    bin=$root/target/release/classroom
  fi
  [ -x "$bin" ] || { log "no server binary at $bin"; exit 2; }
}

# Stops a process we started: TERM, up to 10 s to exit, then KILL; reaps it. Empty pid: nothing.
stop_pid() {
  local pid=$1
  [ -n "$pid" ] || return 0
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    timeout 10 tail --pid="$pid" -f /dev/null || kill -KILL "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
}

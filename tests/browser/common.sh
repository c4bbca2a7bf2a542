# Shared by run.sh, reconnect.sh and transport.sh, which source it after defining `log`, `here`
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

#!/usr/bin/env bash
# Starts Janus 1.1 (Debian's /usr/bin/janus) with only the VideoRoom plugin and the WebSockets
# transport, inside a network namespace with a veth (Janus gathers no ICE candidates on loopback,
# so it needs a non-loopback interface; the namespace keeps every test packet on this machine).
#
#   run-janus.sh [--netns NAME] [--event-loops N|default] [--port PORT] [--log FILE]
#   run-janus.sh --netns-only [--netns NAME]      # only create the namespace and veth
#
# Prints, on stdout, lines a shell can eval:
#   JANUS_PID=1234 JANUS_URL=ws://10.77.0.1:8188 JANUS_IP=10.77.0.1 JANUS_NETNS=lt JANUS_LOG=...
# Stop it with `kill $JANUS_PID`. Needs root (ip netns). The namespace is left in place (delete
# with `ip netns del NAME`; its veth goes with it).
set -euo pipefail

NETNS=classroom-lt
LOOPS=default
PORT=8188
LOG=
NETNS_ONLY=0
JANUS=${JANUS_BIN:-/usr/bin/janus}
LIBDIR=${JANUS_LIBDIR:-/usr/lib/x86_64-linux-gnu/janus}
# Inside the namespace: veth "ltj0" with 10.77.0.1/24; its peer "ltj1" stays in the root
# namespace, up, without an address (so nothing routes there from the host).
NS_IF=ltj0
HOST_IF=ltj1
NS_IP=10.77.0.1

while [ $# -gt 0 ]; do
	case "$1" in
	--netns) NETNS=$2; shift 2 ;;
	--event-loops) LOOPS=$2; shift 2 ;;
	--port) PORT=$2; shift 2 ;;
	--log) LOG=$2; shift 2 ;;
	--netns-only) NETNS_ONLY=1; shift ;;
	-h|--help) sed -n '2,14p' "$0"; exit 0 ;;
	*) echo "run-janus.sh: unknown argument $1" >&2; exit 2 ;;
	esac
done

here=$(cd "$(dirname "$0")" && pwd)

ensure_netns() {
	if ! ip netns list | awk '{print $1}' | grep -qx "$NETNS"; then
		ip netns add "$NETNS"
	fi
	ip -n "$NETNS" link set lo up
	if ! ip -n "$NETNS" link show "$NS_IF" >/dev/null 2>&1; then
		ip link del "$HOST_IF" 2>/dev/null || true
		ip link add "$HOST_IF" type veth peer name "$NS_IF"
		ip link set "$NS_IF" netns "$NETNS"
		ip -n "$NETNS" addr add "$NS_IP/24" dev "$NS_IF"
	fi
	ip link set "$HOST_IF" up
	ip -n "$NETNS" link set "$NS_IF" up
}

ensure_netns
if [ "$NETNS_ONLY" = 1 ]; then
	echo "JANUS_NETNS=$NETNS JANUS_IP=$NS_IP"
	exit 0
fi

[ -x "$JANUS" ] || { echo "run-janus.sh: $JANUS not found" >&2; exit 2; }

# A private config dir; the plugin and transport folders hold one library each, so the other
# plugins, transports, event handlers and loggers the package ships are never loaded.
cfg=$(mktemp -d /tmp/janus-lt.XXXXXX)
mkdir -p "$cfg/plugins" "$cfg/transports" "$cfg/empty"
ln -s "$LIBDIR/plugins/libjanus_videoroom.so" "$cfg/plugins/"
ln -s "$LIBDIR/transports/libjanus_websockets.so" "$cfg/transports/"
if [ "$LOOPS" = default ] || [ "$LOOPS" = 0 ]; then
	loops_line="# event_loops: Janus default (a thread per handle)"
else
	loops_line="event_loops = $LOOPS"
fi
sed -e "s|@CONFIG_DIR@|$cfg|" -e "s|@PLUGINS_DIR@|$cfg/plugins|" \
	-e "s|@TRANSPORTS_DIR@|$cfg/transports|" -e "s|@EMPTY_DIR@|$cfg/empty|g" \
	-e "s|@EVENT_LOOPS_LINE@|$loops_line|" -e "s|@IFACE@|$NS_IF|" -e "s|@NS_IP@|$NS_IP|" \
	"$here/janus.jcfg.in" >"$cfg/janus.jcfg"
sed -e "s|@WS_PORT@|$PORT|" -e "s|@WS_IP@|$NS_IP|" \
	"$here/janus.transport.websockets.jcfg.in" >"$cfg/janus.transport.websockets.jcfg"
cp "$here/janus.plugin.videoroom.jcfg" "$cfg/"
[ -n "$LOG" ] || LOG="$cfg/janus.log"

# `ip netns exec` execs janus, so $! is Janus' own PID (what the load tester samples).
ip netns exec "$NETNS" "$JANUS" --configs-folder "$cfg" --config "$cfg/janus.jcfg" \
	</dev/null >"$LOG" 2>&1 &
pid=$!

for _ in $(seq 1 100); do
	if ! kill -0 "$pid" 2>/dev/null; then
		echo "run-janus.sh: janus exited; its log ($LOG):" >&2
		tail -n 30 "$LOG" >&2
		exit 1
	fi
	if ip netns exec "$NETNS" bash -c "exec 3<>/dev/tcp/$NS_IP/$PORT" 2>/dev/null; then
		echo "JANUS_PID=$pid JANUS_URL=ws://$NS_IP:$PORT JANUS_IP=$NS_IP JANUS_NETNS=$NETNS JANUS_LOG=$LOG JANUS_EVENT_LOOPS=$LOOPS"
		exit 0
	fi
	sleep 0.1
done
echo "run-janus.sh: janus did not listen on $NS_IP:$PORT within 10 s; its log ($LOG):" >&2
tail -n 30 "$LOG" >&2
kill "$pid" 2>/dev/null || true
exit 1

#!/usr/bin/env python3
"""A userspace delay line for link.sh: the "international path" between two schools' servers.

The kernel here has no netem, so the delay is made in user space. The gateway namespace routes
every packet it forwards between the two servers into the TUN device DEV (already created with
`ip tuntap add DEV mode tun`); this program reads each packet from it, drops it with probability
LOSS_PCT %, and writes it back DELAY_MS later, when the kernel routes it on to its destination.
One pass per direction, so the round trip is 2 x DELAY_MS. Every packet waits the same time, so
the line keeps their order (a FIFO). At most MAX_QUEUED packets wait at once (a full line drops
what arrives, as a router's queue would); the rate limit is tc tbf on the gateway's veths.

Usage: delayline.py DEV DELAY_MS LOSS_PCT [MAX_QUEUED]   (stops on SIGTERM, printing its counts)
"""
import collections
import fcntl
import os
import random
import select
import signal
import struct
import sys
import time

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000


def main():
    dev, delay_ms, loss_pct = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
    max_queued = int(sys.argv[4]) if len(sys.argv) > 4 else 4096
    fd = os.open("/dev/net/tun", os.O_RDWR)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", dev.encode(), IFF_TUN | IFF_NO_PI))
    os.set_blocking(fd, False)
    delay = delay_ms / 1000.0
    line = collections.deque()  # (when to send, packet), oldest first
    counts = {"passed": 0, "lost": 0, "overflow": 0, "write_failed": 0}

    def stop(_signum, _frame):
        print(f"delayline {dev}: {counts}", file=sys.stderr, flush=True)
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    while True:
        timeout = max(0.0, line[0][0] - time.monotonic()) if line else None
        readable, _, _ = select.select([fd], [], [], timeout)
        if readable:
            # Everything that is waiting, so a burst gets one timestamp per read, not per wakeup.
            while True:
                try:
                    packet = os.read(fd, 65536)
                except BlockingIOError:
                    break
                if random.random() * 100.0 < loss_pct:
                    counts["lost"] += 1
                elif len(line) >= max_queued:
                    counts["overflow"] += 1
                else:
                    line.append((time.monotonic() + delay, packet))
        now = time.monotonic()
        while line and line[0][0] <= now:
            try:
                os.write(fd, line.popleft()[1])
                counts["passed"] += 1
            except OSError:
                counts["write_failed"] += 1


if __name__ == "__main__":
    main()

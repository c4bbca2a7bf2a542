#!/usr/bin/env python3
"""Sorts `perf script -F comm,tid,ip,sym` call stacks of the server (loadtest/profile.sh) into
what its media thread spends them on, and prints each part as a share of all samples and, given
the run's JSON (--run), as microseconds of CPU per packet the pupils received.

A sample counts towards every part whose frame is on its stack, so nested parts (indented) are
included in the part above them.
"""

import argparse
import json
import sys

# (label, indent, a substring of a frame's symbol that marks the part)
PARTS = [
    ("kernel: sending datagrams (sendmmsg)", 0, "sendmmsg"),
    ("on loopback, the receiving pupils' side of it (softirq)", 1, "net_rx_action"),
    ("kernel: receiving datagrams", 0, "recvfrom"),
    ("kernel: waiting for work (epoll_wait)", 0, "epoll_wait"),
    ("kernel: switching threads (finish_task_switch)", 0, "finish_task_switch"),
    ("str0m Rtc::poll_output", 0, "Rtc::poll_output"),
    ("building and encrypting packets (poll_datagram)", 1, "Session::poll_datagram"),
    ("SRTP protect", 2, "protect_rtp"),
    ("send queue and RTX cache (StreamTx::poll_packet)", 2, "StreamTx::poll_packet"),
    ("polling events (Session::poll_event)", 1, "Session::poll_event"),
    ("next timeout (Rtc::poll_timeout)", 1, "Rtc::poll_timeout"),
    ("DTLS poll", 1, "Dtls::poll_output"),
    ("str0m Rtc::handle_input(Timeout)", 0, "Rtc::do_handle_timeout"),
    ("bandwidth estimator (Bwe::handle_timeout)", 1, "Bwe::handle_timeout"),
    ("pacer", 1, "Pacer>::handle_timeout"),
    ("streams (RTCP, stats)", 1, "Streams::handle_timeout"),
    ("ICE agent", 1, "IceAgent::handle_timeout"),
    ("str0m handling received datagrams", 0, "Rtc::do_handle_receive"),
    ("our forwarding decision and rewrite (shard::media, core)", 0, "classroom_sfu::shard::media"),
    ("our allocation round", 0, "classroom_sfu::shard::allocation"),
    ("malloc / free", 0, "malloc"),
]


def stacks(lines):
    stack = None
    for line in lines:
        line = line.rstrip("\n")
        if not line.strip():
            if stack:
                yield stack
            stack = None
        elif not line[0].isspace():
            stack = [line.split()[0]]
        elif stack is not None:
            parts = line.strip().split(None, 1)
            stack.append(parts[1] if len(parts) > 1 else "?")
    if stack:
        yield stack


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--run", help="the loadtest JSON of the profiled run")
    args = parser.parse_args()
    samples = list(stacks(sys.stdin))
    if not samples:
        sys.exit("profile_split: no samples on stdin")
    us_per_packet = None
    if args.run:
        run = json.load(open(args.run))
        us_per_packet = run["server"]["us_per_rx_packet"]
    threads = {}
    for s in samples:
        threads[s[0]] = threads.get(s[0], 0) + 1
    total = len(samples)
    print(f"{total} samples; by thread: " + ", ".join(
        f"{name} {100 * n / total:.1f} %" for name, n in sorted(threads.items(), key=lambda x: -x[1])))
    if us_per_packet:
        print(f"server CPU per packet received by the pupils: {us_per_packet:.1f} µs (whole run)")
    print(f"{'':58} {'share':>7} {'µs/pkt':>7}")
    for label, indent, marker in PARTS:
        n = sum(1 for s in samples if any(marker in frame for frame in s[1:]))
        share = n / total
        us = f"{share * us_per_packet:7.1f}" if us_per_packet else ""
        print(f"{'  ' * indent + label:58} {100 * share:6.1f}% {us}")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Turns a directory of loadtest JSON results (loadtest/capacity.sh) into capacity.md (a table)
and capacity.png (server CPU per forwarded packet and latency p99 against pupils); with --soak,
turns one soak run's JSON (loadtest/soak.sh) into a PNG beside it: server and generator RSS,
live pupils, and joins and leaves so far, against time.

usage: python3 loadtest/plot.py DIR               (needs matplotlib for the PNG: pip install matplotlib)
       python3 loadtest/plot.py --soak RUN.json   (writes RUN.png)
"""

import json
import re
import sys
from pathlib import Path


def load(directory):
    rows = []
    for path in sorted(directory.glob("*.json")):
        match = re.fullmatch(r"(video|audio)-(\d+)\.json", path.name)
        if not match:
            continue
        d = json.loads(path.read_text())
        scenario, n = match.group(1), int(match.group(2))
        latency = d["audio_latency" if scenario == "audio" else "video_latency"]
        loss = d["audio_loss_pct" if scenario == "audio" else "video_loss_pct"]
        server, generator = d["server"], d["generator"]
        rows.append({
            "scenario": scenario,
            "pupils": n,
            "joined": d["pupils_joined"],
            "pps": d["rx_pps_steady"],
            # None when nothing was received (a run without pupils).
            "server_us": server["us_per_rx_packet"] or 0.0,
            "server_cores": server["cores_steady"],
            "server_rss_mb": server["rss_peak_mb"],
            "generator_cores": generator["cores_steady"],
            "loss": loss,
            "p50": latency["p50_ms"],
            "p99": latency["p99_ms"],
            "join_p50": d["join_first_audio_ms" if scenario == "audio" else "join_first_video_ms"]["p50"],
            "join_p95": d["join_first_audio_ms" if scenario == "audio" else "join_first_video_ms"]["p95"],
            "failed": d["failed_participants"],
        })
    rows.sort(key=lambda r: (r["scenario"], r["pupils"]))
    return rows


def table(rows):
    lines = [
        "| scenario | pupils | forwarded pkt/s | server µs/pkt | server cores | pupils per core at this cost | server RSS MiB | generator cores | loss % | latency p50 / p99 ms | join p50 / p95 ms | failed |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        per_pupil_pps = r["pps"] / max(r["joined"], 1)
        per_core = 1e6 / (r["server_us"] * per_pupil_pps) if r["server_us"] > 0 and per_pupil_pps > 0 else 0
        lines.append(
            f"| {r['scenario']} | {r['pupils']} | {r['pps']:.0f} | {r['server_us']:.1f} | {r['server_cores']:.2f} "
            f"| {per_core:.0f} | {r['server_rss_mb']:.0f} | {r['generator_cores']:.2f} | {r['loss']:.2f} "
            f"| {r['p50']:.1f} / {r['p99']:.1f} | {r['join_p50']:.0f} / {r['join_p95']:.0f} | {r['failed']} |"
        )
    return "\n".join(lines) + "\n"


def plot(rows, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("plot.py: matplotlib is not installed (pip install matplotlib); table only")
        return False
    fig, (cpu, lat) = plt.subplots(1, 2, figsize=(10, 4))
    for scenario, style in (("video", "o-"), ("audio", "s--")):
        rs = [r for r in rows if r["scenario"] == scenario]
        if not rs:
            continue
        xs = [r["pupils"] for r in rs]
        cpu.plot(xs, [r["server_us"] for r in rs], style, label=scenario)
        lat.plot(xs, [r["p99"] for r in rs], style, label=f"{scenario} p99")
    cpu.set_xlabel("pupils")
    cpu.set_ylabel("server CPU µs per forwarded packet")
    cpu.set_xscale("log", base=2)
    cpu.set_ylim(bottom=0)
    cpu.grid(True, alpha=0.3)
    cpu.legend()
    lat.set_xlabel("pupils")
    lat.set_ylabel("forwarding latency p99 (ms)")
    lat.set_xscale("log", base=2)
    lat.axhline(50, color="grey", linewidth=0.8, linestyle=":")
    lat.grid(True, alpha=0.3)
    lat.legend()
    fig.suptitle("classroom: one teacher → N pupils (loadtest/capacity.sh)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return True


def plot_soak(path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("plot.py: matplotlib is not installed (pip install matplotlib); no soak plot")
        return False
    d = json.loads(Path(path).read_text())
    samples = d["samples"]
    t = [s["t_s"] / 60.0 for s in samples]
    fig, (mem, people) = plt.subplots(2, 1, figsize=(10, 6), sharex=True)
    mem.plot(t, [s["server_rss_mb"] for s in samples], label="server RSS")
    mem.plot(t, [s["generator_rss_mb"] for s in samples], label="generator RSS", alpha=0.6)
    r = d["server_rss"]
    if r["slope_kib_per_min"] is not None and r["at_end_mb"] is not None:
        # The fitted line, drawn through the end value with the fitted slope.
        x0, x1 = r["fit_from_s"] / 60.0, r["fit_to_s"] / 60.0
        per_min_mb = r["slope_kib_per_min"] / 1024.0
        mem.plot([x0, x1], [r["at_end_mb"] - per_min_mb * (x1 - x0), r["at_end_mb"]], "k--",
                 label=f"fit: {r['slope_kib_per_min']:.0f} KiB/min")
    for x in (d["steady_start_s"], d["steady_end_s"]):
        mem.axvline(x / 60.0, color="grey", linewidth=0.8, linestyle=":")
    mem.set_ylabel("RSS (MiB)")
    mem.set_ylim(bottom=0)
    mem.grid(True, alpha=0.3)
    mem.legend(loc="lower right")
    people.plot(t, [s["live_pupils"] for s in samples], label="live pupils")
    people.set_ylabel("live pupils")
    people.set_ylim(bottom=0)
    people.grid(True, alpha=0.3)
    counts = people.twinx()
    counts.plot(t, [s["pupil_joins"] for s in samples], "g-", label="joins so far", alpha=0.7)
    counts.plot(t, [s["pupil_leaves"] for s in samples], "r-", label="leaves so far", alpha=0.7)
    counts.set_ylabel("joins / leaves so far")
    lines = people.get_legend_handles_labels()
    more = counts.get_legend_handles_labels()
    people.legend(lines[0] + more[0], lines[1] + more[1], loc="upper left")
    people.set_xlabel("minutes")
    c = d["config"]
    fig.suptitle(f"classroom soak: {c['pupils']} pupils, {c['churn_per_sec']}/s churn (loadtest/soak.sh)")
    fig.tight_layout()
    out = Path(path).with_suffix(".png")
    fig.savefig(out, dpi=100)
    print(f"wrote {out}")
    return True


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--soak":
        plot_soak(sys.argv[2])
        return
    if len(sys.argv) != 2:
        print(__doc__)
        sys.exit(2)
    directory = Path(sys.argv[1])
    rows = load(directory)
    if not rows:
        print(f"plot.py: no video-N.json / audio-N.json in {directory}")
        sys.exit(1)
    text = table(rows)
    (directory / "capacity.md").write_text(text)
    print(text)
    if plot(rows, directory / "capacity.png"):
        print(f"wrote {directory / 'capacity.png'}")


if __name__ == "__main__":
    main()

"""The load test's report: the JSON dict, its Markdown rendering and optional PNG plots."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmarks.loadtest.prometheus import MetricsSnapshot, metrics_delta
from benchmarks.loadtest.stats import summarize_ms

if TYPE_CHECKING:
    from benchmarks.loadtest.run import LoadTest


def build_report(
    test: LoadTest, elapsed: float, before: MetricsSnapshot | None, after: MetricsSnapshot | None
) -> dict[str, Any]:
    """Achieved load, latencies, requests and the target's figures of a finished run."""
    o = test.o
    visibility = test.tag_visibility()
    tag_sent = test.log.counts["tag_post"].sent if o.tags_per_second else 0
    totals = test.log.totals()
    if before is not None and after is not None:
        target: dict[str, Any] = metrics_delta(before, after, test.streams)
    else:
        target = {"error": f"no Prometheus metrics at {o.metrics_url}"}
    part_rate = len(test.delivery) / elapsed if elapsed > 0 else 0.0
    report: dict[str, Any] = {
        "target": o.target,
        "run_id": test.run_id,
        "duration_s": {"requested": o.duration, "achieved": round(elapsed, 2)},
        "load": {
            "publishers": {
                "requested": o.publishers,
                "running_at_end": sum(p.running for p in test.publishers),
                "exits": sum(len(p.exits) for p in test.publishers),
                "source": str(o.source) if o.source else f"testsrc2 {o.size}@{o.fps}",
            },
            "viewers": {
                "requested": o.viewers,
                "parts_per_second": round(part_rate, 2),
                "parts_per_second_per_viewer": round(part_rate / o.viewers, 2)
                if o.viewers
                else None,
            },
            "tags_per_second": {
                "requested": o.tags_per_second,
                "achieved": round(tag_sent / elapsed, 2) if elapsed > 0 else 0.0,
            },
        },
        "streams": test.streams,
        "latency": {
            "server_added_part_lateness": target.get("part_lateness"),
            "part_delivery": summarize_ms(test.delivery),
            "playlist_wait": summarize_ms(test.playlist_wait),
            "tag_post": summarize_ms(test.tag_post),
            "tag_visible": summarize_ms(visibility),
        },
        "tags": {
            "sent": tag_sent,
            "accepted": len(test.tags),
            "visible": len(visibility),
            "not_visible": len(test.tags) - len(visibility),
        },
        "rendition_reports": {
            "samples": len(test.report_lag),
            "lag_parts_max": max(test.report_lag, default=None),
        },
        "requests": {k: v.as_dict() for k, v in sorted(test.log.counts.items())},
        "requests_total": totals.as_dict(),
        "setup_requests": {k: v.as_dict() for k, v in sorted(test.setup.counts.items())},
        "target_process": target,
        "load_generator": {"cpu_cores": round(test.generator_cores, 3)},
        "timeline": [s.__dict__ for s in test.timeline],
        "notes": test.notes,
    }
    return report


def _fmt_latency(name: str, s: dict[str, Any] | None) -> str:
    if not s:
        return f"| {name} | – | – | – | – | – |"
    return (
        f"| {name} | {s['count']} | {s['p50_ms']} | {s['p95_ms']} | {s['p99_ms']} "
        f"| {s.get('max_ms', '–')} |"
    )


def render_markdown(report: dict[str, Any]) -> str:
    load, lat, tp = report["load"], report["latency"], report["target_process"]
    pub, view, tags = load["publishers"], load["viewers"], load["tags_per_second"]
    lines = [
        f"# shopcast loadtest — {report['target']}",
        "",
        f"Duration {report['duration_s']['achieved']} s of {report['duration_s']['requested']} s"
        f" requested; streams: {', '.join(report['streams'])}.",
        "",
        "## Load: achieved vs requested",
        "",
        "| load | requested | achieved |",
        "|---|---|---|",
        f"| RTMP publishers ({pub['source']}) | {pub['requested']} | "
        f"{pub['running_at_end']} running at the end, {pub['exits']} exits |",
        f"| LL-HLS viewers | {view['requested']} | {view['parts_per_second']} parts/s "
        f"({view['parts_per_second_per_viewer']} per viewer) |",
        f"| product tags/s | {tags['requested']} | {tags['achieved']} |",
        "",
        "## Latency (ms)",
        "",
        "| figure | count | p50 | p95 | p99 | max |",
        "|---|---|---|---|---|---|",
        _fmt_latency(
            "server-added: part's last frame in → part listed (target)",
            lat["server_added_part_lateness"],
        ),
        _fmt_latency("part delivery: part listed → its bytes received", lat["part_delivery"]),
        _fmt_latency("playlist wait: blocking reload held", lat["playlist_wait"]),
        _fmt_latency("tag POST round trip", lat["tag_post"]),
        _fmt_latency("tag visible: POST sent → DATERANGE in a playlist", lat["tag_visible"]),
        "",
        f"Tags: {report['tags']['sent']} sent, {report['tags']['accepted']} accepted, "
        f"{report['tags']['visible']} visible, {report['tags']['not_visible']} never visible.",
        "",
        "## Requests",
        "",
        "| kind | sent | ok | failed | errors by kind |",
        "|---|---|---|---|---|",
    ]
    for kind, c in [*report["requests"].items(), ("**total**", report["requests_total"])]:
        errors = ", ".join(f"{k}: {v}" for k, v in sorted(c["errors"].items())) or "–"
        lines.append(f"| {kind} | {c['sent']} | {c['ok']} | {c['failed']} | {errors} |")
    lines += ["", "## Target process (from its /metrics)", ""]
    if "error" in tp:
        lines.append(tp["error"])
    else:
        lines.append(
            f"CPU {tp.get('cpu_seconds', '–')} s over {tp['wall_seconds']} s = "
            f"{tp.get('cpu_cores', '–')} cores; hub dropped frames {tp['hub_dropped_frames']}; "
            f"parts published {tp['parts_published']}."
        )
    lines.append(
        f"\nLoad generator (this process): {report['load_generator']['cpu_cores']} cores "
        "(ffmpeg publishers not included)."
    )
    for note in report.get("notes", []):
        lines.append(f"\nNote: {note}")
    if report.get("plots"):
        lines += ["", "## Plots", ""] + [f"![{Path(p).stem}]({p})" for p in report["plots"]]
    return "\n".join(lines) + "\n"


def write_plots(report: dict[str, Any], samples: dict[str, list[float]], folder: Path) -> list[str]:
    """Latency CDFs and throughput over time as PNG, when matplotlib is importable."""
    if importlib.util.find_spec("matplotlib") is None:
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    written = []
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, values in samples.items():
        if values:
            ordered = sorted(v * 1000 for v in values)
            ax.plot(ordered, [(i + 1) / len(ordered) for i in range(len(ordered))], label=name)
    ax.set_xlabel("ms")
    ax.set_ylabel("fraction")
    ax.set_title("latency CDFs")
    ax.legend()
    path = folder / "latency_cdf.png"
    fig.savefig(path, dpi=100)
    written.append(str(path))
    fig, ax = plt.subplots(figsize=(7, 4))
    timeline = report["timeline"]
    for key in ("parts", "reloads", "tags_sent", "errors"):
        ax.plot(range(len(timeline)), [s[key] for s in timeline], label=key)
    ax.set_xlabel("second")
    ax.set_ylabel("per second")
    ax.set_title("throughput")
    ax.legend()
    path = folder / "throughput.png"
    fig.savefig(path, dpi=100)
    written.append(str(path))
    plt.close("all")
    return written

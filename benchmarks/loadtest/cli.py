"""``shopcast loadtest``: the command line (the ``shopcast`` CLI imports this lazily)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import aiohttp

import benchmarks.loadtest
from benchmarks.loadtest.options import LoadTestOptions, check_options
from benchmarks.loadtest.report import render_markdown, write_plots
from benchmarks.loadtest.run import run_load


def split_values(values: Sequence[str] | None) -> list[str]:
    return [v.strip() for item in values or () for v in item.split(",") if v.strip()]


def add_loadtest_parser(sub: Any) -> argparse.ArgumentParser:
    """Register ``shopcast loadtest`` on the CLI's subparsers."""
    p: argparse.ArgumentParser = sub.add_parser(
        "loadtest",
        help="drive publishers, LL-HLS viewers and tags against an origin or edge; report",
        description=benchmarks.loadtest.__doc__,
    )
    p.add_argument("--target", default="http://127.0.0.1:8080", help="origin or edge HTTP base")
    p.add_argument("--api", help="control API base for streams and tags (default: --target)")
    p.add_argument("--metrics", help="Prometheus URL of the target (default: TARGET/metrics)")
    p.add_argument(
        "--rtmp",
        action="append",
        help="publish URL rtmp://HOST:1935/live/KEY, or the base rtmp://HOST:1935/live with "
        "--key (repeatable or comma-separated; default base: the target's host)",
    )
    p.add_argument(
        "--protocol",
        choices=("rtmp", "srt"),
        default="rtmp",
        help="how publishers send: RTMP (FLV) or SRT (MPEG-TS to the created streams' srt_url)",
    )
    p.add_argument("--stream", action="append", help="stream id(s) to use (default: demo)")
    p.add_argument("--key", action="append", help="stream key(s), in --stream order")
    p.add_argument("--api-token", help="bearer token: tags, and streams created for publishers")
    p.add_argument("--publishers", type=int, default=0, help="RTMP publishers (ffmpeg)")
    p.add_argument("--viewers", type=int, default=0, help="LL-HLS viewers")
    p.add_argument("--tags-per-second", type=float, default=0.0, help="product tags POSTed per s")
    p.add_argument("--duration", type=float, default=30.0, help="seconds of load")
    p.add_argument("--source", type=Path, help="file replayed with ffmpeg -re -c copy (looped)")
    p.add_argument("--size", default="360x640", help="synthetic testsrc2 size without --source")
    p.add_argument("--fps", type=int, default=30, help="synthetic source frame rate")
    p.add_argument("--rendition", default="first", help="first|lowest|highest|NAME (e.g. 360p)")
    p.add_argument("--request-timeout", type=float, default=10.0, help="seconds per request")
    p.add_argument("--warm-up", type=float, default=2.0, help="seconds after live, before load")
    p.add_argument(
        "--ramp", type=float, help="seconds over which publishers start (default 0.1 s each)"
    )
    p.add_argument("--keep-streams", action="store_true", help="keep streams created by the run")
    p.add_argument("--report", type=Path, help="write the report as JSON here")
    p.add_argument("--markdown", type=Path, help="write the report as Markdown here")
    p.add_argument("--plots", type=Path, help="directory for PNG plots (needs matplotlib)")
    p.add_argument("--quiet", action="store_true", help="no progress line on stderr")
    return p


def options_from_args(args: argparse.Namespace) -> LoadTestOptions:
    return LoadTestOptions(
        target=args.target.rstrip("/"),
        api=args.api,
        metrics=args.metrics,
        rtmp=split_values(args.rtmp),
        protocol=args.protocol,
        streams=split_values(args.stream),
        keys=split_values(args.key),
        api_token=args.api_token,
        publishers=args.publishers,
        viewers=args.viewers,
        tags_per_second=args.tags_per_second,
        duration=args.duration,
        source=args.source,
        size=args.size,
        fps=args.fps,
        rendition=args.rendition,
        request_timeout=args.request_timeout,
        warm_up=args.warm_up,
        ramp=args.ramp,
        keep_streams=args.keep_streams,
        report=args.report,
        markdown=args.markdown,
        plots=args.plots,
        progress=not args.quiet,
    )


def run_loadtest(args: argparse.Namespace, run: Callable[[Any], Any] = asyncio.run) -> int:
    """``shopcast loadtest``: run, print the Markdown report, write the files asked for."""
    options = options_from_args(args)
    problem = check_options(options)
    if problem is not None:
        print(f"shopcast loadtest: {problem}", file=sys.stderr)
        return 2
    try:
        report, test = run(run_load(options))
    except (RuntimeError, aiohttp.ClientError, OSError) as exc:
        print(f"shopcast loadtest: {exc}", file=sys.stderr)
        return 1
    if options.plots is not None:
        samples = {
            "part delivery": test.delivery,
            "playlist wait": test.playlist_wait,
            "tag visible": test.tag_visibility(),
        }
        report["plots"] = write_plots(report, samples, options.plots)
        if not report["plots"]:
            report["notes"].append("plots skipped: matplotlib is not installed")
    text = render_markdown(report)
    print(text)
    if options.report is not None:
        options.report.write_text(json.dumps(report, indent=2) + "\n")
    if options.markdown is not None:
        options.markdown.write_text(text)
    return 0

"""Benchmark inputs: an RTMP publish of 720p video, recorded or synthesised, and a results table;
the run's report (``benchmarks/report/latest.json`` and ``latest.md``) and the smoke switch."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from ingest.rtmp.chunk_py import ChunkStreamReader as PyChunkStreamReader
from ingest.rtmp.chunk_py import ChunkWriter
from shopcast.web import HLS_JS, SHAKA_JS

RECORDED_PUBLISH = Path(__file__).parents[1] / "tests/ingest/vectors/publish_720p.bin"
HANDSHAKE_BYTES = 1 + 1536 + 1536  # C0 + C1 + C2 precede the chunk stream (§5.2)
VIDEO_CSID, AUDIO_CSID, MSG_AUDIO, MSG_VIDEO = 6, 4, 8, 9
PUBLISH_STREAM_ID = 1


class Message(NamedTuple):
    csid: int
    type_id: int
    stream_id: int
    timestamp: int
    payload: bytes


class PublishInput(NamedTuple):
    name: str
    source: str
    data: bytes  # chunk-stream bytes, handshake removed


def encode_720p(seconds: int = 2) -> list[Message]:
    """H.264 720×1280 testsrc2 at ~3000 kb/s (libx264 veryfast) plus AAC sine audio, as RTMP
    video/audio messages in timestamp order; FLV tag bodies carry a plain 5- or 2-byte prefix."""
    import av

    video: list[Message] = []
    with av.open(
        f"testsrc2=size=720x1280:rate=30:duration={seconds},format=yuv420p", format="lavfi"
    ) as source:
        encoder = av.CodecContext.create("libx264", "w")
        encoder.width, encoder.height, encoder.pix_fmt = 720, 1280, "yuv420p"
        encoder.time_base = Fraction(1, 30)
        encoder.framerate = Fraction(30)
        encoder.bit_rate = 3_000_000
        encoder.options = {"preset": "veryfast", "threads": "1"}  # reproducible sizes
        frames = [*source.decode(video=0), None]
        for frame in frames:
            for packet in encoder.encode(frame):
                pts = packet.pts or 0
                key = 0x17 if packet.is_keyframe else 0x27  # frame type | codec id 7 (AVC)
                body = bytes((key, 1, 0, 0, 0)) + bytes(packet)
                video.append(
                    Message(VIDEO_CSID, MSG_VIDEO, PUBLISH_STREAM_ID, pts * 1000 // 30, body)
                )
    audio: list[Message] = []
    with av.open(
        f"sine=frequency=440:sample_rate=44100:duration={seconds}", format="lavfi"
    ) as sine:
        aac = av.CodecContext.create("aac", "w")
        aac.sample_rate = 44100
        aac.layout = "mono"
        aac.format = "fltp"
        aac.bit_rate = 128_000
        resampler = av.AudioResampler(format="fltp", layout="mono", rate=44100)
        samples = [r for f in sine.decode(audio=0) for r in resampler.resample(f)]
        for packet in [p for sample in samples for p in aac.encode(sample)] + aac.encode(None):
            ms = (packet.pts or 0) * 1000 // 44100
            body = bytes((0xAF, 1)) + bytes(packet)  # AAC raw frame
            audio.append(Message(AUDIO_CSID, MSG_AUDIO, PUBLISH_STREAM_ID, ms, body))
    return sorted(video + audio, key=lambda m: (m.timestamp, m.type_id))


def write_chunks(messages: list[Message], chunk_size: int) -> bytes:
    """Serialise ``messages``; announce ``chunk_size`` first unless it is the default 128."""
    writer = ChunkWriter()
    out = bytearray()
    if chunk_size != writer.chunk_size:
        out += writer.write(2, 1, 0, 0, chunk_size.to_bytes(4, "big"))
        writer.chunk_size = chunk_size
    for m in messages:
        out += writer.write(m.csid, m.type_id, m.stream_id, m.timestamp, m.payload)
    return bytes(out)


def read_messages(data: bytes) -> list[Message]:
    reader = PyChunkStreamReader()
    reader.feed(data)
    messages = []
    while (msg := reader.next_message()) is not None:
        if msg.type_id not in (1, 2):  # control messages are the reader's, not the stream's
            messages.append(Message(*msg))
    return messages


@pytest.fixture(scope="session")
def publish_inputs() -> dict[str, PublishInput]:
    """``publish``: the recorded ffmpeg publish when present, else the synthetic one at 4096-byte
    chunks; ``publish-chunk128``: the same messages at the default chunk size (many encoders
    never raise it)."""
    if RECORDED_PUBLISH.exists():
        source = f"recorded {RECORDED_PUBLISH.name}"
        data = RECORDED_PUBLISH.read_bytes()[HANDSHAKE_BYTES:]
        messages = read_messages(data)
    else:
        source = "synthetic: PyAV libx264 veryfast 3000k 720x1280 testsrc2 2 s + AAC"
        messages = encode_720p()
        data = write_chunks(messages, 4096)
    return {
        "publish": PublishInput("publish", source, data),
        "publish-chunk128": PublishInput(
            "publish-chunk128",
            f"{source}, rewritten at 128-byte chunks",
            write_chunks(messages, 128),
        ),
    }


Throughput = dict[tuple[str, str], dict[str, Any]]  # (input, reader) -> extra_info
THROUGHPUT = pytest.StashKey[Throughput]()


@pytest.fixture(scope="session")
def throughput(request: pytest.FixtureRequest) -> Throughput:
    """Results of the throughput benchmarks, printed as one table at the end of the run."""
    return request.config.stash.setdefault(THROUGHPUT, {})


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    results = config.stash.get(THROUGHPUT, {})
    if not results:
        return
    tr = terminalreporter
    tr.section("RTMP chunk stream reader throughput (MB = 10^6 bytes, median round)")
    tr.write_line(f"{'input':<18}{'bytes':>10}{'py MB/s':>10}{'c MB/s':>10}{'c/py':>8}")
    for name in sorted({key[0] for key in results}):
        py, c = results.get((name, "py-reader")), results.get((name, "c-reader"))
        size = (py or c or {}).get("bytes", 0)
        py_rate = f"{py['mb_per_s']:.0f}" if py else "-"
        c_rate = f"{c['mb_per_s']:.0f}" if c else "-"
        ratio = f"{c['mb_per_s'] / py['mb_per_s']:.1f}x" if py and c else "-"
        tr.write_line(f"{name:<18}{size:>10}{py_rate:>10}{c_rate:>10}{ratio:>8}")


# -- the run's report: benchmarks/report/latest.json + latest.md ---------------------------------
#
# Every benchmark that stores figures in ``benchmark.extra_info`` ends up in the report, with the
# machine it ran on. A benchmark states its headline as ``extra_info["summary"] = {"ratio": x,
# "reference": "what x is measured against", "value": "absolute figure, as context"}``; without
# one, keys named like ``speedup*``/``*ratio*`` are shown as ratios and the other scalar figures
# as context. ``SHOPCAST_BENCH_REPORT_DIR`` moves the report (the smoke tests use a temp dir).
# Scenario benchmarks run one at a time, so a run replaces only its own tests' records and keeps
# the others from earlier runs on the same machine (each record says when and how it was made).

#: Shrinks every benchmark to a few seconds (the smoke tests in tests/benchmarks/ set it).
SMOKE = os.environ.get("SHOPCAST_BENCH_SMOKE") == "1"
REPORT_DIR_ENV = "SHOPCAST_BENCH_REPORT_DIR"
REPORT_DIR = Path(__file__).parent / "report"
RECORDS = pytest.StashKey[list[dict[str, Any]]]()
_RATIO_KEY = re.compile(r"speedup|ratio|_vs_")
#: What the ratio keys of benchmarks without a ``summary`` are measured against.
_REFERENCES = {
    "speedup_vs_py": "the pure-Python twin, same run",
    "speedup": "the ffmpeg CLI, same source and ladder, same run",
}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    outcome = yield
    if call.when != "call":
        return
    bench = getattr(item, "funcargs", {}).get("benchmark")
    info = dict(getattr(bench, "extra_info", None) or {})
    if bench is None or not info:
        return
    record: dict[str, Any] = {
        "test": item.nodeid,
        "module": item.nodeid.split("::")[0],
        "outcome": outcome.get_result().outcome,
        "run_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": " ".join(getattr(sys, "orig_argv", sys.argv)),
        "smoke": SMOKE,
        "extra_info": info,
    }
    stats = getattr(getattr(bench, "stats", None), "stats", None)
    if stats is not None and stats.rounds > 1:  # pedantic single-round scenarios: no timing
        record["timing"] = {
            "median_s": stats.median,
            "ops_per_s": stats.ops,
            "rounds": stats.rounds,
        }
    item.config.stash.setdefault(RECORDS, []).append(record)


def pytest_sessionfinish(session: pytest.Session) -> None:
    records = session.config.stash.get(RECORDS, [])
    if not records:
        return
    folder = Path(os.environ.get(REPORT_DIR_ENV) or REPORT_DIR)
    folder.mkdir(parents=True, exist_ok=True)
    machine = machine_info()
    report = {
        "generated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": " ".join(getattr(sys, "orig_argv", sys.argv)),
        "smoke": SMOKE,
        "machine": machine,
        "benchmarks": _earlier_records(folder / "latest.json", machine, records) + records,
    }
    (folder / "latest.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    (folder / "latest.md").write_text(render_report(report))


def _earlier_records(
    path: Path, machine: dict[str, Any], records: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Records of an earlier report on the same machine for tests this run did not run."""
    try:
        earlier = json.loads(path.read_text())
    except (OSError, ValueError):
        return []
    same = {k: earlier.get("machine", {}).get(k) for k in ("cpu", "cores")} == {
        k: machine.get(k) for k in ("cpu", "cores")
    }
    ran = {r["test"] for r in records}
    return [
        r
        for r in earlier.get("benchmarks", [])
        if same and r.get("test") not in ran and r.get("smoke", False) == SMOKE
    ]


def machine_info() -> dict[str, Any]:
    """CPU, Python and the media stack the figures depend on."""
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.partition(":")[2].strip()
                break
    info: dict[str, Any] = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    try:
        import av

        info["pyav"] = av.__version__
        info["pyav_ffmpeg_libs"] = {
            k: ".".join(map(str, v)) for k, v in av.library_versions.items()
        }
        info["pyav_x264"] = _pyav_x264()
    except ImportError:
        info["pyav"] = None
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run([ffmpeg, "-version"], capture_output=True, text=True, timeout=10)
            first = out.stdout.splitlines()[0] if out.stdout else ""
            info["ffmpeg_cli"] = first.partition(" Copyright")[0] or None
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(
            ["dpkg-query", "-W", "-f", "${Package} ${Version}\n", "libx264-*"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        info["debian_x264"] = out.stdout.strip() or None
    hls = HLS_JS.with_name("hls.js.VERSION")  # written beside it by setup.py's vendor step
    info["hls_js"] = hls.read_text().strip() if hls.exists() else None
    shaka = SHAKA_JS.with_name("shaka-player.VERSION")
    info["shaka_player"] = shaka.read_text().strip() if shaka.exists() else None
    try:
        import native.chunk_reader  # noqa: F401

        info["native_twins_built"] = True
    except ImportError:
        info["native_twins_built"] = False
    return info


def _pyav_x264() -> str | None:
    """The x264 build PyAV links, from the version SEI it writes into the first frame."""
    import av

    encoder = av.CodecContext.create("libx264", "w")
    encoder.width = encoder.height = 64
    encoder.pix_fmt = "yuv420p"
    encoder.time_base = Fraction(1, 30)
    frame = av.VideoFrame(64, 64, "yuv420p")
    data = b"".join(bytes(p) for p in [*encoder.encode(frame), *encoder.encode(None)])
    found = re.search(rb"x264 - core \d+( r\d+ [0-9a-f]+)?", data)
    return found.group(0).decode() if found else None


def _flatten(info: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in info.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, f"{name}."))
        elif isinstance(value, bool | int | float | str):
            out[name] = value
    return out


def _number(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 100 else f"{value:,.0f}"
    return str(value)


def headline(record: dict[str, Any]) -> tuple[str, str, str]:
    """(ratio, reference, absolute context) of one benchmark record, as Markdown cells."""
    info = record["extra_info"]
    summary = info.get("summary")
    if isinstance(summary, dict):
        ratio = summary.get("ratio")
        return (
            f"{ratio:.2f}×" if isinstance(ratio, int | float) else "–",
            str(summary.get("reference", "–")),
            str(summary.get("value", "–")),
        )
    flat = _flatten(info)
    ratios = {k: v for k, v in flat.items() if _RATIO_KEY.search(k) and isinstance(v, int | float)}
    context = [f"{k} {_number(v)}" for k, v in flat.items() if k not in ratios][:8]
    timing = record.get("timing")
    if timing:
        context.insert(0, f"{timing['ops_per_s']:,.0f} ops/s")
    ratio = "; ".join(
        f"{v:.2f}×" if len(ratios) == 1 else f"{k} {v:.2f}×" for k, v in ratios.items()
    )
    reference = "; ".join(_REFERENCES.get(k, k) for k in ratios)
    return ratio or "–", reference or "–", "; ".join(context) or "–"


def render_report(report: dict[str, Any]) -> str:
    m = report["machine"]
    smoke = " (SMOKE: tiny sizes, the figures mean nothing)" if report["smoke"] else ""
    lines = [
        "# shopcast benchmarks — latest run",
        "",
        f"Generated {report['generated']}{smoke}; last command `{report['command']}` (each "
        "row says when it ran; the commands are in latest.json).",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores; Python {m['python']}; PyAV {m.get('pyav')} "
        f"(x264: {m.get('pyav_x264')}); {m.get('ffmpeg_cli')}; Debian x264 "
        f"{m.get('debian_x264')}; hls.js {m.get('hls_js')}; Shaka Player "
        f"{m.get('shaka_player')}; native twins built: "
        f"{m.get('native_twins_built')}.",
        "",
        "| benchmark | outcome | ratio | against | absolute figures (context) | run at |",
        "|---|---|---|---|---|---|",
    ]
    for record in sorted(report["benchmarks"], key=lambda r: str(r["test"])):
        ratio, reference, context = headline(record)
        name = record["test"].replace("benchmarks/", "").replace("|", "/")
        lines.append(
            f"| `{name}` | {record['outcome']} | {ratio} | {reference} | "
            f"{context.replace('|', '/')} | {record.get('run_at', '–')} |"
        )
    return "\n".join(lines) + "\n"

"""Record what Debian ffmpeg sends when it publishes RTMP: every inbound byte into ``<name>.bin``.

A tiny asyncio server on 127.0.0.1 drives :class:`RTMPServerConnection` (accepting connect and
publish) so ffmpeg gets real answers. ffmpeg writes the same packets through the ``tee`` muxer to
a local FLV; PyAV counts them into ``<name>.json`` (the expected numbers the tests check).

    .venv/bin/python tests/ingest/vectors/record_publish.py [name ...]
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[2]))

import av  # noqa: E402

from ingest.rtmp.chunk_py import ChunkStreamReader, ChunkWriter  # noqa: E402
from ingest.rtmp.connection import RTMPServerConnection  # noqa: E402
from ingest.rtmp.events import (  # noqa: E402
    NEED_DATA,
    ConnectionClosed,
    ConnectRequested,
    PublishRequested,
)
from ingest.rtmp.handshake import HANDSHAKE_SIZE  # noqa: E402

VIDEO = ["-f", "lavfi", "-i", "testsrc2=size={size}:rate=30"]
AUDIO = ["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"]
# The tee muxer does not ask for global headers; without the flag x264 would put SPS/PPS in-band
# and the RTMP leg would carry an empty avcC, unlike a plain `-f flv rtmp://…` publish.
X264 = ["-c:v", "libx264", "-preset", "veryfast", "-g", "30", "-pix_fmt", "yuv420p"]
X264 += ["-flags:v", "+global_header"]
AAC = ["-c:a", "aac", "-b:a", "64k"]

# name → (inputs, codec options, maps, seconds)
VECTORS: dict[str, tuple[list[str], list[str], list[str], float]] = {
    "publish_plain": (
        VIDEO + AUDIO, [*X264, "-bf", "0", *AAC], ["-map", "0:v", "-map", "1:a"], 2.0,
    ),
    "publish_bframes": (
        VIDEO + AUDIO, [*X264, "-bf", "2", *AAC], ["-map", "0:v", "-map", "1:a"], 2.0,
    ),
    "publish_audio_only": (AUDIO, AAC, ["-map", "0:a"], 2.0),
    "publish_video_only": (VIDEO, [*X264, "-bf", "0"], ["-map", "0:v"], 2.0),
    "publish_720p": (
        VIDEO + AUDIO,
        [*X264, "-bf", "0", "-crf", "21", *AAC],
        ["-map", "0:v", "-map", "1:a"],
        2.0,
    ),
}  # fmt: skip
SIZES = {"publish_720p": "720x1280", "publish_odd": "607x1080"}
# Derived vector: publish_plain re-chunked at 60000 bytes (ffmpeg 5.1 has no chunk size option).
RECHUNKED = {"publish_chunk60000": ("publish_plain", 60000)}


async def record(name: str) -> None:
    """Record ``name``; retry when ffmpeg's closing reset cut the last message short."""
    for _ in range(5):
        if await record_once(name):
            return
    raise RuntimeError(f"{name}: every recording ended in a partial message")


async def record_once(name: str) -> bool:
    inputs, codecs, maps, seconds = VECTORS[name]
    size = SIZES.get(name, "180x320")
    inputs = [arg.format(size=size) for arg in inputs]
    inbound = bytearray()
    done = asyncio.Event()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = RTMPServerConnection(clock=time.time)
        try:
            while True:
                try:
                    data = await reader.read(65536)
                except ConnectionResetError:  # ffmpeg sometimes resets instead of closing
                    data = b""
                inbound.extend(data)
                conn.receive_data(data)
                while True:
                    ev = conn.next_event()
                    if ev is NEED_DATA or isinstance(ev, ConnectionClosed):
                        break
                    if isinstance(ev, ConnectRequested):
                        conn.accept_connect(ev)
                    elif isinstance(ev, PublishRequested):
                        conn.accept_publish(ev)
                writer.write(conn.data_to_send())
                if not data:
                    break
        finally:
            writer.close()
            done.set()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        ref = Path(tmp) / "ref.flv"
        url = f"rtmp://127.0.0.1:{port}/live/testkey"
        cmd = [
            "ffmpeg", "-hide_banner", "-loglevel", "error", *inputs, "-t", str(seconds),
            *maps, *codecs, "-f", "tee", f"[f=flv]{url}|[f=flv]{ref}",
        ]  # fmt: skip
        proc = await asyncio.create_subprocess_exec(*cmd)
        assert await proc.wait() == 0, f"ffmpeg failed for {name}"
        await asyncio.wait_for(done.wait(), 10)
        server.close()
        reader = ChunkStreamReader()
        reader.feed(bytes(inbound[1 + 2 * HANDSHAKE_SIZE :]))
        while reader.next_message() is not None:
            pass
        if reader.buffered:
            return False
        (HERE / f"{name}.bin").write_bytes(bytes(inbound))
        expected = describe(ref)
    expected["command"] = " ".join(cmd[4:]).replace(str(ref), "ref.flv").replace(str(port), "PORT")
    (HERE / f"{name}.json").write_text(json.dumps(expected, indent=1) + "\n")
    print(f"{name}.bin: {len(inbound)} bytes, {expected}")
    return True


def describe(flv: Path) -> dict[str, object]:
    """Count the packets ffmpeg wrote, per kind, plus a digest of their payloads."""
    out: dict[str, object] = {}
    with av.open(str(flv)) as container:
        for stream in container.streams:
            ctx: Any = stream.codec_context
            packets = [p for p in container.demux(stream) if p.size]
            container.seek(0)
            digest = hashlib.sha256(b"".join(bytes(p) for p in packets)).hexdigest()
            entry: dict[str, object] = {
                "codec": ctx.name,
                "frames": len(packets),
                "keyframes": sum(p.is_keyframe for p in packets),
                "payload_sha256": digest,
                "extradata": bytes(ctx.extradata or b"").hex(),
            }
            if stream.type == "video":
                entry.update(
                    width=ctx.width,
                    height=ctx.height,
                    pts_differs=sum(p.pts != p.dts for p in packets),
                )
            else:
                entry.update(
                    sample_rate=ctx.sample_rate,
                    channels=ctx.channels,
                )
            out[stream.type] = entry
    return out


def rechunk(name: str, source: str, chunk_size: int) -> None:
    """Re-send ``source``'s client messages with a Set Chunk Size of ``chunk_size`` up front."""
    data = (HERE / f"{source}.bin").read_bytes()
    split = 1 + 2 * HANDSHAKE_SIZE
    reader = ChunkStreamReader()
    reader.feed(data[split:])
    writer = ChunkWriter()
    out = bytearray(data[:split])
    out += writer.write(2, 1, 0, 0, chunk_size.to_bytes(4, "big"))
    writer.chunk_size = chunk_size
    while (msg := reader.next_message()) is not None:
        if msg.type_id != 1:  # drop the client's own Set Chunk Size
            out += writer.write(msg.csid, msg.type_id, msg.stream_id, msg.timestamp, msg.payload)
    (HERE / f"{name}.bin").write_bytes(bytes(out))
    expected = json.loads((HERE / f"{source}.json").read_text())
    expected["command"] = f"rechunk({source}.bin, {chunk_size}) in record_publish.py"
    (HERE / f"{name}.json").write_text(json.dumps(expected, indent=1) + "\n")
    print(f"{name}.bin: {len(out)} bytes")


# h264_configs.json: avcC records ffmpeg/libx264 writes into FLV, for the SPS parser tests.
# (size, pix_fmt, extra x264 options); odd widths need 4:4:4 (4:2:0 needs even sizes).
H264_CONFIGS = [
    ("180x320", "yuv420p", []),
    (
        "608x1080",
        "yuv444p",
        ["-vf", "format=yuv444p,crop=607:1080:0:0"],
    ),  # lavfi sources round odd widths
    ("720x1280", "yuv420p", []),
    ("1920x1080", "yuv420p", []),
    ("64x64", "yuv420p", ["-profile:v", "baseline"]),
    ("640x360", "yuv420p", ["-x264-params", "cqm=jvt"]),
    ("720x576", "yuv420p", ["-flags", "+ildct+ilme", "-top", "1"]),
    ("352x288", "yuv422p", []),
    ("352x290", "yuv420p10le", []),
]


def record_h264_configs() -> None:
    """Encode one frame per config to FLV and keep the avcC from its sequence header tag."""
    out = []
    for size, pix_fmt, extra in H264_CONFIGS:
        cmd = [
            "ffmpeg", "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i",
            f"testsrc2=size={size}:rate=25", "-frames:v", "1", "-c:v", "libx264",
            "-pix_fmt", pix_fmt, *extra, "-f", "flv", "-",
        ]  # fmt: skip
        flv = subprocess.run(cmd, check=True, capture_output=True).stdout
        pos = 13  # FLV header (9) + PreviousTagSize0 (4)
        while flv[pos] != 9 or flv[pos + 11 + 1] != 0:  # first video tag, AVC sequence header
            pos += 11 + int.from_bytes(flv[pos + 1 : pos + 4], "big") + 4
        size_ = int.from_bytes(flv[pos + 1 : pos + 4], "big")
        avcc = flv[pos + 11 + 5 : pos + 11 + size_]
        probe = json.loads(
            subprocess.run(
                ["ffprobe", "-v", "error", "-show_streams", "-of", "json", "-"],
                input=flv, check=True, capture_output=True,
            ).stdout
        )["streams"][0]  # fmt: skip
        out.append(
            {
                "command": " ".join(cmd[4:]),
                "avcc": avcc.hex(),
                "width": probe["width"],
                "height": probe["height"],
                "profile": probe["profile"],
                "level": probe["level"],
                "pix_fmt": probe["pix_fmt"],
            }
        )
    (HERE / "h264_configs.json").write_text(json.dumps(out, indent=1) + "\n")
    print(f"h264_configs.json: {len(out)} configs")


def main(names: list[str]) -> None:
    for name in names or [*VECTORS, *RECHUNKED, "h264_configs"]:
        if name == "h264_configs":
            record_h264_configs()
        elif name in RECHUNKED:
            rechunk(name, *RECHUNKED[name])
        else:
            asyncio.run(record(name))


if __name__ == "__main__":
    main(sys.argv[1:])

"""Every parser that reads network input, as a one-input fuzz target with its seed corpus.

A target takes any bytes and either returns or raises the parser's own clear refusal; anything
else (another exception, a broken bound, an allocation past libFuzzer's limit, a hang) is a
finding. ``tests/fuzz/run.py`` drives them with atheris (coverage-guided libFuzzer) at 1 M inputs
each; ``test_targets.py`` replays the seeds and every kept finding (``regressions/``) in
``make test``. Seeds are the recorded vectors under ``tests/``.
"""

from __future__ import annotations

import asyncio
import functools
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

from yarl import URL

from cdn_edge.paths import BadTarget, byte_range, parse_target
from ingest.codecs import (
    Av1Config,
    AvcConfig,
    BitstreamError,
    HevcConfig,
    Vp9Config,
    parse_keyframe_header,
)
from ingest.media import MediaKind, MediaUnit
from ingest.mpegts import NEED_DATA as TS_NEED_DATA
from ingest.mpegts import TSDemuxer
from ingest.rtmp import amf0, flv
from ingest.rtmp.chunk_py import ChunkStreamReader as PyChunkStreamReader
from ingest.rtmp.errors import ChunkStreamError, RTMPProtocolError
from ingest.rtmp.handshake import HandshakeError, ServerHandshake
from ingest.srt.streamid import StreamIdError, parse_stream_id
from packager import access
from packager.blocking import MAX_DIGITS, BadReloadRequest, parse_reload
from tests.edge.test_paths_fuzz import live_state
from tests.ingest.mpegts import test_fuzz as ts_fuzz
from tests.ingest.rtmp import test_fuzz as rtmp_fuzz
from tests.ingest.rtmp.rtmp_client import HANDSHAKE_BYTES, Client, handshake, vector

try:
    from native.chunk_reader import ChunkStreamReader as CChunkStreamReader
except ImportError:  # extension not built (or SHOPCAST_NO_EXTENSIONS): the c twins are skipped
    CChunkStreamReader = None
try:
    from native import flv_tags as c_tags
except ImportError:  # not built: the native targets are skipped
    c_tags = None

TESTS = Path(__file__).resolve().parents[1]
INGEST_VECTORS = TESTS / "ingest" / "vectors"
CODEC_VECTORS = TESTS / "ingest" / "codecs" / "vectors"
REGRESSIONS = Path(__file__).resolve().parent / "regressions"
#: Numbers and quoted peer text in a refusal are cut, so each kind of refusal is one outcome.
_NUMBERS, _QUOTE = re.compile(r"\d+"), re.compile("['\"]")


@dataclass(frozen=True)
class Target:
    """One parser: ``run`` takes any bytes and names the outcome (the fuzzer's feedback);
    ``seeds`` builds its starting corpus."""

    name: str
    run: Callable[[bytes], str]
    seeds: Callable[[], list[bytes]]
    #: Longest input libFuzzer makes (bigger seeds are cut to it).
    max_len: int
    needs_native: bool = False


# --- RTMP: handshake, chunk stream (both twins), the whole session (AMF0, FLV, E-RTMP) ---


def kind(text: str) -> str:
    """Text cut to its kind: numbers masked, nothing from the first quote on (peer text)."""
    return _QUOTE.split(_NUMBERS.sub("#", text), maxsplit=1)[0][:80]


def outcome(exc: BaseException) -> str:
    """A refusal's kind for the fuzzer's feedback: its class and message without peer text."""
    return f"{type(exc).__name__}:{kind(str(exc))}"


def run_handshake(data: bytes) -> str:
    """C0/C1/C2 in pieces of the first byte's size; only HandshakeError may escape."""
    hs = ServerHandshake(random_bytes=lambda n: b"\x5a" * n)
    step, body = (data[0] or 1) * 16 if data else 16, data[1:]
    try:
        for i in range(0, len(body), step):
            hs.receive_data(body[i : i + step])
            assert len(hs.data_to_send()) <= 1 + 2 * 1536
            assert hs.buffered <= 2 * 1536 + step
    except HandshakeError as exc:
        return outcome(exc)
    return f"{hs.state.name} digest={hs.digest}"


def handshake_seeds() -> list[bytes]:
    from tests.ingest.rtmp.rtmp_client import digest_c0c1, plain_c0c1

    return [b"\x40" + plain_c0c1() + bytes(1536), b"\x03" + digest_c0c1(772) + b"x" * 1600]


def run_chunks(reader_cls: type, data: bytes) -> str:
    """Random chunk-stream bytes fed in pieces sized by the first byte; the reader's bounds hold."""
    reader = reader_cls(
        max_chunk_size=4096, max_message_size=2048, max_buffered=8192, max_chunk_streams=4
    )
    step, body = data[0] + 1 if data else 1, data[1:]
    types = set()
    try:
        for i in range(0, len(body), step):
            reader.feed(body[i : i + step])
            while (msg := reader.next_message()) is not None:
                assert len(msg[4]) <= 2048
                types.add(msg[2])
            assert reader.buffered <= 2 * 8192 + 4096 + 18
    except ChunkStreamError as exc:
        return outcome(exc)
    return f"message types {sorted(types)}"


def _erpmp_publish(fourcc: bytes, config: bytes) -> bytes:
    """A client stream after the handshake: connect, publish, an E-RTMP sequence start, frames."""
    client = Client()
    out = client.connect(fourCcList=["hvc1", "av01", "vp09"])
    out += client.publish_preamble() + client.publish()
    out += client.media(9, flv.ex_video_sequence_start_body(fourcc, config), 0)
    for n in range(4):
        cts = 33 * n if fourcc == b"hvc1" else 0
        body = flv.ex_video_frame_body(fourcc, bytes(range(n, n + 40)), n == 0, cts)
        out += client.media(9, body, 33 * n)
    return out + client.media(9, bytes((0x80 | 1 << 4 | 2,)) + fourcc, 200)  # sequence end


def session_seeds() -> list[bytes]:
    """Recorded OBS/ffmpeg publishes (after their handshake) and our E-RTMP publishes."""
    seeds = [
        vector(name)[0][HANDSHAKE_BYTES : HANDSHAKE_BYTES + 3000]
        for name in ("publish_plain", "publish_audio_only", "publish_chunk60000")
    ]
    seeds += [_erpmp_publish(fourcc, config) for fourcc, config in _video_configs()]
    return [b"\x10" + seed for seed in seeds]


def chunk_seeds() -> list[bytes]:
    return [b"\x7f" + seed[1:4000] for seed in session_seeds()]


def run_session(reader_cls: type, data: bytes) -> str:
    """A publisher after a good handshake: connect/publish accepted, then whatever it sends.
    The events, memory bound and refusals are the RTMP fuzz suite's (``pump``)."""
    step, body = (data[0] + 1) * 8 if data else 8, data[1:]
    pieces = [body[i : i + step] for i in range(0, len(body), step)]
    events = rtmp_fuzz.pump(reader_cls, [handshake(), *pieces])
    kinds = {type(e).__name__ if not isinstance(e, MediaUnit) else e.codec for e in events}
    closed = [kind(str(e)) for e in events if type(e).__name__ == "ConnectionClosed"]
    return f"{sorted(kinds)} {closed}"


AMF0_LIMITS = amf0.AMF0Limits(max_items=32, max_values=256)


def run_amf0(data: bytes) -> str:
    """A command or data message body; bounded values, or AMF0Error."""
    try:
        values = amf0.decode_all(data, AMF0_LIMITS)
    except RTMPProtocolError as exc:
        return outcome(exc)
    return " ".join(type(v).__name__ for v in values[:8])


def amf0_seeds() -> list[bytes]:
    client = Client()
    return [
        amf0.encode("connect", 1.0, {"app": "live", "fourCcList": ["hvc1", "av01"], "x": None}),
        amf0.encode("@setDataFrame", "onMetaData", {"width": 180.0, "height": 320.0}),
        client.connect()[12:],
    ]


def run_flv(parsers: Any, data: bytes) -> str:
    """A tag body: the first byte says video or audio. A unit's codec is one we named."""
    if not data:
        return "empty"
    parse = parsers.parse_video if data[0] & 1 else parsers.parse_audio
    try:
        unit = parse(data[1:], 1000, 0.0)
    except RTMPProtocolError as exc:
        return outcome(exc)
    if unit is None:
        return "none"
    assert unit.codec in {*flv.VIDEO_FOURCC.values(), *flv.AUDIO_FOURCC.values()}, unit
    return f"{unit.codec} config={unit.is_config} key={unit.keyframe}"


def flv_seeds() -> list[bytes]:
    seeds = [b"\x01" + flv.ex_video_sequence_start_body(f, c) for f, c in _video_configs()]
    seeds += [b"\x01" + flv.ex_video_frame_body(b"hvc1", b"\x00\x01frame", True, 33)]
    seeds += [
        b"\x01" + flv.avc_sequence_header_body(_avcc()),
        b"\x01" + flv.avc_video_body(b"x", 1),
    ]
    return [*seeds, b"\x00" + flv.aac_sequence_header_body(b"\x12\x10"), b"\x00\xaf\x01abc"]


# --- codec configuration records, as parsed when a publish starts ---


def _record(parse: Callable[[bytes], object], data: bytes) -> str:
    try:
        parse(data)
    except BitstreamError as exc:
        return outcome(exc)
    return "parsed"


def _demuxed_config(name: str) -> bytes:
    demuxer = TSDemuxer(clock=lambda: 0.0)
    demuxer.receive_data((INGEST_VECTORS / name).read_bytes()[: 188 * 200])
    while (event := demuxer.next_event()) is not TS_NEED_DATA:
        if isinstance(event, MediaUnit) and event.is_config and event.kind is MediaKind.VIDEO:
            return event.payload
    raise AssertionError(f"no video config in {name}")


@functools.cache
def _avcc() -> bytes:
    return (CODEC_VECTORS / "avcc_high_420_8bit.bin").read_bytes()


@functools.cache
def _hvcc() -> bytes:
    return _demuxed_config("ts_hevc_aac.ts")


@functools.cache
def _av1cs() -> list[bytes]:
    records = json.loads((CODEC_VECTORS / "av1_configs.json").read_text())
    return [bytes.fromhex(v["av1c"]) for v in records.values()]


@functools.cache
def _vp9_vectors() -> list[dict[str, str]]:
    return list(json.loads((CODEC_VECTORS / "vp9_configs.json").read_text()).values())


def _video_configs() -> list[tuple[bytes, bytes]]:
    vpcc = bytes.fromhex(_vp9_vectors()[0]["vpcc"])
    return [(b"hvc1", _hvcc()), (b"av01", _av1cs()[0]), (b"vp09", vpcc)]


def run_vp9(data: bytes) -> str:
    """vpcC when the first byte is even, else a keyframe's uncompressed header."""
    if not data:
        return "empty"
    if data[0] & 1:
        return _record(parse_keyframe_header, data[1:])
    return _record(Vp9Config.parse, data[1:])


def vp9_seeds() -> list[bytes]:
    vectors = _vp9_vectors()
    return [b"\x00" + bytes.fromhex(v["vpcc"]) for v in vectors] + [
        b"\x01" + bytes.fromhex(v["keyframe_head"]) for v in vectors
    ]


# --- MPEG-TS (SRT's payload) ---


def run_ts(data: bytes) -> str:
    """The TS fuzz suite's oracle (events, bounds), fed in pieces sized by the first byte."""
    step, body = (data[0] + 1) * 4 if data else 4, data[1:]
    return ts_fuzz.run([body[i : i + step] for i in range(0, len(body), step)])


def ts_seeds() -> list[bytes]:
    return [
        b"\x2e" + (INGEST_VECTORS / name).read_bytes()[: 188 * 60]
        for name in ("ts_h264_aac.ts", "ts_hevc_aac.ts", "ts_h264_wrap.ts")
    ]


# --- SRT: the stream id a caller sends ---


def run_srt_stream_id(data: bytes) -> str:
    """The caller's stream id: a publish request, or the refusal with its peer text cut short."""
    try:
        request = parse_stream_id(data)
    except StreamIdError as exc:
        assert len(str(exc)) < 200, exc
        return outcome(exc)
    assert request.key, request
    return f"stream id given={request.stream_id is not None}"


def srt_seeds() -> list[bytes]:
    return [b"#!::r=demo,m=publish,k=secret-key", b"publish:secret-key", b"#!::m=publish,k=x,u=y"]


# --- HTTP: the edge's request targets and Range, the origin's _HLS_* and token ---


def run_edge_request(data: bytes) -> str:
    """Request target, then a Range header after the first newline, as the edge reads them."""
    text = data.decode("utf-8", "surrogateescape")
    raw, _, header = text.partition("\n")
    try:
        target = parse_target(raw)
    except BadTarget as exc:
        assert exc.status in (400, 404)
        result = outcome(exc)
    else:
        result = f"{target.path.count('/')} {sorted(n for n, _ in target.params)}"
        assert ".." not in target.path and "//" not in target.path and "%" not in target.path
        assert target.upstream("tok").startswith(target.path)
    span = byte_range(header or None, 1 << 20)
    if span is not None and span != (1 << 20, 1 << 20):
        assert 0 <= span[0] <= span[1] < 1 << 20
    return f"{result} range={span is not None}"


def edge_seeds() -> list[bytes]:
    return [
        b"/hls/demo/180p/index.m3u8?_HLS_msn=101&_HLS_part=1&_HLS_skip=YES\nbytes=0-99",
        b"/hls/demo/180p/12.3.m4s?token=1.abc\nbytes=-500",
        b"/vod/rec1/master.m3u8\nbytes=10-",
        b"/static/%2e%2e/x\n",
    ]


def run_origin_query(data: bytes) -> str:
    """A media playlist request's query: blocking-reload directives and the playback token."""
    try:  # as aiohttp hands them over: yarl's path and percent-decoded query
        url = URL(data.decode("latin-1"))
    except ValueError as exc:
        return outcome(exc)
    path, query = url.path, url.query
    try:
        request = parse_reload(query, live_state(), Fraction(1))
    except BadReloadRequest as exc:
        assert str(exc)
        result = outcome(exc)
    else:
        result = f"msn={request.msn is not None} part={request.part is not None}"
        for number in (request.msn, request.part):
            assert number is None or 0 <= number < 10**MAX_DIGITS
        assert request.msn is None or request.msn <= 103  # S 6.2.5.2: at most last MSN + 2
    why = access.verify("secret", path, query.get(access.TOKEN_PARAM), 1e9)
    assert why is None or len(why) < 100
    return f"{result} {why}"


def origin_seeds() -> list[bytes]:
    token = access.mint("secret", "demo", 2_000_000_000)
    return [
        b"/hls/demo/180p/index.m3u8?_HLS_msn=102&_HLS_part=1",
        b"/hls/demo/180p/index.m3u8?_HLS_msn=101&_HLS_skip=v2",
        f"/hls/demo/180p/index.m3u8?{access.TOKEN_PARAM}={token}".encode(),
    ]


# --- WHIP: the offer's SDP ---


@functools.cache
def _offer() -> str:
    from benchmarks.harness.whip_client import make_offer, make_offerer

    async def offer() -> str:
        pc = make_offerer("H264", True)
        try:
            return await make_offer(pc)
        finally:
            await pc.close()

    return asyncio.run(offer())


def run_whip_sdp(data: bytes) -> str:
    from ingest.whip.endpoint import check_offer
    from ingest.whip.session import OfferError

    try:
        check_offer(data.decode("utf-8", "surrogateescape"))
    except OfferError as exc:
        assert exc.status in (400, 422)
        assert len(str(exc)) < 400  # peer text is cut short in the reason
        return outcome(exc)
    return "answerable"


def whip_seeds() -> list[bytes]:
    return [_offer().encode(), b"v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n"]


# --- the registry ---

TARGETS: dict[str, Target] = {
    t.name: t
    for t in (
        Target("rtmp_handshake", run_handshake, handshake_seeds, 4096),
        Target(
            "rtmp_chunk_py", functools.partial(run_chunks, PyChunkStreamReader), chunk_seeds, 4096
        ),
        Target(
            "rtmp_chunk_c",
            functools.partial(run_chunks, CChunkStreamReader),
            chunk_seeds,
            4096,
            needs_native=True,
        ),
        Target(
            "rtmp_session_py",
            functools.partial(run_session, PyChunkStreamReader),
            session_seeds,
            3000,
        ),
        Target(
            "rtmp_session_c",
            functools.partial(run_session, CChunkStreamReader),
            session_seeds,
            3000,
            needs_native=True,
        ),
        Target("rtmp_amf0", run_amf0, amf0_seeds, 2048),
        Target("flv_tag", functools.partial(run_flv, flv), flv_seeds, 2048),
        Target("flv_tag_c", functools.partial(run_flv, c_tags), flv_seeds, 2048, needs_native=True),
        Target("avcc", functools.partial(_record, AvcConfig.parse), lambda: [_avcc()], 1024),
        Target("hvcc", functools.partial(_record, HevcConfig.parse), lambda: [_hvcc()], 1024),
        Target("av1c", functools.partial(_record, Av1Config.parse), _av1cs, 1024),
        Target("vp9_vpcc_keyframe", run_vp9, vp9_seeds, 256),
        Target("mpegts", run_ts, ts_seeds, 188 * 64),
        Target("srt_stream_id", run_srt_stream_id, srt_seeds, 1024),
        Target("edge_request", run_edge_request, edge_seeds, 1024),
        Target("origin_query", run_origin_query, origin_seeds, 1024),
        Target("whip_sdp", run_whip_sdp, whip_seeds, 4096),
    )
}

"""The MPEG-TS demuxer on ffmpeg-made vectors (cross-checked with PyAV) and hand-built damage."""

from __future__ import annotations

import random
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import pytest

from ingest.codecs import (
    AvcConfig,
    HevcConfig,
    annexb_to_avcc,
    annexb_to_hevc_sample,
    iter_annexb,
    parse_audio_specific_config,
)
from ingest.media import MediaKind, MediaUnit
from ingest.mpegts import (
    NEED_DATA,
    DataDiscarded,
    ElementaryStream,
    MPEGTSError,
    ProgramChanged,
    Resynced,
    StreamEnded,
    TSDemuxer,
    TSLimits,
    UnsupportedStreamError,
)

from . import tsbuild as ts

VECTORS = Path(__file__).parent.parent / "vectors"
NAMES = ["ts_h264_aac", "ts_hevc_aac", "ts_h264_wrap"]
VIDEO, AUDIO = 0x100, 0x101


def vector(name: str) -> bytes:
    return (VECTORS / f"{name}.ts").read_bytes()


def demux(pieces: list[bytes], limits: TSLimits | None = None, end: bool = True) -> list[Any]:
    """Feed ``pieces`` (draining after each), then the end; every event but the last StreamEnded."""
    demuxer = TSDemuxer(limits, clock=lambda: 0.0)
    events: list[Any] = []
    for piece in [*pieces, b""] if end else pieces:
        demuxer.receive_data(piece)
        while (event := demuxer.next_event()) is not NEED_DATA:
            if isinstance(event, StreamEnded):
                return events
            events.append(event)
    return events


def media(events: list[Any], kind: MediaKind | None = None) -> list[MediaUnit]:
    return [e for e in events if isinstance(e, MediaUnit) and (kind is None or e.kind is kind)]


def pyav_packets(name: str) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {"video": [], "audio": []}
    with av.open(str(VECTORS / f"{name}.ts")) as container:
        for packet in container.demux():
            if packet.size:
                out[packet.stream.type].append(packet)
    return out


@pytest.mark.parametrize("name", NAMES)
def test_same_units_as_pyav(name: str) -> None:
    events = demux([vector(name)])
    assert isinstance(events[0], ProgramChanged)
    theirs = pyav_packets(name)
    offset = 1 << 33 if name.endswith("wrap") else 0  # FFmpeg shows the pre-wrap part negative
    video = media(events, MediaKind.VIDEO)
    config, frames = video[0], video[1:]
    assert config.is_config and not any(u.is_config for u in frames)
    assert len(frames) == len(theirs["video"]) == 60
    hevc = name.startswith("ts_hevc")
    for unit, packet in zip(frames, theirs["video"], strict=True):
        assert unit.timebase == Fraction(1, 90000) == packet.time_base
        assert (unit.pts - offset, unit.dts - offset) == (packet.pts, packet.dts)
        assert unit.keyframe == packet.is_keyframe
        if hevc:
            assert unit.payload == annexb_to_hevc_sample(list(iter_annexb(bytes(packet))))
        else:
            assert unit.payload == annexb_to_avcc(bytes(packet))
    audio = media(events, MediaKind.AUDIO)
    assert audio[0].is_config
    asc = parse_audio_specific_config(audio[0].payload)
    assert (asc.object_type, asc.sample_rate, asc.channels) == (2, 48000, 2)
    assert len(audio) - 1 == len(theirs["audio"])
    for unit, packet in zip(audio[1:], theirs["audio"], strict=True):
        assert unit.pts - offset == unit.dts - offset == packet.pts
        assert unit.payload == bytes(packet)[7:]  # ffmpeg keeps the ADTS header, we strip it


@pytest.mark.parametrize("name", ["ts_h264_aac", "ts_hevc_aac"])
def test_units_decode_with_their_config(name: str) -> None:
    """The derived avcC/hvcC and AudioSpecificConfig make the units decodable as they are."""
    units = media(demux([vector(name)]))
    pictures = samples = 0
    decoders: dict[MediaKind, Any] = {}
    for unit in units:
        if unit.is_config:
            decoder = av.CodecContext.create(unit.codec, "r")
            decoder.extradata = unit.payload
            decoders[unit.kind] = decoder
            continue
        for frame in decoders[unit.kind].decode(av.Packet(unit.payload)):
            if unit.kind is MediaKind.VIDEO:
                assert (frame.width, frame.height) == (180, 320)
                pictures += 1
            else:
                samples += frame.samples
    pictures += len(decoders[MediaKind.VIDEO].decode(None))
    assert pictures == 60
    assert samples >= 2 * 48000 - 1024
    config = units[0].payload
    if name.startswith("ts_hevc"):
        assert config[0] == 1 and (config[22] & 3) == 3  # hvcC version 1, 4-byte NAL lengths
    else:
        assert AvcConfig.parse(config).sps_info is not None


@pytest.mark.parametrize("name", NAMES)
def test_whole_byte_by_byte_and_random_splits_agree(name: str) -> None:
    data = vector(name)
    whole = demux([data])
    assert demux([data[i : i + 1] for i in range(len(data))]) == whole
    rng = random.Random(name)
    for _ in range(3):
        cuts = sorted(rng.sample(range(1, len(data)), 200))
        pieces = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]
        assert demux(pieces) == whole


def test_hevc_config_matches_ffmpeg_parameter_sets() -> None:
    units = media(demux([vector("ts_hevc_aac")]))
    with av.open(str(VECTORS / "ts_hevc_aac.ts")) as container:
        first = next(p for p in container.demux(video=0) if p.size)
    ours = HevcConfig.from_annexb(bytes(first))
    assert units[0].payload == ours.to_bytes()
    assert (ours.sps_info.width, ours.sps_info.height) == (180, 320)
    assert ours.codec_string == "hvc1.1.L60"


# --- damage, on the real vector ---------------------------------------------------------------


def test_garbage_between_packets_resyncs_and_loses_nothing() -> None:
    data = vector("ts_h264_aac")
    cut = 188 * 300
    events = demux([data[:cut] + b"\x00\x47garbage" * 7 + data[cut:]])
    resyncs = [e for e in events if isinstance(e, Resynced)]
    assert resyncs == [Resynced(63)]
    assert not [e for e in events if isinstance(e, DataDiscarded)]
    assert media(events) == media(demux([data]))


def test_bad_sync_byte_drops_that_packet_and_its_pes() -> None:
    data = bytearray(vector("ts_h264_aac"))
    clean = demux([bytes(data)])
    # the 301st packet: find one in the middle of a video PES (no PUSI)
    index = next(i for i in range(300, 400) if data[i * 188 + 1] == 0x01 and data[i * 188 + 2] == 0)
    cc = data[index * 188 + 3] & 0x0F
    data[index * 188] = 0x00
    events = demux([bytes(data)])
    damage = [e for e in events if isinstance(e, Resynced | DataDiscarded)]
    assert damage == [
        Resynced(188),
        DataDiscarded(VIDEO, f"continuity counter gap: expected {cc}, got {(cc + 1) & 15}"),
    ]
    lost = [u for u in media(clean) if u not in media(events)]
    assert len(lost) == 1 and lost[0].kind is MediaKind.VIDEO
    assert len(media(events)) == len(media(clean)) - 1


def test_only_garbage_is_refused_after_the_scan_limit() -> None:
    demuxer = TSDemuxer(TSLimits(max_resync_scan=4096))
    demuxer.receive_data(bytes(range(256)) * 15)
    assert demuxer.next_event() is NEED_DATA
    demuxer.receive_data(bytes(range(256)) * 2)
    with pytest.raises(
        MPEGTSError, match=r"no MPEG-TS sync \(0x47 every 188 bytes\) in 4\d{3} bytes"
    ):
        demuxer.next_event()
    assert demuxer.buffered < 1024


def test_random_bytes_are_refused_despite_false_locks() -> None:
    """Random bytes hold a 0x47 pair 188 apart now and then: sync must also hold after it."""
    noise = random.Random(7).randbytes(200_000)
    with pytest.raises(MPEGTSError, match="no MPEG-TS sync"):
        demux([noise[i : i + 1316] for i in range(0, len(noise), 1316)])


def test_damage_after_a_held_sync_starts_the_count_again() -> None:
    data = vector("ts_h264_aac")
    garbage = b"\x00" * 3000  # under the limit each time, far over it in total
    pieces = [data[i : i + 188 * 20] + garbage for i in range(0, 188 * 400, 188 * 20)]
    events = demux(pieces, TSLimits(max_resync_scan=4096))
    assert [e.skipped for e in events if isinstance(e, Resynced)] == [3000] * 19


# --- damage, hand-built ----------------------------------------------------------------------


def program(streams: list[tuple[int, int]] | None = None, version: int = 0) -> bytes:
    streams = [(0x1B, VIDEO), (0x0F, AUDIO)] if streams is None else streams
    return ts.psi_packet(0, ts.pat({1: 0x1000})) + ts.psi_packet(
        0x1000, ts.pmt(1, streams, version), cc=version
    )


FRAMES = [ts.adts(bytes([i]) * 20) for i in range(3)]


def test_adts_frames_get_consecutive_timestamps() -> None:
    events = demux([program(), *ts.packetize(AUDIO, ts.pes(0xC0, b"".join(FRAMES), 9000))])
    audio = media(events)
    assert [u.pts for u in audio] == [9000, 9000, 10920, 12840]
    assert [u.payload for u in audio[1:]] == [f[7:] for f in FRAMES]
    assert audio[0].payload == bytes([0x11, 0x90])  # AAC-LC, 48 kHz, stereo


def test_adts_frame_split_across_pes_packets() -> None:
    data = b"".join(FRAMES)
    first, second = ts.pes(0xC0, data[:40], 9000), ts.pes(0xC0, data[40:], 12000)
    events = demux([program(), *ts.packetize(AUDIO, first), *ts.packetize(AUDIO, second, cc=1)])
    assert [u.pts for u in media(events)[1:]] == [9000, 10920, 12000]


def test_truncated_pes_is_discarded() -> None:
    whole = ts.pes(0xC0, b"".join(FRAMES) * 3, 9000)
    packets = ts.packetize(AUDIO, whole)
    assert len(packets) == 2
    # the second packet of the PES never comes: the next PES starts with cc continuing
    events = demux(
        [program(), packets[0], *ts.packetize(AUDIO, ts.pes(0xC0, FRAMES[0], 18000), cc=1)]
    )
    assert [e for e in events if isinstance(e, DataDiscarded)] == [
        DataDiscarded(AUDIO, f"PES truncated: {184 - 6} of {len(whole) - 6} bytes")
    ]
    assert [u.pts for u in media(events)] == [18000, 18000]


def test_continuity_gap_discards_the_pes_and_counts() -> None:
    body = ts.pes(0xE0, b"\x00\x00\x00\x01\x09\xf0" * 100, 9000, bounded=False)
    packets = ts.packetize(VIDEO, body)
    demuxer = TSDemuxer()
    demuxer.receive_data(program() + packets[0] + packets[2])
    events = []
    while (e := demuxer.next_event()) is not NEED_DATA:
        events.append(e)
    assert events[1:] == [DataDiscarded(VIDEO, "continuity counter gap: expected 1, got 2")]
    assert demuxer.stats.cc_errors == 1 and demuxer.stats.discarded == 1


def test_duplicate_packet_and_signalled_discontinuity_are_not_gaps() -> None:
    frames = ts.pes(0xC0, FRAMES[0], 9000)
    dup = ts.packetize(AUDIO, frames)[0]
    jump = ts.packet(AUDIO, frames, start=True, cc=9, af_flags=0x80)  # discontinuity_indicator
    events = demux([program(), dup, dup, jump])
    assert not [e for e in events if isinstance(e, DataDiscarded)]
    assert len(media(events)) == 3  # config + two frames


def test_pat_or_pmt_with_bad_crc_is_discarded() -> None:
    section = bytearray(ts.pmt(1, [(0x1B, VIDEO)]))
    section[-1] ^= 0xFF
    events = demux([ts.psi_packet(0, ts.pat({1: 0x1000})), ts.psi_packet(0x1000, bytes(section))])
    assert events == [DataDiscarded(0x1000, "table 0x02 fails its CRC32")]


def test_pmt_change_mid_stream_switches_streams() -> None:
    h264 = [(0x1B, VIDEO), (0x0F, AUDIO)]
    moved = [(0x1B, VIDEO), (0x0F, 0x102)]
    events = demux(
        [
            program(h264),
            *ts.packetize(AUDIO, ts.pes(0xC0, FRAMES[0], 9000)),
            ts.psi_packet(0x1000, ts.pmt(1, moved, version=1), cc=1),
            *ts.packetize(AUDIO, ts.pes(0xC0, FRAMES[1], 11000), cc=1),  # now ignored
            *ts.packetize(0x102, ts.pes(0xC0, FRAMES[2], 13000)),
        ]
    )
    changes = [e for e in events if isinstance(e, ProgramChanged)]
    assert [c.version for c in changes] == [0, 1]
    assert changes[1].streams[1] == ElementaryStream(0x102, 0x0F, "aac")
    assert [(u.pts, u.is_config) for u in media(events)] == [
        (9000, True),
        (9000, False),
        (13000, True),
        (13000, False),
    ]


def test_pid_flood_costs_a_counter() -> None:
    flood = [
        ts.packet(pid, b"\x00" * 184, start=True)
        for pid in range(0x20, 0x1FF0, 3)
        if pid not in (VIDEO, AUDIO, 0x1000)
    ]
    demuxer = TSDemuxer()
    demuxer.receive_data(program() + b"".join(flood))
    while demuxer.next_event() is not NEED_DATA:
        pass
    assert demuxer.stats.ignored_packets == len(flood)
    assert demuxer.buffered == 0


@pytest.mark.parametrize(
    ("streams", "message"),
    [
        ([(0x02, VIDEO), (0x0F, AUDIO)], "MPEG-2 video is not supported: send H.264 or HEVC"),
        ([(0x1B, VIDEO), (0x81, AUDIO)], "AC-3 is not supported: send AAC"),
        ([(0x06, VIDEO)], r"no H.264, HEVC or AAC stream \(stream types 0x06\)"),
    ],
)
def test_unsupported_streams_are_refused(streams: list[tuple[int, int]], message: str) -> None:
    with pytest.raises(UnsupportedStreamError, match=message):
        demux([program(streams)])


def test_oversized_pes_is_dropped() -> None:
    body = ts.pes(0xE0, b"\x00\x00\x01\x09" * 200, 9000, bounded=False)
    events = demux([program(), *ts.packetize(VIDEO, body)], TSLimits(max_pes_size=500))
    assert DataDiscarded(VIDEO, "PES larger than 500 bytes") in events


def test_transport_error_and_scrambling_drop_the_pes() -> None:
    body = ts.pes(0xC0, FRAMES[0] * 10, 9000)
    first, second = ts.packetize(AUDIO, body)
    bad = ts.packet(AUDIO, second[4:], cc=1, tei=True)
    events = demux([program(), first, bad])
    assert DataDiscarded(AUDIO, "transport_error_indicator set") in events
    scrambled = ts.packet(AUDIO, second[4:], cc=1, scrambled=True)
    events = demux([program(), first, scrambled])
    assert DataDiscarded(AUDIO, "scrambled payload (transport_scrambling_control set)") in events


def test_video_before_parameter_sets_waits_for_them() -> None:
    """A publisher joined mid-GOP: frames before the first SPS/PPS are counted, not sent."""
    data = vector("ts_h264_aac")
    packets = [data[i : i + 188] for i in range(0, len(data), 188)]
    starts = [i for i, p in enumerate(packets) if p[1] == 0x41 and p[2] == 0x00]  # PUSI, PID 0x100
    joined = b"".join(packets[: starts[0]] + packets[starts[1] :])
    demuxer = TSDemuxer(clock=lambda: 0.0)
    demuxer.receive_data(joined + b"")
    demuxer.receive_data(b"")
    events = []
    while not isinstance(e := demuxer.next_event(), StreamEnded):
        events.append(e)
    clean = media(demux([data]), MediaKind.VIDEO)
    video = media(events, MediaKind.VIDEO)
    assert demuxer.stats.frames_before_config == 29  # the rest of the first 30-frame GOP
    assert video[0].is_config and video[1].keyframe and video[1] == clean[31]
    assert not [e for e in events if isinstance(e, DataDiscarded)]

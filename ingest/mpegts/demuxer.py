"""Sans-I/O MPEG-TS demuxer (ISO/IEC 13818-1): bytes in, media units and events out.

``receive_data(bytes)`` buffers; ``next_event()`` returns a :class:`~ingest.media.MediaUnit`, an
event from :mod:`ingest.mpegts.events` or ``NEED_DATA``; ``receive_data(b"")`` ends the stream.
Only :class:`~ingest.mpegts.errors.MPEGTSError` escapes. Damage that TS is built to survive is
repaired and reported: a bad sync byte resyncs on two sync bytes 188 apart (``Resynced``), a
continuity-counter gap, a truncated or oversized PES and a bad CRC drop that PES or section
(``DataDiscarded``). Memory is bounded: state exists only for the PAT, one PMT and the selected
video and audio PIDs (a PID flood costs one counter), a PES is at most ``max_pes_size`` bytes.

One program is followed (the first in the PAT), with its first H.264/HEVC video and first ADTS
AAC audio stream. A PES carries one video access unit, as every encoder we know writes it.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction

from ingest.codecs import (
    MAX_ADTS_FRAME,
    AacError,
    AvcConfig,
    BitstreamError,
    HevcConfig,
    adts_frame_length,
    annexb_to_hevc_sample,
    audio_specific_config,
    avcc_from_nals,
    iter_annexb,
    parse_adts_frame,
)
from ingest.codecs.hevc import IRAP_TYPES, nal_type
from ingest.media import MediaKind, MediaUnit
from ingest.mpegts.errors import MPEGTSError, UnsupportedStreamError
from ingest.mpegts.events import (
    NEED_DATA,
    DataDiscarded,
    ElementaryStream,
    ProgramChanged,
    Resynced,
    StreamEnded,
)
from ingest.mpegts.pes import PESError, parse_pes_header
from ingest.mpegts.psi import (
    MAX_SECTION,
    TABLE_PAT,
    TABLE_PMT,
    SectionError,
    parse_pat,
    parse_pmt,
    parse_section,
)

PACKET_SIZE = 188
SYNC_BYTE = 0x47
PID_PAT = 0x0000
PID_NULL = 0x1FFF
#: PTS/DTS count a 90 kHz clock (§2.4.3.7).
TS_CLOCK = Fraction(1, 90000)
_WRAP = 1 << 33

#: Table 2-34 stream types we carry.
STREAM_CODECS = {0x1B: "h264", 0x24: "hevc", 0x0F: "aac"}
#: Media stream types we recognise but do not carry: refused with their name.
UNSUPPORTED_VIDEO = {
    0x01: "MPEG-1 video",
    0x02: "MPEG-2 video",
    0x10: "MPEG-4 Visual",
    0x20: "H.264 MVC",
    0x33: "VVC",
    0x42: "AVS",
    0xD1: "Dirac",
    0xEA: "VC-1",
}
UNSUPPORTED_AUDIO = {
    0x03: "MPEG-1 audio",
    0x04: "MPEG-2 audio",
    0x11: "AAC in LATM",
    0x1C: "raw MPEG-4 audio",
    0x80: "LPCM",
    0x81: "AC-3",
    0x82: "DTS",
    0x87: "E-AC-3",
}
_H264_PARAMETER_SETS = {7: "sps", 8: "pps"}
_HEVC_PARAMETER_SETS = {32: "vps", 33: "sps", 34: "pps"}

MAX_PES_SIZE = 8 << 20  # one 4K keyframe fits
#: Packets in a row after which sync counts as held: random bytes lock falsely on a 0x47 pair
#: now and then (1 in 256 candidates), never for 8 packets (2^-64).
STABLE_PACKETS = 8
MAX_RESYNC_SCAN = 64 << 10


@dataclass(frozen=True, slots=True)
class TSLimits:
    """What one publisher can make the demuxer hold or scan."""

    max_pes_size: int = MAX_PES_SIZE
    #: Bytes skipped before sync holds again (STABLE_PACKETS in a row): beyond, not MPEG-TS.
    max_resync_scan: int = MAX_RESYNC_SCAN


@dataclass(slots=True)
class TSStats:
    """Counters for the status page and tests."""

    packets: int = 0
    resyncs: int = 0
    bytes_skipped: int = 0
    cc_errors: int = 0
    discarded: int = 0  # PES packets and sections dropped (each also a DataDiscarded event)
    ignored_packets: int = 0  # PIDs outside the followed program: a PID flood lands here
    duplicates: int = 0
    frames_before_config: int = 0


class _Unwrap33:
    """33-bit PTS/DTS → a 64-bit count that keeps going past the wrap (every 26.5 h)."""

    __slots__ = ("_last", "_value")

    def __init__(self) -> None:
        self._last: int | None = None
        self._value = 0

    def __call__(self, raw: int) -> int:
        if self._last is None:
            self._value = raw
        else:
            step = (raw - self._last) % _WRAP
            self._value += step - _WRAP if step >= _WRAP // 2 else step
        self._last = raw
        return self._value


@dataclass(slots=True)
class _Section:
    """PSI PID state: continuity and the section being assembled."""

    cc: int | None = None
    data: bytearray | None = None


Emit = Callable[[object], None]


@dataclass(slots=True)
class _Pes:
    """Elementary-stream PID state: continuity and the PES being assembled."""

    stream: ElementaryStream
    cc: int | None = None
    data: bytearray | None = None  # None: waiting for a payload_unit_start_indicator
    config: bytes | None = None  # the last configuration record sent
    params: dict[str, tuple[bytes, ...]] = field(default_factory=dict)
    audio_pending: bytes = b""  # an ADTS frame continued in the next PES
    audio_next: int | None = None  # pts of the frame after the last one sent


class TSDemuxer:
    """One publisher's MPEG-TS byte stream → media units (sans-I/O)."""

    def __init__(self, limits: TSLimits | None = None, clock: Callable[[], float] = time.time):
        self.limits = limits or TSLimits()
        self.stats = TSStats()
        self._clock = clock
        self._buf = bytearray()
        self._pos = 0
        self._locked = False
        self._skipping = 0  # bytes skipped since the last lock (reported in Resynced)
        self._unsynced = 0  # bytes skipped since sync last held for STABLE_PACKETS
        self._stable = 0  # packets read since the last lock
        self._eof = False
        self._ended = False
        self._events: collections.deque[object] = collections.deque()
        self._pids: dict[int, _Section | _Pes] = {PID_PAT: _Section()}
        self._program: int | None = None
        self._pmt_pid: int | None = None
        self._pmt_version: int | None = None
        self._selected: tuple[ElementaryStream, ...] = ()
        self._unwrap = _Unwrap33()

    # --- public ---------------------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Buffer bytes from the publisher; ``b""`` means it ended."""
        if self._eof and data:
            raise MPEGTSError("data after the end of the stream")
        if not data:
            self._eof = True
        self._buf += data

    def next_event(self) -> object:
        """The next media unit or event, ``NEED_DATA``, or ``StreamEnded`` once ended."""
        while not self._events and self._step():
            pass
        if self._events:
            return self._events.popleft()
        if self._eof:
            if not self._ended:
                self._ended = True
                self._finish()
                if self._events:
                    return self._events.popleft()
            return StreamEnded()
        return NEED_DATA

    @property
    def buffered(self) -> int:
        """Bytes held: unparsed input, PES and sections in assembly, carried audio."""
        held = len(self._buf) - self._pos
        for state in self._pids.values():
            held += len(state.data or b"")
            if isinstance(state, _Pes):
                held += len(state.audio_pending)
        return held

    @property
    def streams(self) -> tuple[ElementaryStream, ...]:
        """The video and audio streams being followed."""
        return self._selected

    # --- packets --------------------------------------------------------------------------

    def _step(self) -> bool:
        """Handle one packet (or one resync attempt); False when more bytes are needed."""
        buf, pos = self._buf, self._pos
        if pos > 1 << 16 or pos == len(buf):
            del buf[:pos]
            self._pos = pos = 0
        if len(buf) - pos < PACKET_SIZE:
            if self._eof and len(buf) > pos:
                self._skip(len(buf) - pos)
                self._pos = len(buf)
            return False
        if buf[pos] != SYNC_BYTE or not self._locked:
            return self._resync()
        self._pos = pos + PACKET_SIZE
        self._stable += 1
        if self._stable == STABLE_PACKETS:
            self._unsynced = 0
        self._packet(bytes(buf[pos : pos + PACKET_SIZE]))
        return True

    def _resync(self) -> bool:
        """Find two sync bytes 188 apart (one at the end of the stream); skip what precedes."""
        buf, pos = self._buf, self._pos
        last = len(buf) - PACKET_SIZE  # the last position a whole packet can start at
        found = -1
        i = buf.find(SYNC_BYTE, pos, last + 1)
        while i >= 0:
            if i + PACKET_SIZE < len(buf):
                if buf[i + PACKET_SIZE] == SYNC_BYTE:
                    found = i
                    break
            elif self._eof:
                found = i
                break
            else:
                break  # confirm it when more bytes come
            i = buf.find(SYNC_BYTE, i + 1, last + 1)
        if found < 0:
            stop = i if i >= 0 else last + 1
            self._skip(stop - pos)
            self._pos = stop
            if self._eof:
                self._skip(len(buf) - stop)
                self._pos = len(buf)
            return False
        self._skip(found - pos)
        self._pos = found
        self._locked = True
        self._stable = 0
        if self._skipping:
            if self.stats.packets:  # garbage before the first packet is no resync
                self.stats.resyncs += 1
                self._events.append(Resynced(self._skipping))
            self._skipping = 0
        return True

    def _skip(self, n: int) -> None:
        if n <= 0:
            return
        self._locked = False
        self._skipping += n
        self._unsynced += n
        self.stats.bytes_skipped += n
        if self._unsynced > self.limits.max_resync_scan:
            raise MPEGTSError(f"no MPEG-TS sync (0x47 every 188 bytes) in {self._unsynced} bytes")

    def _packet(self, pkt: bytes) -> None:
        self.stats.packets += 1
        pid = (pkt[1] & 0x1F) << 8 | pkt[2]
        if pid == PID_NULL:
            return
        state = self._pids.get(pid)
        if state is None:
            self.stats.ignored_packets += 1
            return
        if pkt[1] & 0x80:
            self._drop(pid, state, "transport_error_indicator set")
            return
        control = pkt[3] >> 4 & 0x03
        if control == 0:
            self._drop(pid, state, "reserved adaptation_field_control 00")
            return
        offset = 4
        discontinuity = False
        if control & 2:
            af_length = pkt[4]
            if af_length > (183 if control == 2 else 182):
                self._drop(pid, state, f"adaptation_field_length {af_length} too long")
                return
            discontinuity = af_length > 0 and bool(pkt[5] & 0x80)
            offset = 5 + af_length
        if not control & 1:
            return  # adaptation field only (PCR, stuffing): the counter does not advance
        cc = pkt[3] & 0x0F
        # §2.4.3.3: the counter advances per payload packet; one duplicate may be sent.
        if state.cc is not None and not discontinuity:
            if cc == state.cc:
                self.stats.duplicates += 1
                return
            expected = (state.cc + 1) & 0x0F
            if cc != expected:
                self.stats.cc_errors += 1
                self._drop(pid, state, f"continuity counter gap: expected {expected}, got {cc}")
        state.cc = cc
        if pkt[3] & 0xC0:
            self._drop(pid, state, "scrambled payload (transport_scrambling_control set)")
            return
        payload = pkt[offset:]
        if isinstance(state, _Section):
            self._section_payload(pid, state, payload, bool(pkt[1] & 0x40))
        else:
            self._pes_payload(state, payload, bool(pkt[1] & 0x40))

    def _drop(self, pid: int, state: _Section | _Pes, reason: str) -> None:
        """Discard what ``pid`` was assembling (if anything), with a reason."""
        if state.data is None:
            return
        state.data = None
        self._discard(pid, reason)

    def _discard(self, pid: int, reason: str) -> None:
        self.stats.discarded += 1
        self._events.append(DataDiscarded(pid, reason))

    # --- PSI ------------------------------------------------------------------------------

    def _section_payload(self, pid: int, state: _Section, payload: bytes, start: bool) -> None:
        if start:
            pointer = payload[0]
            if 1 + pointer > len(payload):
                self._drop(pid, state, f"pointer_field {pointer} past the packet")
                return
            if state.data is not None:
                state.data += payload[1 : 1 + pointer]
                self._sections(pid, state)
                if state.data:
                    self._drop(pid, state, "section truncated by the next one")
            state.data = bytearray(payload[1 + pointer :])
        elif state.data is None:
            return
        else:
            state.data += payload
        self._sections(pid, state)

    def _sections(self, pid: int, state: _Section) -> None:
        """Handle every complete section at the head of ``state.data``."""
        data = state.data
        while data:
            if data[0] == 0xFF:  # stuffing: the rest of the packet
                state.data = None
                return
            if len(data) < 3:
                return
            total = 3 + ((data[1] & 0x0F) << 8 | data[2])
            if total > MAX_SECTION:
                self._drop(pid, state, f"section of {total} bytes exceeds {MAX_SECTION}")
                return
            if len(data) < total:
                return
            section = bytes(data[:total])
            del data[:total]
            try:
                self._table(pid, section)
            except SectionError as exc:
                self._discard(pid, str(exc))
            if state is not self._pids.get(pid):
                return  # the PAT moved the PMT elsewhere: this state is gone

    def _table(self, pid: int, data: bytes) -> None:
        if pid == PID_PAT and data[0] == TABLE_PAT:
            section = parse_section(data)
            if section.current:
                self._on_pat(parse_pat(section.body))
        elif pid == self._pmt_pid and data[0] == TABLE_PMT:
            section = parse_section(data)
            if section.current and section.table_id_extension == self._program:
                self._on_pmt(section.version, parse_pmt(section.body))

    def _on_pat(self, programs: dict[int, int]) -> None:
        if not programs:
            return
        number = self._program if self._program in programs else next(iter(programs))
        pmt_pid = programs[number]
        if pmt_pid in (PID_PAT, PID_NULL):
            raise SectionError(f"PAT maps program {number} to reserved PID 0x{pmt_pid:04x}")
        if (number, pmt_pid) == (self._program, self._pmt_pid):
            return
        if self._pmt_pid is not None:
            self._pids.pop(self._pmt_pid, None)
        self._select(())
        self._program, self._pmt_pid, self._pmt_version = number, pmt_pid, None
        self._pids[pmt_pid] = _Section()

    def _on_pmt(self, version: int, entries: list[tuple[int, int]]) -> None:
        if version == self._pmt_version:
            return
        streams = [ElementaryStream(pid, st, STREAM_CODECS.get(st)) for st, pid in entries]
        video = next((s for s in streams if s.codec in ("h264", "hevc")), None)
        audio = next((s for s in streams if s.codec == "aac"), None)
        for chosen, unsupported, want in (
            (video, UNSUPPORTED_VIDEO, "H.264 or HEVC"),
            (audio, UNSUPPORTED_AUDIO, "AAC (ADTS)"),
        ):
            names = [unsupported[s.stream_type] for s in streams if s.stream_type in unsupported]
            if chosen is None and names:
                raise UnsupportedStreamError(f"{', '.join(names)} is not supported: send {want}")
        selected = tuple(s for s in (video, audio) if s is not None)
        if not selected:
            raise UnsupportedStreamError(
                "the program has no H.264, HEVC or AAC stream (stream types "
                + ", ".join(f"0x{s.stream_type:02x}" for s in streams)
                + ")"
            )
        pids = {s.pid for s in selected}
        if len(pids) < len(selected) or pids & {PID_PAT, PID_NULL, self._pmt_pid}:
            raise SectionError("PMT assigns one PID twice or a reserved PID")
        self._pmt_version = version
        if selected != self._selected:
            self._select(selected)
            assert self._program is not None
            self._events.append(ProgramChanged(self._program, version, selected))

    def _select(self, streams: tuple[ElementaryStream, ...]) -> None:
        """Follow ``streams``: PES in progress on streams that go are emitted first."""
        for old in self._selected:
            if old not in streams:
                state = self._pids.pop(old.pid, None)
                if isinstance(state, _Pes):
                    self._end_pes(state)
        for new in streams:
            if new not in self._selected:
                self._pids[new.pid] = _Pes(new)
        self._selected = streams

    # --- PES ------------------------------------------------------------------------------

    def _pes_payload(self, state: _Pes, payload: bytes, start: bool) -> None:
        if start:
            if state.data is not None:
                self._complete_pes(state)
            state.data = bytearray()
        elif state.data is None:
            return
        if len(state.data) + len(payload) > self.limits.max_pes_size:
            self._drop(state.stream.pid, state, f"PES larger than {self.limits.max_pes_size} bytes")
            return
        state.data += payload
        data = state.data
        if len(data) >= 6:
            declared = data[4] << 8 | data[5]
            if declared and len(data) >= 6 + declared:
                del data[6 + declared :]  # bytes past the PES packet are stuffing
                self._complete_pes(state)

    def _end_pes(self, state: _Pes) -> None:
        """The stream ends or leaves the program: a PES of unbounded length is complete."""
        if state.data is not None:
            self._complete_pes(state)
        if state.audio_pending:
            self._discard(state.stream.pid, "ADTS frame truncated by the end of the stream")
            state.audio_pending = b""

    def _complete_pes(self, state: _Pes) -> None:
        data, state.data = state.data, None
        assert data is not None
        pid = state.stream.pid
        try:
            header = parse_pes_header(bytes(data))
        except PESError as exc:
            self._discard(pid, str(exc))
            return
        if header.packet_length and len(data) < 6 + header.packet_length:
            self._discard(pid, f"PES truncated: {len(data) - 6} of {header.packet_length} bytes")
            return
        es = bytes(data[header.payload_offset :])
        pts = None if header.pts is None else self._unwrap(header.pts)
        dts = pts if header.dts is None else self._unwrap(header.dts)
        if state.stream.codec == "aac":
            self._adts(state, pts, es)
        elif pts is None or dts is None:
            self._discard(pid, "video PES without a PTS")
        else:
            self._video(state, pts, dts, es)

    def _unit(
        self, state: _Pes, pts: int, dts: int, key: bool, payload: bytes, config: bool = False
    ) -> None:
        kind = MediaKind.AUDIO if state.stream.codec == "aac" else MediaKind.VIDEO
        codec = state.stream.codec
        assert codec is not None
        self._events.append(
            MediaUnit(kind, codec, pts, dts, TS_CLOCK, key, payload, self._clock(), config)
        )

    def _video(self, state: _Pes, pts: int, dts: int, es: bytes) -> None:
        pid = state.stream.pid
        nals = [n for n in iter_annexb(es)]
        if not nals:
            self._discard(pid, "video PES without NAL units")
            return
        hevc = state.stream.codec == "hevc"
        kinds = _HEVC_PARAMETER_SETS if hevc else _H264_PARAMETER_SETS
        types = [nal_type(n) if hevc else n[0] & 0x1F for n in nals]
        found: dict[str, list[bytes]] = {}
        for nal, t in zip(nals, types, strict=True):
            if t in kinds:
                found.setdefault(kinds[t], []).append(nal)
        if found:
            params = {**state.params, **{k: tuple(dict.fromkeys(v)) for k, v in found.items()}}
            if params != state.params and len(params) == len(kinds):
                try:
                    record = (
                        HevcConfig(params["vps"], params["sps"], params["pps"]).to_bytes()
                        if hevc
                        else AvcConfig.from_parameter_sets(params["sps"], params["pps"]).to_bytes()
                    )
                except BitstreamError as exc:
                    self._discard(pid, f"unusable parameter sets: {exc}")
                    return
                state.params = params
                if record != state.config:
                    state.config = record
                    self._unit(state, pts, dts, False, record, config=True)
            elif len(params) < len(kinds):
                state.params = params
        if hevc:
            sample = annexb_to_hevc_sample(nals)
            keyframe = any(t in IRAP_TYPES for t in types)
        else:
            sample = avcc_from_nals(
                n for n, t in zip(nals, types, strict=True) if t not in (7, 8, 9)
            )
            keyframe = 5 in types
        if not sample:
            return
        if state.config is None:
            self.stats.frames_before_config += 1
            return
        self._unit(state, pts, dts, keyframe, sample)

    def _adts(self, state: _Pes, pts: int | None, es: bytes) -> None:
        """Split ADTS frames; the PES PTS belongs to the first frame that starts in it."""
        pid = state.stream.pid
        carried = len(state.audio_pending)
        data = state.audio_pending + es
        state.audio_pending = b""
        if pts is None:
            pts = state.audio_next
            if pts is None:
                self._discard(pid, "audio PES without a PTS")
                return
        pos = index = 0
        while len(data) - pos >= 6:
            try:
                length = adts_frame_length(data[pos : pos + 6])
            except AacError as exc:
                self._discard(pid, f"{exc} at byte {pos} of an audio PES")
                return
            if pos + length > len(data):
                break
            try:
                frame = parse_adts_frame(data[pos : pos + length])
            except AacError as exc:
                self._discard(pid, str(exc))
                pos += length
                continue
            cfg = frame.config
            duration = cfg.frame_length * 90000 // cfg.sample_rate
            if pos < carried and state.audio_next is not None:
                at = state.audio_next
            else:
                at = pts + index * cfg.frame_length * 90000 // cfg.sample_rate
                index += 1
            record = audio_specific_config(cfg)
            if record != state.config:
                state.config = record
                self._unit(state, at, at, True, record, config=True)
            self._unit(state, at, at, True, frame.payload)
            state.audio_next = at + duration
            pos += length
        rest = data[pos:]
        if len(rest) > MAX_ADTS_FRAME:
            self._discard(pid, "ADTS frame longer than its 13-bit length allows")
        else:
            state.audio_pending = rest

    def _finish(self) -> None:
        for state in list(self._pids.values()):
            if isinstance(state, _Pes):
                self._end_pes(state)

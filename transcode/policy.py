"""Ladder policy: which renditions a source gets, at what size and frame rate. Pure, no codecs.

Every output is exactly 9:16 portrait with even dimensions. A rung is named by its short edge
(``720p`` = 720×1280). Rungs larger than the source picture (after the vertical crop) are left
out; the ladder is decided once, at stream start, and then kept for the life of the stream.
"""

from __future__ import annotations

import enum
import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from fractions import Fraction
from typing import Any

#: 9:16 sizes with even sides are multiples of 18×32 (short edge a multiple of 18).
_SHORT_EDGE_STEP = 18

#: Frame rates a measured rate snaps to when it is within 3 %. A few frames of millisecond
#: timestamps cannot tell 29.97 from 30 (0.03 ms per interval), so NTSC rates are not guessed:
#: a 29.97 fps source comes out at 30 fps (one repeated frame every 33 s, no drift, and a GOP
#: of exactly 2 s).
_STANDARD_RATES: tuple[Fraction, ...] = tuple(
    Fraction(rate) for rate in (15, 24, 25, 30, 48, 50, 60, 90, 100, 120)
)

#: Codecs the transcoder decodes; only H.264 can be passed through (outputs are H.264).
#: VP8 (from WHIP) has no configuration record: its config unit's payload is empty.
DECODABLE_VIDEO = frozenset({"h264", "hevc", "av1", "vp8", "vp9"})


class LadderConfigError(ValueError):
    """A ``[transcode]`` setting that cannot work."""


def parse_bitrate(value: int | str) -> int:
    """``3000k`` / ``6M`` / ``730000`` → bits per second."""
    if isinstance(value, int):
        bps = value
    else:
        text = value.strip().lower()
        scale = 1
        if text.endswith("k"):
            scale, text = 1000, text[:-1]
        elif text.endswith("m"):
            scale, text = 1_000_000, text[:-1]
        try:
            bps = int(float(text) * scale)
        except ValueError:
            raise LadderConfigError(f"bad bitrate {value!r}") from None
    if bps <= 0:
        raise LadderConfigError(f"bitrate must be positive, got {value!r}")
    return bps


def size_for_short_edge(short_edge: int) -> tuple[int, int]:
    """``720`` → ``(720, 1280)``; the short edge must give an exact, even 9:16 size."""
    if short_edge <= 0 or short_edge % _SHORT_EDGE_STEP:
        raise LadderConfigError(
            f"{short_edge}p is not an exact even 9:16 size (short edge must be a multiple of 18)"
        )
    return short_edge, short_edge * 16 // 9


@dataclass(frozen=True, slots=True)
class Rung:
    """One configured rendition: ``name`` is the short edge (``"720p"``)."""

    name: str
    width: int
    height: int
    bitrate: int
    profile: str = "high"

    @classmethod
    def named(cls, name: str, bitrate: int | str, profile: str | None = None) -> Rung:
        """``Rung.named("720p", "3000k")`` → 720×1280; 360p and below default to Main profile."""
        if not name.endswith("p") or not name[:-1].isdigit():
            raise LadderConfigError(f"rung name must look like '720p', got {name!r}")
        width, height = size_for_short_edge(int(name[:-1]))
        if profile is None:
            profile = "main" if width <= 360 else "high"
        if profile not in ("baseline", "main", "high"):
            raise LadderConfigError(f"{name}: unsupported H.264 profile {profile!r}")
        return cls(name, width, height, parse_bitrate(bitrate), profile)


DEFAULT_RUNGS: tuple[Rung, ...] = (
    Rung.named("1080p", "6000k"),
    Rung.named("720p", "3000k"),
    Rung.named("540p", "2000k"),
    Rung.named("360p", "730k"),
)


class VerticalMode(enum.Enum):
    CROP = "crop"  # centre (or focus) crop of a wider source to 9:16
    PAD = "pad"  # letterbox/pillarbox: the whole picture, black bars


@dataclass(frozen=True, slots=True)
class VerticalPolicy:
    """How a non-9:16 source becomes 9:16. ``focus`` is the crop's horizontal position, 0..1."""

    mode: VerticalMode = VerticalMode.CROP
    focus: float = 0.5

    def __post_init__(self) -> None:
        if not 0.0 <= self.focus <= 1.0:
            raise LadderConfigError(f"crop focus must be within 0..1, got {self.focus}")


@dataclass(frozen=True, slots=True)
class LadderConfig:
    """The ``[transcode]`` section. Build with :meth:`from_mapping` from TOML."""

    rungs: tuple[Rung, ...] = DEFAULT_RUNGS
    preset: str = "veryfast"
    segment_duration: float = 2.0
    max_fps: Fraction = Fraction(30)
    passthrough: bool = True
    vertical: VerticalPolicy = field(default_factory=VerticalPolicy)
    audio_bitrate: int = 128_000
    #: swscale algorithm (same names as the ffmpeg ``scale`` filter's ``flags``).
    scale_flags: str = "bicubic"
    #: Lower rungs scale from the top encoded rung's picture (same aspect) instead of the
    #: source: the 1080→720 pass is made once (measured 3.66 → 2.83 ms per 1080×1920 frame for
    #: 720p/540p/360p; PSNR against a lanczos scale from the source ≥ 54 dB, 0.5–3.5 dB below
    #: bicubic from the source).
    cascade_scaling: bool = True
    #: x264 threads per rung; 0 = x264's choice (sliced threads under zerolatency).
    encoder_threads: int = 0
    #: Capped VBR: maxrate = bitrate × this; VBV buffer holds this many seconds of maxrate.
    maxrate_factor: float = 1.0
    bufsize_seconds: float = 1.0

    def __post_init__(self) -> None:
        if self.segment_duration <= 0:
            raise LadderConfigError("segment_duration must be positive")
        if self.max_fps <= 0:
            raise LadderConfigError("max_fps must be positive")
        if not self.rungs and not self.passthrough:
            raise LadderConfigError("empty ladder: configure rungs or enable passthrough")
        names = [r.name for r in self.rungs]
        if len(set(names)) != len(names):
            raise LadderConfigError(f"duplicate rung names in {names}")
        if self.maxrate_factor < 1.0 or self.bufsize_seconds <= 0:
            raise LadderConfigError("maxrate_factor must be ≥ 1 and bufsize_seconds > 0")

    @classmethod
    def from_mapping(cls, section: Mapping[str, Any]) -> LadderConfig:
        """From a TOML ``[transcode]`` table, e.g. ``rungs = [{name = "720p", bitrate = "3000k"}]``.

        ``rungs`` entries may also be strings ``"720p:3000k"``; ``vertical = "crop"|"pad"``,
        ``focus = 0.5``, ``max_fps = 30``. Unknown keys are an error (typos must not pass).
        """
        known = {
            "rungs",
            "preset",
            "segment_duration",
            "max_fps",
            "passthrough",
            "vertical",
            "focus",
            "audio_bitrate",
            "scale_flags",
            "cascade_scaling",
            "encoder_threads",
            "maxrate_factor",
            "bufsize_seconds",
        }
        unknown = set(section) - known
        if unknown:
            raise LadderConfigError(f"unknown [transcode] keys: {sorted(unknown)}")
        kwargs: dict[str, Any] = {}
        if "rungs" in section:
            kwargs["rungs"] = tuple(_rung_from_toml(item) for item in section["rungs"])
        for key in ("preset", "scale_flags"):
            if key in section:
                kwargs[key] = str(section[key])
        for key in ("segment_duration", "maxrate_factor", "bufsize_seconds"):
            if key in section:
                kwargs[key] = float(section[key])
        if "max_fps" in section:
            kwargs["max_fps"] = Fraction(str(section["max_fps"])).limit_denominator(1001)
        for key in ("passthrough", "cascade_scaling"):
            if key in section:
                kwargs[key] = bool(section[key])
        if "encoder_threads" in section:
            kwargs["encoder_threads"] = int(section["encoder_threads"])
        if "audio_bitrate" in section:
            kwargs["audio_bitrate"] = parse_bitrate(section["audio_bitrate"])
        vertical = VerticalPolicy()
        if "vertical" in section:
            try:
                vertical = replace(vertical, mode=VerticalMode(str(section["vertical"])))
            except ValueError:
                raise LadderConfigError("vertical must be 'crop' or 'pad'") from None
        if "focus" in section:
            vertical = replace(vertical, focus=float(section["focus"]))
        kwargs["vertical"] = vertical
        return cls(**kwargs)


def _rung_from_toml(item: Any) -> Rung:
    if isinstance(item, str):
        name, _, bitrate = item.partition(":")
        if not bitrate:
            raise LadderConfigError(f"rung {item!r} needs a bitrate ('720p:3000k')")
        return Rung.named(name.strip(), bitrate.strip())
    if isinstance(item, Mapping):
        if "name" not in item or "bitrate" not in item:
            raise LadderConfigError(f"rung {dict(item)!r} needs name and bitrate")
        profile = item.get("profile")
        return Rung.named(
            str(item["name"]), item["bitrate"], None if profile is None else str(profile)
        )
    raise LadderConfigError(f"bad rung entry {item!r}")


# --- geometry ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Rect:
    x: int
    y: int
    width: int
    height: int


def _even_floor(value: float) -> int:
    return max(2, int(value) // 2 * 2)


def is_vertical_916(width: int, height: int, tolerance: float = 0.005) -> bool:
    """True when ``width×height`` is 9:16 portrait within ``tolerance`` (relative)."""
    return height > 0 and abs(width * 16 / (height * 9) - 1.0) <= tolerance


def crop_rect(width: int, height: int, focus: float = 0.5) -> Rect:
    """The 9:16 part of a ``width×height`` picture, even-aligned (4:2:0 chroma needs it).

    A wider source keeps its full height and loses the sides (``focus`` 0 = left edge, 1 = right
    edge); a taller one keeps its width and loses top and bottom (always centred). The crop may
    miss exact 9:16 by less than one pixel column, which the scaler absorbs.
    """
    if width * 16 > height * 9:  # wider than 9:16
        crop_w = min(width, _even_floor(height * 9 / 16))
        x = round((width - crop_w) * focus) // 2 * 2
        return Rect(x, 0, crop_w, height // 2 * 2)
    crop_h = min(height, _even_floor(width * 16 / 9))
    y = (height - crop_h) // 2 // 2 * 2
    return Rect(0, y, width // 2 * 2, crop_h)


def fit_rect(width: int, height: int, out_w: int, out_h: int) -> Rect:
    """Where the whole ``width×height`` picture lands inside ``out_w×out_h`` (pad mode)."""
    if width * out_h > height * out_w:  # wider: full width, bars top and bottom
        inner_w, inner_h = out_w, min(out_h, _even_floor(out_w * height / width))
    else:
        inner_w, inner_h = min(out_w, _even_floor(out_h * width / height)), out_h
    return Rect((out_w - inner_w) // 2 // 2 * 2, (out_h - inner_h) // 2 // 2 * 2, inner_w, inner_h)


def fits_without_upscale(
    width: int, height: int, out_w: int, out_h: int, vertical: VerticalPolicy
) -> bool:
    """Whether ``out_w×out_h`` can be made from the source picture by scaling down only."""
    if vertical.mode is VerticalMode.CROP:
        picture = crop_rect(width, height, vertical.focus)
        return out_w <= picture.width and out_h <= picture.height
    inner = fit_rect(width, height, out_w, out_h)
    return inner.width <= width and inner.height <= height


# --- frame rate --------------------------------------------------------------------------------


def snap_frame_rate(measured: Fraction) -> Fraction:
    """Nearest standard rate within 3 %, else the measured rate rounded to an integer."""
    if measured <= 0:
        raise ValueError("frame rate must be positive")
    best = min(_STANDARD_RATES, key=lambda rate: abs(rate - measured))
    if abs(best - measured) <= best * Fraction(3, 100):
        return best
    return Fraction(max(1, round(measured)))


def estimate_frame_rate(times: Sequence[Fraction]) -> Fraction | None:
    """Source rate from presentation times (seconds) of the first frames.

    The mean of the intervals within ±25 % of the median: VFR gaps and stalls do not count, and
    millisecond rounding (60 fps = 17, 17, 16 ms …) averages out. ``None`` below two times.
    """
    ordered = sorted(set(times))
    if len(ordered) < 2:
        return None
    deltas = sorted(b - a for a, b in itertools.pairwise(ordered))
    median = deltas[len(deltas) // 2]
    typical = [d for d in deltas if abs(d - median) <= median / 4]
    return snap_frame_rate(Fraction(len(typical)) / sum(typical, Fraction(0)))


def output_frame_rate(source_fps: Fraction, max_fps: Fraction) -> Fraction:
    """The source rate if it is within ``max_fps``, else the source divided by the smallest
    integer that brings it within (60 → 30, 59.94 → 29.97, 50 → 25, 120 → 30), so frames are
    picked in a regular pattern; ``max_fps`` itself when that division would lose too much."""
    if source_fps <= max_fps:
        return source_fps
    divided = source_fps / math.ceil(source_fps / max_fps)
    return divided if divided >= max_fps * Fraction(3, 4) else max_fps


def gop_frames(segment_duration: float, fps: Fraction) -> int:
    """Frames per GOP so that a GOP is one segment."""
    return max(1, round(Fraction(segment_duration).limit_denominator(1000) * fps))


# --- the ladder --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RungPlan:
    """One rendition the stream gets. ``passthrough`` rungs carry the source packets unchanged."""

    name: str
    width: int
    height: int
    bitrate: int
    profile: str
    passthrough: bool = False


#: Reference for a picture-sized fallback rung's bitrate: 360p at 730 kbit/s.
_REFERENCE_BPS_PER_PIXEL = 730_000 / (360 * 640)


def passthrough_candidate(source_w: int, source_h: int, codec: str, config: LadderConfig) -> bool:
    """Whether the source could be offered as-is (H.264 and already 9:16), GOP not yet known."""
    return config.passthrough and codec == "h264" and is_vertical_916(source_w, source_h)


def plan_ladder(
    source_w: int,
    source_h: int,
    fps: Fraction,
    codec: str,
    gop_ok: bool | None,
    config: LadderConfig,
) -> list[RungPlan]:
    """The renditions for a source, largest first.

    ``gop_ok`` says whether the source's keyframes are at most one segment apart; ``None`` =
    not known yet, planned as if it were (the caller re-plans when it turns out false).
    The passthrough rung replaces configured rungs of its own size or larger; when nothing fits
    at all, one rung of the largest 9:16 size the picture allows is made (never an upscale).
    """
    del fps  # the ladder does not depend on the rate today; the signature keeps it explicit
    plans: list[RungPlan] = []
    passthrough = passthrough_candidate(source_w, source_h, codec, config) and gop_ok is not False
    if passthrough:
        plans.append(RungPlan(f"{source_w}p", source_w, source_h, 0, "source", passthrough=True))
    for rung in sorted(config.rungs, key=lambda r: r.width, reverse=True):
        if not fits_without_upscale(source_w, source_h, rung.width, rung.height, config.vertical):
            continue
        if passthrough and (rung.width >= source_w or rung.name == plans[0].name):
            continue
        plans.append(RungPlan(rung.name, rung.width, rung.height, rung.bitrate, rung.profile))
    if not plans:
        plans.append(_picture_sized_rung(source_w, source_h, config.vertical))
    return plans


def plan_onto(
    source_w: int,
    source_h: int,
    codec: str,
    gop_ok: bool | None,
    config: LadderConfig,
    renditions: Sequence[tuple[str, int, int]],
) -> list[RungPlan]:
    """A show's existing video renditions ``(name, width, height)`` for a source of another
    format (a switch, a re-plan): each keeps its name and size, the vertical policy scaling the
    picture onto it (up if need be: viewers' players keep their renditions); the rung of the
    source's own size passes it through when it can."""
    passthrough = passthrough_candidate(source_w, source_h, codec, config) and gop_ok is not False
    configured = {r.name: r for r in config.rungs}
    plans: list[RungPlan] = []
    for name, width, height in sorted(renditions, key=lambda r: r[1], reverse=True):
        if passthrough and (width, height) == (source_w, source_h):
            passthrough = False  # one passthrough rung at most
            plans.append(RungPlan(name, width, height, 0, "source", passthrough=True))
            continue
        rung = configured.get(name)
        if rung is not None:
            plans.append(RungPlan(name, width, height, rung.bitrate, rung.profile))
        else:
            bitrate = max(50_000, int(_REFERENCE_BPS_PER_PIXEL * width * height))
            plans.append(RungPlan(name, width, height, bitrate, "main"))
    return plans


def _picture_sized_rung(source_w: int, source_h: int, vertical: VerticalPolicy) -> RungPlan:
    short = _SHORT_EDGE_STEP
    while fits_without_upscale(
        source_w, source_h, short + _SHORT_EDGE_STEP, (short + _SHORT_EDGE_STEP) * 16 // 9, vertical
    ):
        short += _SHORT_EDGE_STEP
    width, height = size_for_short_edge(short)
    bitrate = max(50_000, int(_REFERENCE_BPS_PER_PIXEL * width * height))
    return RungPlan(f"{short}p", width, height, bitrate, "main")

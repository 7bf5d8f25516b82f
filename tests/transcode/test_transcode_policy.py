"""The ladder policy without codecs: sizes, no upscale, crop/pad geometry, frame rates, config."""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from transcode.policy import (
    DEFAULT_RUNGS,
    LadderConfig,
    LadderConfigError,
    Rung,
    VerticalMode,
    VerticalPolicy,
    crop_rect,
    estimate_frame_rate,
    fit_rect,
    gop_frames,
    output_frame_rate,
    plan_ladder,
    plan_onto,
    snap_frame_rate,
)

CROP = VerticalPolicy()
PAD = VerticalPolicy(VerticalMode.PAD)


def names(plans: list) -> list[str]:  # type: ignore[type-arg]
    return [p.name for p in plans]


def test_default_ladder_sizes_are_exact_even_9_16() -> None:
    assert [(r.name, r.width, r.height, r.bitrate, r.profile) for r in DEFAULT_RUNGS] == [
        ("1080p", 1080, 1920, 6_000_000, "high"),
        ("720p", 720, 1280, 3_000_000, "high"),
        ("540p", 540, 960, 2_000_000, "high"),
        ("360p", 360, 640, 730_000, "main"),
    ]
    for rung in DEFAULT_RUNGS:
        assert rung.width % 2 == 0 and rung.height % 2 == 0
        assert rung.width * 16 == rung.height * 9


@pytest.mark.parametrize("name", ["700p", "721p", "x", "720", "0p"])
def test_rung_names_must_give_exact_even_9_16(name: str) -> None:
    with pytest.raises(LadderConfigError):
        Rung.named(name, "1000k")


def test_landscape_1080p_crops_to_607ish_and_keeps_540p_and_below() -> None:
    rect = crop_rect(1920, 1080)
    assert (rect.width, rect.height) == (606, 1080)
    assert abs(rect.x - (1920 - 606) / 2) <= 1 and rect.x % 2 == 0
    plans = plan_ladder(1920, 1080, Fraction(30), "h264", None, LadderConfig())
    assert names(plans) == ["540p", "360p"]


def test_portrait_1080p_gets_the_full_ladder_plus_nothing_upscaled() -> None:
    config = LadderConfig(passthrough=False)
    plans = plan_ladder(1080, 1920, Fraction(30), "h264", True, config)
    assert names(plans) == ["1080p", "720p", "540p", "360p"]
    plans = plan_ladder(720, 1280, Fraction(30), "hevc", True, config)
    assert names(plans) == ["720p", "540p", "360p"]


def test_pad_mode_uses_the_whole_picture_for_the_no_upscale_rule() -> None:
    config = LadderConfig(vertical=PAD)
    plans = plan_ladder(1920, 1080, Fraction(30), "h264", None, config)
    assert names(plans) == ["1080p", "720p", "540p", "360p"]
    plans = plan_ladder(640, 360, Fraction(30), "h264", None, config)
    assert names(plans) == ["540p", "360p"]


def test_passthrough_is_the_top_rung_for_a_vertical_h264_source_with_short_gops() -> None:
    config = LadderConfig()
    plans = plan_ladder(720, 1280, Fraction(30), "h264", True, config)
    assert [(p.name, p.passthrough) for p in plans] == [
        ("720p", True),
        ("540p", False),
        ("360p", False),
    ]
    # Unknown GOP: planned as if fine (re-planned when it is not).
    assert plans == plan_ladder(720, 1280, Fraction(30), "h264", None, config)
    # Long GOP, HEVC or not 9:16: encode.
    assert not any(p.passthrough for p in plan_ladder(720, 1280, 30, "h264", False, config))  # type: ignore[arg-type]
    assert not any(p.passthrough for p in plan_ladder(720, 1280, 30, "hevc", True, config))  # type: ignore[arg-type]
    assert not any(p.passthrough for p in plan_ladder(1280, 720, 30, "h264", True, config))  # type: ignore[arg-type]


def test_passthrough_only_ladder_and_its_fallback() -> None:
    config = LadderConfig(rungs=(), passthrough=True)
    plans = plan_ladder(540, 960, Fraction(30), "h264", True, config)
    assert [(p.name, p.passthrough) for p in plans] == [("540p", True)]
    # The source does not qualify: one rung of the largest size the picture allows.
    plans = plan_ladder(640, 360, Fraction(30), "h264", True, config)
    assert [(p.name, p.width, p.height, p.passthrough) for p in plans] == [
        ("198p", 198, 352, False)
    ]


def test_tiny_source_gets_a_picture_sized_rung_not_an_upscale() -> None:
    plans = plan_ladder(72, 128, Fraction(30), "h264", None, LadderConfig(passthrough=False))
    assert [(p.name, p.width, p.height) for p in plans] == [("72p", 72, 128)]


@given(
    width=st.integers(16, 4096).map(lambda v: v // 2 * 2),
    height=st.integers(16, 4096).map(lambda v: v // 2 * 2),
    focus=st.floats(0, 1),
)
def test_crop_is_even_inside_and_9_16_within_a_pixel(width: int, height: int, focus: float) -> None:
    rect = crop_rect(width, height, focus)
    assert rect.x % 2 == 0 and rect.y % 2 == 0 and rect.width % 2 == 0 and rect.height % 2 == 0
    assert rect.x >= 0 and rect.x + rect.width <= width
    assert rect.y >= 0 and rect.y + rect.height <= height
    if rect.width >= 18 and rect.height >= 32:
        assert abs(rect.width * 16 - rect.height * 9) <= 2 * 16


@given(
    width=st.integers(16, 4096),
    height=st.integers(16, 4096),
    short=st.sampled_from([180, 360, 540, 720, 1080]),
)
def test_every_plan_is_exact_even_9_16_and_never_upscales(
    width: int, height: int, short: int
) -> None:
    config = LadderConfig(rungs=(Rung.named(f"{short}p", "1000k"),), passthrough=False)
    for mode in (CROP, PAD):
        cfg = LadderConfig(rungs=config.rungs, passthrough=False, vertical=mode)
        for plan in plan_ladder(width, height, Fraction(30), "h264", None, cfg):
            assert plan.width * 16 == plan.height * 9
            assert plan.width % 2 == 0 and plan.height % 2 == 0
            if mode is CROP:
                rect = crop_rect(width, height)
                assert plan.width <= max(rect.width, 18) and plan.height <= max(rect.height, 32)


def test_crop_focus_moves_the_window_left_and_right() -> None:
    assert crop_rect(640, 360, 0.0).x == 0
    assert crop_rect(640, 360, 1.0).x == 640 - 202
    assert crop_rect(640, 360, 0.5).x == 218
    # A source taller than 9:16 loses top and bottom instead.
    assert crop_rect(1080, 2400) == crop_rect(1080, 2400, 0.0)
    rect = crop_rect(1080, 2400)
    assert (rect.width, rect.height, rect.y) == (1080, 1920, 240)


def test_fit_rect_letterboxes_and_pillarboxes() -> None:
    inner = fit_rect(640, 360, 180, 320)
    assert (inner.x, inner.y, inner.width, inner.height) == (0, 110, 180, 100)
    inner = fit_rect(1080, 2400, 360, 640)
    assert inner.height == 640 and inner.width == 288 and inner.x == 36


@pytest.mark.parametrize(
    ("measured", "snapped"),
    [
        (Fraction(1000, 33), Fraction(30)),
        (Fraction(1000, 34), Fraction(30)),
        (Fraction(30000, 1001), Fraction(30)),
        (Fraction(1000, 17), Fraction(60)),
        (Fraction(25), Fraction(25)),
        (Fraction(1000, 70), Fraction(14)),
    ],
)
def test_snap_frame_rate(measured: Fraction, snapped: Fraction) -> None:
    assert snap_frame_rate(measured) == snapped


def test_estimate_frame_rate_uses_the_median_interval_so_vfr_gaps_do_not_count() -> None:
    times = [Fraction(ms, 1000) for ms in (0, 33, 67, 100, 133, 400, 433, 467, 500)]
    assert estimate_frame_rate(times) == 30
    assert estimate_frame_rate([Fraction(0)]) is None
    # 60 fps with millisecond timestamps: 17, 17, 16 ms …
    sixty = [Fraction(round(i * 1000 / 60), 1000) for i in range(10)]
    assert estimate_frame_rate(sixty) == 60


@pytest.mark.parametrize(
    ("source", "cap", "out"),
    [
        (Fraction(30), Fraction(30), Fraction(30)),
        (Fraction(25), Fraction(30), Fraction(25)),
        (Fraction(60), Fraction(30), Fraction(30)),
        (Fraction(60000, 1001), Fraction(30), Fraction(30000, 1001)),
        (Fraction(50), Fraction(30), Fraction(25)),
        (Fraction(120), Fraction(30), Fraction(30)),
        (Fraction(60), Fraction(60), Fraction(60)),
        (Fraction(48), Fraction(30), Fraction(24)),
        (Fraction(40), Fraction(30), Fraction(30)),
    ],
)
def test_output_frame_rate(source: Fraction, cap: Fraction, out: Fraction) -> None:
    assert output_frame_rate(source, cap) == out


def test_gop_is_one_segment() -> None:
    assert gop_frames(2.0, Fraction(30)) == 60
    assert gop_frames(2.0, Fraction(30000, 1001)) == 60
    assert gop_frames(1.0, Fraction(25)) == 25


def test_config_from_toml_section() -> None:
    config = LadderConfig.from_mapping(
        {
            "preset": "faster",
            "segment_duration": 1,
            "max_fps": 60,
            "passthrough": False,
            "cascade_scaling": False,
            "vertical": "pad",
            "focus": 0.25,
            "rungs": [{"name": "720p", "bitrate": "2500k"}, "360p:600k"],
        }
    )
    assert config.preset == "faster" and config.segment_duration == 1.0
    assert config.max_fps == 60 and not config.passthrough and not config.cascade_scaling
    assert config.vertical == VerticalPolicy(VerticalMode.PAD, 0.25)
    assert [(r.name, r.bitrate, r.profile) for r in config.rungs] == [
        ("720p", 2_500_000, "high"),
        ("360p", 600_000, "main"),
    ]
    assert LadderConfig.from_mapping({}) == LadderConfig()


@pytest.mark.parametrize(
    "section",
    [
        {"rungs": [], "passthrough": False},
        {"rungs": ["720p"]},
        {"rungs": ["720p:1M", "720p:2M"]},
        {"vertical": "stretch"},
        {"focus": 1.5},
        {"segment_duration": 0},
        {"presett": "fast"},
    ],
)
def test_bad_config_is_refused(section: dict[str, object]) -> None:
    with pytest.raises(LadderConfigError):
        LadderConfig.from_mapping(section)


SHOW = [("180p", 180, 320), ("90p", 90, 160)]


def test_a_new_format_is_planned_onto_the_shows_renditions() -> None:
    """A switch or re-plan keeps the show's rungs (names and sizes) whatever the source's size:
    a landscape or smaller source is scaled onto them (plan_ladder would drop the 180p rung)."""
    config = LadderConfig(rungs=(Rung.named("180p", "200k"), Rung.named("90p", "100k")))
    assert names(plan_ladder(320, 180, Fraction(30), "h264", True, config)) == ["90p"]
    for width, height, codec in [(320, 180, "h264"), (240, 426, "h264"), (180, 320, "hevc")]:
        plans = plan_onto(width, height, codec, True, config, SHOW)
        assert [(p.name, p.width, p.height, p.passthrough) for p in plans] == [
            ("180p", 180, 320, False),
            ("90p", 90, 160, False),
        ], (width, height, codec)
        assert plans[0].bitrate == 200_000
    # The source's own size, H.264 with short GOPs: that rung passes it through again.
    plans = plan_onto(180, 320, "h264", True, config, SHOW)
    assert [p.passthrough for p in plans] == [True, False]
    assert [p.passthrough for p in plan_onto(180, 320, "h264", False, config, SHOW)] == [
        False,
        False,
    ]

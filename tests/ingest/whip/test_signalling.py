"""Offer checks, the rate limiter, the track clock and the ``[whip]`` settings (no network)."""

from __future__ import annotations

import pytest
from aiortc import RTCRtpSender

from benchmarks.harness.whip_client import make_offer, make_offerer
from ingest.media import MediaKind
from ingest.whip.codecs import AUDIO_CLOCK, VIDEO_CLOCK, EncodedFrame
from ingest.whip.endpoint import RateLimiter, check_offer
from ingest.whip.session import OfferError, WhipSettings, _TrackClock
from shopcast.config import ConfigError, WhipSection, load_config


async def _offer(video: str | None = "H264", audio: bool = True) -> str:
    pc = make_offerer(video, audio)
    try:
        return await make_offer(pc)
    finally:
        await pc.close()


async def test_check_offer_accepts_what_browsers_send() -> None:
    for video in ("H264", "VP8", None):
        description = check_offer(await _offer(video))
        assert {m.kind for m in description.media} == ({"audio", "video"} if video else {"audio"})


@pytest.mark.parametrize(
    ("mangle", "status"),
    [
        (lambda sdp: "hello", 400),
        (lambda sdp: sdp.split("m=")[0], 400),  # no media section
        (lambda sdp: sdp + sdp[sdp.index("m=video") :], 400),  # two video sections
        (lambda sdp: sdp.replace("a=sendonly", "a=recvonly"), 422),
        (lambda sdp: sdp.replace("a=fingerprint", "a=x-fingerprint"), 400),
        (lambda sdp: sdp.replace("a=ice-ufrag", "a=x-ice-ufrag"), 400),
    ],
)
async def test_check_offer_refusals(mangle, status: int) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(OfferError) as info:
        check_offer(mangle(await _offer()))
    assert info.value.status == status


async def test_check_offer_without_supported_codec_is_422() -> None:
    pc = make_offerer("H264", audio=False)
    caps = RTCRtpSender.getCapabilities("video")
    assert caps is not None
    sdp = (await make_offer(pc)).replace("H264/90000", "AV1/90000")
    await pc.close()
    with pytest.raises(OfferError) as info:
        check_offer(sdp)
    assert info.value.status == 422 and "h264, vp8" in info.value.message


def test_rate_limiter_per_client() -> None:
    now = [0.0]
    limiter = RateLimiter(rate=2.0, burst=3, clock=lambda: now[0])
    assert [limiter.allow("a") for _ in range(4)] == [True, True, True, False]
    assert limiter.allow("b")  # another address has its own bucket
    now[0] = 0.5  # one token back
    assert limiter.allow("a") and not limiter.allow("a")


def _frame(kind: MediaKind, ts: int, arrival: float) -> EncodedFrame:
    clock = VIDEO_CLOCK if kind is MediaKind.VIDEO else AUDIO_CLOCK
    return EncodedFrame(kind, "x", ts, clock, True, b"", arrival)


def test_track_clock_puts_both_tracks_on_one_wall_clock() -> None:
    video, audio = _TrackClock(VIDEO_CLOCK), _TrackClock(AUDIO_CLOCK)
    origin = 100.0 - 1 / 30  # first video frame released at 100.0
    assert video.pts(_frame(MediaKind.VIDEO, 0, 100.0), origin) == 0
    assert video.pts(_frame(MediaKind.VIDEO, 3000, 100.2), origin) == 3000  # RTP, not arrival
    # Audio released 80 ms after it arrived; it arrived 50 ms after the first video frame.
    first_audio = audio.pts(_frame(MediaKind.AUDIO, 960, 100.0 + 0.05 + 0.08), origin)
    assert abs(first_audio / AUDIO_CLOCK - (0.05 + 1 / 30)) < 1e-3
    assert audio.pts(_frame(MediaKind.AUDIO, 1920, 0.0), origin) == first_audio + 960


def test_whip_section_and_settings() -> None:
    config = load_config(
        None,
        env={
            "SHOPCAST_WHIP_HOST_ADDRESSES": "127.0.0.1, 10.0.0.5",
            "SHOPCAST_WHIP_UDP_PORT_MIN": "40000",
            "SHOPCAST_WHIP_UDP_PORT_MAX": "40100",
            "SHOPCAST_WHIP_ICE_SERVERS": "stun:stun.example.net:3478,turn:turn.example.net",
        },
    )
    settings = WhipSettings.from_section(config.whip)
    assert settings.candidates.addresses == ("127.0.0.1", "10.0.0.5")
    assert (settings.candidates.port_min, settings.candidates.port_max) == (40000, 40100)
    servers = settings.rtc_configuration().iceServers
    assert servers is not None and [s.urls for s in servers] == [
        "stun:stun.example.net:3478",
        "turn:turn.example.net",
    ]
    assert WhipSettings().rtc_configuration().iceServers == []  # never a public STUN default
    with pytest.raises(ConfigError):
        WhipSection(udp_port_min=5000, udp_port_max=4000)
    with pytest.raises(ConfigError):
        WhipSection(max_sessions=0)

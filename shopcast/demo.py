"""``shopcast serve --demo``: a built-in publisher, so ``/demo/demo`` is a live shop at once.

A synthetic vertical show (moving colour field, the product "on camera" as a swatch, a frame
counter, a 440 Hz tone with a beep per second) is encoded with PyAV (libx264 veryfast
zerolatency + AAC) and published over real RTMP (:mod:`ingest.rtmp.client`, the client role of
the RTMP core) to the server's own port, like any outside encoder. Every few seconds the
show switches to the next product and pins it through :meth:`TagService.create` with ``"at"``
= the PTS of the very frame where the swatch changes, so the card lights up on that frame.

Picture size: ``--demo-size`` or env ``SHOPCAST_DEMO_SIZE`` (``WIDTHxHEIGHT``, default 540x960).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import av
import numpy as np

from ingest.codecs import NAL_AUD, NAL_PPS, NAL_SPS, AvcConfig, avcc_from_nals, iter_annexb
from ingest.rtmp import flv
from ingest.rtmp.client import RTMPPublisher, RTMPPublishError
from ingest.rtmp.connection import MSG_AUDIO, MSG_VIDEO
from shopcast.server import DEMO_STREAM, ShopcastServer
from shopcast.store import DatabaseUnavailable
from shopcast.tags import TagError

log = logging.getLogger(__name__)

DEFAULT_SIZE = (540, 960)
SIZE_ENV = "SHOPCAST_DEMO_SIZE"


@dataclass(frozen=True)
class Product:
    sku: str
    title: str
    price: str
    colour: str  # "#rrggbb"

    def rgb(self) -> tuple[int, int, int]:
        return (int(self.colour[1:3], 16), int(self.colour[3:5], 16), int(self.colour[5:7], 16))


PRODUCTS: tuple[Product, ...] = (
    Product("sku-runner-01", "Cloud Runner sneakers", "89.00", "#ff5a5f"),
    Product("sku-hoodie-02", "Everyday hoodie", "59.00", "#3a86ff"),
    Product("sku-bottle-03", "Steel bottle 750 ml", "24.00", "#2ec4b6"),
    Product("sku-cap-04", "Logo cap", "19.00", "#ffbe0b"),
    Product("sku-bag-05", "Weekender bag", "119.00", "#8338ec"),
    Product("sku-watch-06", "Field watch", "149.00", "#fb5607"),
)
CURRENCY = "EUR"


def parse_size(value: str) -> tuple[int, int]:
    """``"360x640"`` → (360, 640); even sizes between 64 and 1920."""
    m = re.fullmatch(r"\s*(\d+)\s*[xX×]\s*(\d+)\s*", value)
    if not m:
        raise ValueError(f"demo size must look like 540x960, not {value!r}")
    w, h = int(m.group(1)), int(m.group(2))
    if not (64 <= w <= 1920 and 64 <= h <= 1920) or w % 2 or h % 2:
        raise ValueError(f"demo size {w}x{h}: even numbers within 64..1920 please")
    return w, h


def demo_size(cli_value: str | None = None) -> tuple[int, int]:
    """The CLI flag wins, then ``SHOPCAST_DEMO_SIZE``, then 540x960."""
    value = cli_value or os.environ.get(SIZE_ENV)
    return parse_size(value) if value else DEFAULT_SIZE


# -- picture ---------------------------------------------------------------------------------
# A 3×5 bitmap font for the frame counter (no font files, no PIL).
_DIGITS = {
    "0": "111101101101111",
    "1": "010110010010111",
    "2": "111001111100111",
    "3": "111001111001111",
    "4": "101101111001001",
    "5": "111100111001111",
    "6": "111100111101111",
    "7": "111001001001001",
    "8": "111101111101111",
    "9": "111101111001111",
}
_GLYPHS = {d: np.array([int(c) for c in bits], bool).reshape(5, 3) for d, bits in _DIGITS.items()}


def draw_text(img: np.ndarray, text: str, x: int, y: int, scale: int, rgb: tuple[int, ...]) -> None:
    """Paint digits into ``img`` (H×W×3 uint8) at (x, y), each font pixel ``scale`` px."""
    for ch in text:
        glyph = _GLYPHS.get(ch)
        if glyph is not None:
            block = np.kron(glyph, np.ones((scale, scale), bool))
            h, w = block.shape
            region = img[y : y + h, x : x + w]
            region[block[: region.shape[0], : region.shape[1]]] = rgb
        x += 4 * scale


class Picture:
    """Frame ``n`` of the show, as RGB."""

    def __init__(self, width: int, height: int) -> None:
        self.width, self.height = width, height
        yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
        self._diag = (xx / width + yy / height) * np.pi  # 0..2π across the frame
        self._xx, self._yy = xx, yy

    def render(self, n: int, fps: int, product: Product | None) -> np.ndarray:
        t = n / fps
        w, h = self.width, self.height
        phase = self._diag + t * 0.8
        img = np.empty((h, w, 3), np.uint8)
        img[..., 0] = 60 + 40 * np.sin(phase)
        img[..., 1] = 40 + 30 * np.sin(phase + 2.1)
        img[..., 2] = 80 + 50 * np.sin(phase + 4.2)
        # The product "on camera": a swatch that bobs gently.
        if product is not None:
            side = w // 2
            cx = w // 2 + int(w * 0.08 * np.sin(t * 1.3))
            cy = int(h * 0.42 + h * 0.03 * np.sin(t * 2.1))
            disc = (self._xx - cx) ** 2 + (self._yy - cy) ** 2 <= (side / 2) ** 2
            img[disc] = product.rgb()
            draw_text(
                img,
                str(PRODUCTS.index(product) + 1),
                cx - 3 * side // 20,
                cy - 5 * side // 20,
                side // 10,
                (255, 255, 255),
            )
        # A ball circling the frame: motion for the encoder, something to watch for a human.
        bx = int(w / 2 + w * 0.35 * np.cos(t * 2.0))
        by = int(h * 0.78 + h * 0.08 * np.sin(t * 2.0))
        r = max(4, w // 24)
        img[max(0, by - r) : by + r, max(0, bx - r) : bx + r] = (255, 255, 255)
        # Frame counter, right below where players put their top bar.
        scale = max(2, w // 90)
        y0 = h // 12
        img[y0 : y0 + 7 * scale, : 4 * scale * 6 + 2 * scale] = (0, 0, 0)
        draw_text(img, f"{n % 1_000_000:06d}", scale, y0 + scale, scale, (255, 255, 255))
        return img


def tone(start_sample: int, count: int, rate: int) -> np.ndarray:
    """A 440 Hz tone with a short 880 Hz beep at the start of every second (stereo, planar)."""
    t = (np.arange(start_sample, start_sample + count) / rate).astype(np.float64)
    beep = (t % 1.0) < 0.08
    wave = np.where(beep, np.sin(2 * np.pi * 880 * t), np.sin(2 * np.pi * 440 * t)) * 0.2
    mono = wave.astype(np.float32)
    return np.stack([mono, mono])


# -- media messages (FLV tag bodies from ingest.rtmp.flv) --------------------------------------


@dataclass(frozen=True)
class FlvMessage:
    type_id: int  # 8 audio, 9 video
    timestamp: int  # ms
    payload: bytes
    keyframe: bool = False
    config: bool = False  # a sequence header (AVCDecoderConfigurationRecord / AudioSpecificConfig)


class ShowEncoder:
    """Renders and encodes the show in real time (runs in a thread; PyAV releases the GIL
    while encoding). ``emit`` gets FLV bodies; ``on_frame(n, pts_ms)`` runs before frame n."""

    def __init__(self, settings: DemoSettings) -> None:
        self.settings = settings
        w, h = settings.size
        self.picture = Picture(w, h)
        self.video = av.CodecContext.create("libx264", "w")
        self.video.width, self.video.height, self.video.pix_fmt = w, h, "yuv420p"
        self.video.time_base = Fraction(1, settings.fps)
        self.video.framerate = Fraction(settings.fps)
        self.video.bit_rate = settings.video_bitrate
        self.video.gop_size = settings.fps * 2  # the server cuts 2 s segments on IDRs
        self.video.max_b_frames = 0
        self.video.options = {"preset": "veryfast", "tune": "zerolatency", "repeat-headers": "1"}
        self.audio = av.CodecContext.create("aac", "w")
        self.audio.sample_rate = settings.audio_rate
        self.audio.layout = "stereo"
        self.audio.format = "fltp"
        self.audio.bit_rate = 96_000
        self.audio.time_base = Fraction(1, settings.audio_rate)
        self.audio.open()
        self._sent_avc_config: bytes | None = None

    def run(
        self,
        emit: Callable[[FlvMessage], None],
        product_at: Callable[[int, int], Product],
        stop: threading.Event,
    ) -> int:
        """Encode until ``stop``; returns the number of frames."""
        s = self.settings
        emit(
            FlvMessage(
                MSG_AUDIO,
                0,
                flv.aac_sequence_header_body(bytes(self.audio.extradata or b"")),
                config=True,
            )
        )
        frame_size = self.audio.frame_size or 1024
        samples = 0
        t0 = time.monotonic()
        n = 0
        while not stop.is_set():
            pts_ms = round(n * 1000 / s.fps)
            product = product_at(n, pts_ms)
            delay = t0 + n / s.fps - time.monotonic()
            if delay > 0:
                stop.wait(delay)
            elif delay < -2.0:  # fell far behind (a busy machine): stay live, skip the wait
                t0 = time.monotonic() - n / s.fps
            frame = av.VideoFrame.from_ndarray(
                self.picture.render(n, s.fps, product), format="rgb24"
            )
            frame = frame.reformat(format="yuv420p")
            frame.pts = n
            frame.time_base = Fraction(1, s.fps)
            for packet in self.video.encode(frame):
                self._emit_video(packet, emit)
            # Audio up to the end of this frame (plus one AAC frame for the encoder's delay).
            while samples < (n + 1) * s.audio_rate // s.fps + frame_size:
                af = av.AudioFrame.from_ndarray(
                    tone(samples, frame_size, s.audio_rate), format="fltp", layout="stereo"
                )
                af.sample_rate = s.audio_rate
                af.pts = samples
                af.time_base = Fraction(1, s.audio_rate)
                for packet in self.audio.encode(af):
                    # The priming packet has a negative pts: dropped, the clock starts at 0.
                    if packet.pts is not None and packet.pts >= 0:
                        ts = round(packet.pts * 1000 / s.audio_rate)
                        emit(FlvMessage(MSG_AUDIO, ts, flv.aac_audio_body(bytes(packet))))
                samples += frame_size
            n += 1
        return n

    def _emit_video(self, packet: Any, emit: Callable[[FlvMessage], None]) -> None:
        ts = round(packet.pts * 1000 / self.settings.fps)
        dts = round(packet.dts * 1000 / self.settings.fps) if packet.dts is not None else ts
        nals = list(iter_annexb(bytes(packet)))
        sps = next((x for x in nals if x[0] & 0x1F == NAL_SPS), None)
        pps = next((x for x in nals if x[0] & 0x1F == NAL_PPS), None)
        if sps is not None and pps is not None:
            config = flv.avc_sequence_header_body(
                AvcConfig.from_parameter_sets([sps], [pps]).to_bytes()
            )
            if config != self._sent_avc_config:
                self._sent_avc_config = config
                emit(FlvMessage(MSG_VIDEO, dts, config, config=True))
        body = [x for x in nals if x[0] & 0x1F not in (NAL_SPS, NAL_PPS, NAL_AUD)]
        emit(
            FlvMessage(
                MSG_VIDEO,
                dts,
                flv.avc_video_body(avcc_from_nals(body), packet.is_keyframe, ts - dts),
                keyframe=packet.is_keyframe,
            )
        )


# -- the demo --------------------------------------------------------------------------------
@dataclass(frozen=True)
class DemoSettings:
    size: tuple[int, int] = DEFAULT_SIZE
    fps: int = 30
    #: Seconds between product pins (the show switches products on camera at the same frame).
    pin_every: float = 5.0
    video_bitrate: int = 1_500_000
    audio_rate: int = 48_000


class DemoPublisher:
    """Publishes the show to the server's own RTMP port and pins its products.

    Encoding runs in a thread; RTMP I/O and :meth:`TagService.create` run on the server's event
    loop (PyAV's own RTMP client would block the loop the server answers on while it holds the
    GIL during the handshake, so the publisher speaks RTMP itself). Reconnects until
    :meth:`stop`.
    """

    def __init__(self, server: ShopcastServer, settings: DemoSettings | None = None) -> None:
        self.server = server
        self.settings = settings or DemoSettings()
        self._stop_thread = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: asyncio.Queue[FlvMessage | None] = asyncio.Queue()
        self._sender: asyncio.Task[None] | None = None
        self._configs: dict[int, FlvMessage] = {}
        self._gap = False  # messages were dropped: restart at the next keyframe
        self.pins = 0
        self.frames = 0
        self._pin_index = -1
        self._pinning: set[asyncio.Future[None]] = set()  # tags being stored

    async def start(self) -> None:
        """Call on the server's loop once it listens (the RTMP port is known)."""
        self._loop = asyncio.get_running_loop()
        rec = await self.server.store.get_stream(DEMO_STREAM)
        if rec is None:
            rec = await self.server.store.create_stream(DEMO_STREAM)
            log.info("demo: created stream %r", DEMO_STREAM)
        host = self.server.config.server.rtmp_host
        if host in ("0.0.0.0", "::", ""):
            host = "127.0.0.1"
        w, h = self.settings.size
        log.info(
            "demo: publishing a %dx%d@%d synthetic show to stream=%s over RTMP port %d; "
            "a new product is pinned every %g s",
            w,
            h,
            self.settings.fps,
            DEMO_STREAM,
            self.server.rtmp.port,
            self.settings.pin_every,
        )
        encoder = ShowEncoder(self.settings)
        self._thread = threading.Thread(
            target=self._encode, args=(encoder,), name="demo-encoder", daemon=True
        )
        self._thread.start()
        self._sender = asyncio.ensure_future(
            self._send_loop(
                host, self.server.rtmp.port, self.server.config.ingest.rtmp_app, rec.stream_key
            )
        )

    async def stop(self) -> None:
        """Stop encoding, close the RTMP connection, wait for both."""
        self._stop_thread.set()
        thread = self._thread
        if thread is not None:
            await asyncio.get_running_loop().run_in_executor(None, thread.join, 10.0)
            if thread.is_alive():
                log.warning("demo: encoder thread did not stop within 10 s")
        self._queue.put_nowait(None)
        if self._sender is not None:
            try:
                await asyncio.wait_for(self._sender, 5.0)
            except TimeoutError:
                log.warning("demo: RTMP sender did not stop within 5 s")
        log.info("demo: stopped after %d frames, %d product pins", self.frames, self.pins)

    # encoder thread
    def _encode(self, encoder: ShowEncoder) -> None:
        try:
            self.frames = encoder.run(self._emit, self._product_at, self._stop_thread)
        except Exception:
            log.exception("demo: the encoder failed")

    def _emit(self, msg: FlvMessage) -> None:
        assert self._loop is not None
        with contextlib.suppress(RuntimeError):  # the loop is closing
            self._loop.call_soon_threadsafe(self._enqueue, msg)

    def _product_at(self, n: int, pts_ms: int) -> Product:
        """The product on camera at frame ``n``; a new one is pinned on its first frame."""
        index = n // max(1, round(self.settings.pin_every * self.settings.fps))
        product = PRODUCTS[index % len(PRODUCTS)]
        if index != self._pin_index:
            self._pin_index = index
            assert self._loop is not None
            for body in pin_bodies(index, product, pts_ms, self.settings.pin_every):
                with contextlib.suppress(RuntimeError):
                    self._loop.call_soon_threadsafe(self._create_tag, body)
        return product

    # event loop side
    def _enqueue(self, msg: FlvMessage) -> None:
        if msg.config:
            self._configs[msg.type_id] = msg
        elif self._queue.qsize() > 4 * self.settings.fps:  # not connected or falling behind
            self._gap = True
        else:
            self._queue.put_nowait(msg)

    async def _send_loop(self, host: str, port: int, app: str, key: str) -> None:
        backoff = 1.0
        while not self._stop_thread.is_set():
            pub = RTMPPublisher(host, port, app, key)
            try:
                await pub.connect()
                log.info("demo: publishing to rtmp://%s:%d/%s/<key>", host, port, app)
                backoff = 1.0
                if await self._pump(pub):
                    return
            except (OSError, TimeoutError, RTMPPublishError, EOFError) as exc:
                if self._stop_thread.is_set():
                    return
                log.warning("demo: RTMP publish failed (%s); retrying in %.0f s", exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10.0)
            finally:
                await pub.close()

    async def _pump(self, pub: RTMPPublisher) -> bool:
        """Send queued media until stopped (True) or the connection fails (raises)."""
        waiting_for_key = True
        while True:
            msg = await self._queue.get()
            if msg is None:
                return True
            if self._gap:
                self._gap, waiting_for_key = False, True
            if waiting_for_key:
                if not (msg.type_id == MSG_VIDEO and msg.keyframe):
                    continue
                # Sequence headers first, on the keyframe's timestamp (also after reconnects).
                for config in self._configs.values():
                    pub.send_media(config.type_id, msg.timestamp, config.payload)
                waiting_for_key = False
            pub.send_media(msg.type_id, msg.timestamp, msg.payload)
            await pub.drain()

    def _create_tag(self, body: dict[str, Any]) -> None:
        task = asyncio.ensure_future(self._pin(body))
        self._pinning.add(task)
        task.add_done_callback(self._pinning.discard)

    async def _pin(self, body: dict[str, Any]) -> None:
        attempt = 0
        while True:
            try:
                rec = await self.server.tags.create(DEMO_STREAM, body, source="demo")
            except TagError as exc:
                # Right after (re)connecting the stream is not live/ready yet: the frame is
                # still in (or ahead of) the live window, so try again shortly.
                if exc.status == 409 and attempt < 40:
                    attempt += 1
                    await asyncio.sleep(0.25)
                    continue
                log.warning("demo: %s tag refused: %s", body["kind"], exc.message)
                return
            except DatabaseUnavailable as exc:
                log.warning("demo: %s tag not stored: %s", body["kind"], exc)
                return
            break
        self.pins += body["kind"] == "product"
        log.info(
            "demo: pinned %s %s (%s) as tag %s at %d ms",
            body["kind"],
            body.get("product_id", "-"),
            body["data"].get("title") or body["data"].get("question", ""),
            rec.id,
            rec.pts,
        )


def product_data(product: Product) -> dict[str, Any]:
    return {
        "title": product.title,
        "price": product.price,
        "currency": CURRENCY,
        "colour": product.colour,
    }


def pin_bodies(index: int, product: Product, at_ms: int, pin_every: float) -> list[dict[str, Any]]:
    """The tag bodies for the ``index``-th product switch, all on the frame at ``at_ms``:
    the product pin, on every third product a flash deal, on every fourth a poll (both with
    a DURATION, so their ranges close and leave the playlists)."""
    bodies: list[dict[str, Any]] = [
        {"kind": "product", "product_id": product.sku, "data": product_data(product), "at": at_ms}
    ]
    if index % 3 == 2:
        bodies.append(
            {
                "kind": "deal",
                "product_id": product.sku,
                "data": {
                    **product_data(product),
                    "title": f"Flash deal: {product.title}",
                    "price": f"{float(product.price) * 0.8:.2f}",
                    "was": product.price,
                },
                "duration": round(min(10.0, 2 * pin_every), 3),
                "at": at_ms,
            }
        )
    if index % 4 == 3:
        bodies.append(
            {
                "kind": "poll",
                "data": {
                    "question": "Which colour should we show next?",
                    "options": ["Coral", "Ocean", "Mint", "Sun"],
                },
                # A poll without DURATION is an open range: it would stay in every playlist
                # for as long as the show runs (S 4.4.5.1 never lets it be pruned).
                "duration": round(min(15.0, 3 * pin_every), 3),
                "at": at_ms,
            }
        )
    return bodies

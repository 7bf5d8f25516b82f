"""Frame numbers painted into the picture as a block barcode, and read back (Python or browser).

Layout in the 360×640 source frame: 12 bits as two rows of six 32×32 squares (most significant
bit first, white = 1) starting at (16, 16), then a reference column: a white square on the first
row, a black one on the second. The barcode sits on a mid-grey panel so the moving picture
around it does not bleed in. At 180p every square is still 16×16, which survives the 2×
downscale and x264 at 200 kb/s; the reader thresholds at the midpoint of the two references.
"""

from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

BITS = 12
COLS = 6
SQUARE = 32
X0 = Y0 = 16
WIDTH, HEIGHT = 360, 640
FPS = 30
WHITE, BLACK, GREY = 235, 16, 128


def pts_ms(n: int, fps: int = FPS) -> int:
    """Source PTS (FLV milliseconds) of frame ``n``: exact 30 fps timestamps."""
    return round(n * 1000 / fps)


def _cell(index: int) -> tuple[int, int]:
    """Top-left (x, y) of square ``index`` (0..BITS-1 bits, BITS = white ref, BITS+1 = black)."""
    if index >= BITS:
        return X0 + COLS * SQUARE, Y0 + (index - BITS) * SQUARE
    return X0 + (index % COLS) * SQUARE, Y0 + (index // COLS) * SQUARE


def paint(img: np.ndarray, n: int) -> None:
    """Paint frame number ``n`` (mod 4096) into an RGB (H×W×3 uint8) 360×640 picture."""
    rows = BITS // COLS
    img[Y0 - 8 : Y0 + rows * SQUARE + 8, X0 - 8 : X0 + (COLS + 1) * SQUARE + 8] = GREY
    for bit in range(BITS):
        x, y = _cell(bit)
        on = (n >> (BITS - 1 - bit)) & 1
        img[y : y + SQUARE, x : x + SQUARE] = WHITE if on else BLACK
    for ref, level in ((BITS, WHITE), (BITS + 1, BLACK)):
        x, y = _cell(ref)
        img[y : y + SQUARE, x : x + SQUARE] = level


def read(img: np.ndarray) -> int:
    """The frame number in an RGB picture of any size with the source's aspect ratio."""
    scale = img.shape[1] / WIDTH
    luma = img[..., :3].astype(np.float32).mean(axis=2)

    def sample(index: int) -> float:
        x, y = _cell(index)
        cx, cy = (x + SQUARE / 2) * scale, (y + SQUARE / 2) * scale
        r = max(1, int(SQUARE * scale / 4))
        return float(luma[int(cy) - r : int(cy) + r, int(cx) - r : int(cx) + r].mean())

    threshold = (sample(BITS) + sample(BITS + 1)) / 2
    value = 0
    for bit in range(BITS):
        value = value << 1 | (sample(bit) > threshold)
    return value


#: The same reader in the browser: ``window.shopcast.probe(video, metadata)`` →
#: ``{frame, drawnTime}``. It grabs the video element's current frame as a WebCodecs
#: ``VideoFrame`` (whose timestamp says which frame it really is: on a loaded machine the
#: element can already be a frame or two past the one the callback's metadata describes),
#: draws it at its intrinsic size into a canvas and samples the squares' centres.
PROBE_JS = f"""
(() => {{
  const BITS = {BITS}, COLS = {COLS}, SQUARE = {SQUARE}, X0 = {X0}, Y0 = {Y0}, W = {WIDTH};
  const cell = (i) => i >= BITS
    ? [X0 + COLS * SQUARE, Y0 + (i - BITS) * SQUARE]
    : [X0 + (i % COLS) * SQUARE, Y0 + Math.floor(i / COLS) * SQUARE];
  let canvas = null, ctx = null;
  function probe(video) {{
    const w = video.videoWidth, h = video.videoHeight;
    if (!canvas) {{
      canvas = document.createElement("canvas");
      ctx = canvas.getContext("2d", {{ willReadFrequently: true }});
    }}
    if (canvas.width !== w || canvas.height !== h) {{ canvas.width = w; canvas.height = h; }}
    let drawnTime = null;
    if (typeof VideoFrame === "function") {{
      const vf = new VideoFrame(video);
      drawnTime = vf.timestamp / 1e6;
      ctx.drawImage(vf, 0, 0, w, h);
      vf.close();
    }} else {{
      ctx.drawImage(video, 0, 0, w, h);
    }}
    const scale = w / W;
    const sample = (i) => {{
      const [x, y] = cell(i);
      const r = Math.max(1, Math.floor(SQUARE * scale / 4));
      const cx = Math.floor((x + SQUARE / 2) * scale), cy = Math.floor((y + SQUARE / 2) * scale);
      const d = ctx.getImageData(cx - r, cy - r, 2 * r, 2 * r).data;
      let sum = 0;
      for (let k = 0; k < d.length; k += 4) sum += (d[k] + d[k + 1] + d[k + 2]) / 3;
      return sum / (d.length / 4);
    }};
    const threshold = (sample(BITS) + sample(BITS + 1)) / 2;
    let value = 0;
    for (let b = 0; b < BITS; b++) value = (value << 1) | (sample(b) > threshold ? 1 : 0);
    return {{ frame: value, drawnTime }};
  }}
  window.shopcast = Object.assign(window.shopcast || {{}}, {{ probe }});
}})();
"""


_yy, _xx = np.mgrid[0:HEIGHT, 0:WIDTH]
_GRADIENT = np.stack(
    [_xx * 255 // WIDTH, _yy * 255 // HEIGHT, np.full_like(_xx, 96)], axis=2
).astype(np.uint8)


def background(n: int) -> np.ndarray:
    """A moving picture (so the encoders have real work and rungs differ) without text."""
    t = n / FPS
    img = np.roll(_GRADIENT, n * 3, axis=1)
    bx = int(WIDTH / 2 + 120 * math.cos(t * 2))
    by = int(HEIGHT * 0.6 + 150 * math.sin(t * 2))
    img[max(0, by - 30) : by + 30, max(0, bx - 30) : bx + 30] = (255, 255, 0)
    return img


def encode_flv(path: Path, seconds: float, fps: int = FPS) -> int:
    """An FLV with barcoded frames at exact timestamps (frame n at ``pts_ms(n)``), keyint 1 s,
    no B-frames, plus AAC (a 440 Hz tone). Returns the number of frames."""
    frames = round(seconds * fps)
    with av.open(str(path), "w", format="flv") as out:
        video = out.add_stream("libx264", rate=fps)
        video.width, video.height, video.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        video.codec_context.time_base = Fraction(1, 1000)
        video.codec_context.gop_size = fps
        video.codec_context.max_b_frames = 0
        video.codec_context.options = {
            "preset": "veryfast",
            "keyint": str(fps),
            "min-keyint": str(fps),
            "scenecut": "0",
            "bframes": "0",
            "crf": "23",
        }
        audio = out.add_stream("aac", rate=48_000)
        audio.codec_context.layout = "stereo"
        audio.codec_context.bit_rate = 96_000
        rate, size, samples = 48_000, 1024, 0

        def mux(packets: list[Any]) -> None:
            for p in packets:
                # The AAC priming packet (negative pts) would make the muxer shift every
                # timestamp; without it frame n keeps pts_ms(n).
                if p.pts is not None and p.pts >= 0:
                    out.mux(p)

        for n in range(frames):
            img = background(n)
            paint(img, n)
            frame = av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format="yuv420p")
            frame.pts = pts_ms(n, fps)
            frame.time_base = Fraction(1, 1000)
            mux(video.encode(frame))
            while samples < (n + 1) * rate // fps:
                t = np.arange(samples, samples + size) / rate
                mono = (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
                af = av.AudioFrame.from_ndarray(
                    np.stack([mono, mono]), format="fltp", layout="stereo"
                )
                af.sample_rate, af.pts, af.time_base = rate, samples, Fraction(1, rate)
                mux(audio.encode(af))
                samples += size
        mux(video.encode(None))
        mux(audio.encode(None))
    return frames

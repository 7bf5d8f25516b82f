"""The options of one load-test run and the check that they can run."""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit


@dataclass
class LoadTestOptions:
    target: str = "http://127.0.0.1:8080"
    api: str | None = None  # control API base; default: the target
    metrics: str | None = None  # /metrics URL; default: target + /metrics
    rtmp: list[str] = field(default_factory=list)
    protocol: str = "rtmp"  # or "srt": publish MPEG-TS to each created stream's srt_url
    streams: list[str] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)
    api_token: str | None = None
    publishers: int = 0
    viewers: int = 0
    tags_per_second: float = 0.0
    duration: float = 30.0
    source: Path | None = None
    size: str = "360x640"
    fps: int = 30
    rendition: str = "first"  # "first", "lowest", "highest" or a name in the URI
    request_timeout: float = 10.0
    warm_up: float = 2.0
    ramp: float | None = None  # seconds over which publishers start; None: 0.1 s each, ≤ 10 s
    keep_streams: bool = False
    report: Path | None = None
    markdown: Path | None = None
    plots: Path | None = None
    progress: bool = True

    @property
    def api_base(self) -> str:
        return (self.api or self.target).rstrip("/")

    @property
    def metrics_url(self) -> str:
        return self.metrics or self.target.rstrip("/") + "/metrics"


def check_options(o: LoadTestOptions) -> str | None:
    """Why these options cannot run, or None."""
    if not 0 < o.duration <= 24 * 3600:
        return "--duration must be within (0, 86400] s"
    if min(o.publishers, o.viewers) < 0 or o.tags_per_second < 0:
        return "--publishers, --viewers and --tags-per-second cannot be negative"
    if not (o.publishers or o.viewers or o.tags_per_second):
        return "nothing to do: give --publishers, --viewers or --tags-per-second"
    if o.tags_per_second and not o.api_token:
        return "--tags-per-second needs --api-token"
    explicit = max(len(o.keys), sum(1 for u in o.rtmp if has_key(u)))
    if o.publishers > explicit and not o.api_token:
        return (
            f"{o.publishers} publisher(s) need {o.publishers} stream key(s): give that many "
            "--key/--rtmp URLs with keys, or --api-token (streams are created for them)"
        )
    if o.protocol not in ("rtmp", "srt"):
        return "--protocol is rtmp or srt"
    if o.protocol == "srt" and o.publishers and (not o.api_token or o.keys or o.rtmp):
        return "--protocol srt publishes to streams it creates: give --api-token, no keys"
    if o.publishers and shutil.which("ffmpeg") is None:
        return "publishers need the ffmpeg CLI on PATH"
    if o.source is not None and not o.source.exists():
        return f"--source {o.source} does not exist"
    return None


def has_key(url: str) -> bool:
    return len([p for p in urlsplit(url).path.split("/") if p]) >= 2

"""Configuration: one TOML file, every key overridable by env ``SHOPCAST_<SECTION>_<KEY>``."""

from __future__ import annotations

import dataclasses
import os
import tomllib
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ingest.rtmp import limits as rtmp_limits
from transcode.policy import LadderConfig, LadderConfigError


class ConfigError(ValueError):
    """The configuration file or an environment override is invalid."""


@dataclass(frozen=True)
class ServerSection:
    rtmp_host: str = "0.0.0.0"
    rtmp_port: int = 1935
    http_host: str = "0.0.0.0"
    http_port: int = 8080
    #: Host name put into the URLs the server prints and returns (publish, playback).
    public_host: str = "127.0.0.1"


@dataclass(frozen=True)
class StoreSection:
    #: The embedded SQLite file (used when ``url`` is empty).
    path: str = "var/shopcast.sqlite3"
    #: ``postgresql://user:password@host:port/database``: the store shared by a cluster.
    url: str = ""

    def __post_init__(self) -> None:
        if self.url and not self.url.startswith(("postgresql://", "postgres://")):
            raise ConfigError("store.url must be a postgresql:// URL (or empty for SQLite)")


@dataclass(frozen=True)
class ApiSection:
    #: Bearer tokens for the control API; empty: one is generated on first start and stored.
    tokens: tuple[str, ...] = ()


@dataclass(frozen=True)
class IngestSection:
    #: RTMP application name in ``rtmp://host/<app>/<stream_key>``.
    rtmp_app: str = "live"
    #: What a second publisher on a live stream gets: "takeover" (old one is closed) or "reject".
    on_duplicate_publisher: str = "takeover"
    handshake_timeout: float = 10.0
    idle_timeout: float = 30.0
    max_message_size: int = rtmp_limits.MAX_MESSAGE_SIZE
    max_chunk_size: int = rtmp_limits.MAX_CHUNK_SIZE
    max_buffered: int = rtmp_limits.MAX_BUFFERED
    #: Each hub reader's queue length in media units.
    hub_queue_size: int = 512
    #: Live publishers (every protocol) plus those being admitted; more are refused at once.
    max_publishers: int = 1000
    #: Seconds between reads of one RTMP publisher's socket once ``read_pacing_publishers`` are
    #: live (fewer wake-ups per message; adds at most ~3x it to a frame's way in); 0: off.
    read_pacing: float = 0.04
    read_pacing_publishers: int = 64


@dataclass(frozen=True)
class WhipSection:
    #: STUN/TURN URLs for the peer connections; empty: host candidates only (no outside lookups).
    ice_servers: tuple[str, ...] = ()
    ice_username: str = ""  # for turn: URLs
    ice_credential: str = ""
    #: Addresses host candidates bind to; empty: every interface (aioice skips 127.0.0.1).
    host_addresses: tuple[str, ...] = ()
    #: UDP ports for media (both 0: any free port).
    udp_port_min: int = 0
    udp_port_max: int = 0
    max_sessions: int = 16
    #: POST/PATCH/DELETE per second per client address, and the burst allowed.
    rate_limit: float = 5.0
    rate_burst: int = 20
    #: Seconds without a keyframe before one is requested (keep ≤ half of segment_duration).
    keyframe_interval: float = 1.0
    connect_timeout: float = 15.0

    def __post_init__(self) -> None:
        lo, hi = self.udp_port_min, self.udp_port_max
        if (lo or hi) and not 0 < lo <= hi <= 65535:
            raise ConfigError("whip.udp_port_min..udp_port_max must be a range within 1..65535")
        if self.max_sessions < 1 or self.rate_limit <= 0 or self.rate_burst < 1:
            raise ConfigError("whip.max_sessions, rate_limit and rate_burst must be positive")


@dataclass(frozen=True)
class SrtSection:
    #: SRT listener (libsrt) carrying MPEG-TS; the stream key goes in the stream id.
    enabled: bool = True
    host: str = "0.0.0.0"
    port: int = 9000  # UDP
    latency: int = 120  # ms of receive buffer for retransmissions (SRTO_LATENCY)
    #: Empty: unencrypted. Else 10..79 characters; callers must send the same one.
    passphrase: str = ""
    pbkeylen: int = 0  # AES key bytes: 16, 24 or 32 (0: libsrt's default, 16)
    max_sessions: int = 16

    def __post_init__(self) -> None:
        if self.passphrase and not 10 <= len(self.passphrase) <= 79:
            raise ConfigError("srt.passphrase must be 10 to 79 characters (or empty)")
        if self.pbkeylen not in (0, 16, 24, 32):
            raise ConfigError("srt.pbkeylen must be 0, 16, 24 or 32")
        if not 0 <= self.port <= 65535 or not 0 <= self.latency <= 60_000:
            raise ConfigError("srt.port must be within 0..65535 and srt.latency 0..60000 ms")
        if self.max_sessions < 1:
            raise ConfigError("srt.max_sessions must be positive")


@dataclass(frozen=True)
class PackagerSection:
    #: LL-HLS part duration in seconds (0.2–1.0); 0.21 s = 6 frames at 30 fps (sub-second players).
    part_target: float = 0.21
    #: Segments kept in each media playlist (the live window held in memory).
    window_segments: int = 10
    #: A publisher back within this many seconds continues the same playlists.
    reconnect_window: float = 10.0


@dataclass(frozen=True)
class ContinuitySection:
    """What viewers see when the publisher drops (connection lost, killed, no media)."""

    #: No media from a connected publisher for this many seconds counts as a drop.
    gap_timeout: float = 1.0
    #: After a drop the slate plays this long (at most an hour) before ENDLIST.
    slate_window: float = 120.0
    #: Slate picture of every stream (any image PyAV decodes); empty: the generated card.
    slate_image: str = ""
    #: Per-stream slate pictures, ``"<stream_id>=<path>"`` each.
    slate_images: tuple[str, ...] = ()
    #: Least seconds between two input switches of a stream (a flapping input cannot thrash
    #: the ladder); a switch asked sooner is refused with Retry-After.
    switch_interval: float = 2.0
    #: Longest wait for the new input's cue (its ladder and an aligned keyframe) before a
    #: switch is given up.
    switch_timeout: float = 10.0
    #: When main publishes again while a backup input is on air: "main" switches back at
    #: main's first keyframe, "stay" keeps the backup on air (switch by API).
    backup_return: str = "main"
    #: Held inputs decoded continuously (off the event loop, nothing encoded, one frame kept)
    #: so that taking over needs no source keyframe: "backup" (backup inputs; a takeover lands
    #: at the backup's next frame), "all" (every held input: a /switch too), "off".
    warm_standby: str = "backup"

    def image_for(self, stream_id: str) -> str:
        """The slate picture file of ``stream_id`` ("" for the generated card)."""
        for item in self.slate_images:
            name, _, path = item.partition("=")
            if name.strip() == stream_id:
                return path.strip()
        return self.slate_image


@dataclass(frozen=True)
class HooksSection:
    #: URL POSTed before a publisher is accepted; 2xx admits, anything else refuses.
    on_publish: str = ""
    on_publish_timeout: float = 2.0
    #: Receivers of stream.started / stream.ended / tag.created / recording.started /
    #: recording.ready, signed with webhook_secret.
    webhook_urls: tuple[str, ...] = ()
    webhook_secret: str = ""


@dataclass(frozen=True)
class PlaybackSection:
    #: Shared with the edge. Empty: playback is open; set: /hls needs a signed token.
    secret: str = ""
    token_ttl: int = 3600


@dataclass(frozen=True)
class RecordSection:
    """Replay: every show recorded as it goes (see ``packager.recorder``)."""

    enabled: bool = True
    store: str = "file"  # or "s3"
    #: The file store's directory (the S3 store spools under ``<path>/s3-spool``).
    path: str = "var/recordings"
    #: Recordings older than this many days are deleted by a background sweep; 0 keeps them.
    retention_days: float = 0.0
    #: Segments held in memory for the store per recording (a stalled disk costs at most
    #: this many); beyond it a recording degrades.
    queue_size: int = 64
    s3_endpoint: str = ""
    s3_bucket: str = ""
    s3_region: str = ""
    s3_access_key: str = ""
    s3_secret_key: str = ""
    s3_prefix: str = ""
    #: Files the S3 store keeps in its local spool while uploads wait (S3 down); beyond it
    #: the store refuses them and the recording fails.
    s3_spool_files: int = 4096

    def __post_init__(self) -> None:
        if self.store not in ("file", "s3"):
            raise ConfigError("record.store must be 'file' or 's3'")
        if self.queue_size < 1 or self.retention_days < 0:
            raise ConfigError("record.queue_size must be positive, retention_days not negative")
        if self.store == "s3" and not self.s3_bucket:
            raise ConfigError("record.s3_bucket is required with record.store = 's3'")
        if self.s3_spool_files < 1:
            raise ConfigError("record.s3_spool_files must be positive")


@dataclass(frozen=True)
class ClusterSection:
    """This node as the cluster sees it (one machine on SQLite is a cluster of one)."""

    #: Empty: "<hostname>-<server.http_port>".
    node_id: str = ""
    #: Advertised origin URL; empty: ``http://<server.public_host>:<server.http_port>``.
    http_url: str = ""
    #: Advertised; empty: ``rtmp://<server.public_host>:<server.rtmp_port>/<ingest.rtmp_app>``.
    rtmp_url: str = ""
    #: Transcoding slots: a transcoded show takes 1, a passthrough-only show a fraction.
    capacity: float = 4.0
    #: A node (and its stream leases) silent this long is dead; heartbeats every third of it.
    node_timeout: float = 6.0

    def __post_init__(self) -> None:
        if len(self.node_id) > 128 or any(c.isspace() for c in self.node_id):
            raise ConfigError("cluster.node_id must be at most 128 characters without spaces")
        if self.capacity <= 0:
            raise ConfigError("cluster.capacity must be positive")
        if not 0.3 <= self.node_timeout <= 600:
            raise ConfigError("cluster.node_timeout must be within 0.3..600 seconds")


@dataclass(frozen=True)
class LogSection:
    level: str = "INFO"
    format: str = "plain"  # or "json": one JSON object per line


@dataclass(frozen=True)
class Config:
    server: ServerSection = field(default_factory=ServerSection)
    store: StoreSection = field(default_factory=StoreSection)
    api: ApiSection = field(default_factory=ApiSection)
    ingest: IngestSection = field(default_factory=IngestSection)
    transcode: LadderConfig = field(default_factory=LadderConfig)
    packager: PackagerSection = field(default_factory=PackagerSection)
    continuity: ContinuitySection = field(default_factory=ContinuitySection)
    hooks: HooksSection = field(default_factory=HooksSection)
    whip: WhipSection = field(default_factory=WhipSection)
    srt: SrtSection = field(default_factory=SrtSection)
    playback: PlaybackSection = field(default_factory=PlaybackSection)
    record: RecordSection = field(default_factory=RecordSection)
    cluster: ClusterSection = field(default_factory=ClusterSection)
    log: LogSection = field(default_factory=LogSection)

    def __post_init__(self) -> None:
        if not 0.2 <= self.packager.part_target <= 1.0:
            raise ConfigError("packager.part_target must be within 0.2..1.0 seconds")
        if not 0 < self.continuity.slate_window <= 3600:
            raise ConfigError("continuity.slate_window must be within 0..3600 seconds")
        if self.continuity.gap_timeout <= 0:
            raise ConfigError("continuity.gap_timeout must be positive")
        if self.continuity.switch_interval < 0 or self.continuity.switch_timeout <= 0:
            raise ConfigError("continuity.switch_interval must be >= 0 and switch_timeout positive")
        if self.continuity.backup_return not in ("main", "stay"):
            raise ConfigError('continuity.backup_return must be "main" or "stay"')
        if self.continuity.warm_standby not in ("backup", "all", "off"):
            raise ConfigError('continuity.warm_standby must be "backup", "all" or "off"')
        if any("=" not in item for item in self.continuity.slate_images):
            raise ConfigError('continuity.slate_images entries are "<stream_id>=<path>"')
        if self.hooks.webhook_urls and not self.hooks.webhook_secret:
            raise ConfigError("hooks.webhook_secret is required when webhook_urls are set")
        if self.log.format not in ("plain", "json"):
            raise ConfigError("log.format must be 'plain' or 'json'")
        if self.packager.window_segments < 6:
            raise ConfigError("packager.window_segments must be at least 6 (Apple HLS)")
        if self.ingest.max_publishers < 1:
            raise ConfigError("ingest.max_publishers must be positive")
        if not 0 <= self.ingest.read_pacing <= 0.5:
            raise ConfigError("ingest.read_pacing must be 0 (off) to 0.5 seconds")
        if self.ingest.read_pacing_publishers < 1:
            raise ConfigError("ingest.read_pacing_publishers must be at least 1")
        if self.ingest.on_duplicate_publisher not in ("takeover", "reject"):
            raise ConfigError("ingest.on_duplicate_publisher must be 'takeover' or 'reject'")
        for port in (self.server.rtmp_port, self.server.http_port):
            if not 0 <= port <= 65535:
                raise ConfigError(f"port {port} out of range")


def _convert(value: Any, target: Any, where: str) -> Any:
    """Coerce a TOML or env value to the field's declared type."""
    origin = typing.get_origin(target)
    if origin is tuple:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected a list")
        return tuple(str(v) for v in value)
    try:
        if target is bool:
            if isinstance(value, str):
                low = value.strip().lower()
                if low not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
                    raise ValueError(value)
                return low in ("1", "true", "yes", "on")
            return bool(value)
        if target is int:
            if isinstance(value, bool):
                raise ValueError(value)
            return int(value)
        if target is float:
            return float(value)
        return str(value)
    except ValueError as exc:
        raise ConfigError(f"{where}: {value!r} is not a valid {target.__name__}") from exc


def _build_section(cls: type, values: Mapping[str, Any], env: Mapping[str, str], name: str) -> Any:
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = set(values) - known
    if unknown:
        raise ConfigError(f"[{name}]: unknown key(s) {', '.join(sorted(unknown))}")
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        env_key = f"SHOPCAST_{name.upper()}_{f.name.upper()}"
        if env_key in env:
            kwargs[f.name] = _convert(env[env_key], hints[f.name], env_key)
        elif f.name in values:
            kwargs[f.name] = _convert(values[f.name], hints[f.name], f"[{name}] {f.name}")
    return cls(**kwargs)


def load_config(path: str | Path | None = None, env: Mapping[str, str] | None = None) -> Config:
    """Read ``path`` (if given), then apply ``SHOPCAST_*`` overrides from ``env`` (os.environ)."""
    env = os.environ if env is None else env
    data: dict[str, Any] = {}
    if path is not None:
        try:
            with open(path, "rb") as fh:
                data = tomllib.load(fh)
        except FileNotFoundError as exc:
            raise ConfigError(f"config file {path} not found") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: {exc}") from exc
    hints = typing.get_type_hints(Config)
    unknown = set(data) - set(hints)
    if unknown:
        raise ConfigError(f"unknown section(s) {', '.join(sorted(unknown))}")
    sections: dict[str, Any] = {}
    for name, cls in hints.items():
        values = data.get(name, {})
        if not isinstance(values, dict):
            raise ConfigError(f"[{name}] must be a table")
        if cls is LadderConfig:
            sections[name] = _ladder_section(values, env)
        else:
            sections[name] = _build_section(cls, values, env, name)
    return Config(**sections)


_LADDER_BOOLS = {"passthrough"}


def _ladder_section(values: dict[str, Any], env: Mapping[str, str]) -> LadderConfig:
    """``[transcode]`` is validated by the transcoder's own :meth:`LadderConfig.from_mapping`."""
    merged = dict(values)
    prefix = "SHOPCAST_TRANSCODE_"
    for key, raw in env.items():
        if not key.startswith(prefix):
            continue
        name = key[len(prefix) :].lower()
        if name == "rungs":  # "720p:3000k,360p:730k"
            merged[name] = [r.strip() for r in raw.split(",") if r.strip()]
        elif name in _LADDER_BOOLS:
            merged[name] = _convert(raw, bool, key)
        else:
            merged[name] = raw
    try:
        return LadderConfig.from_mapping(merged)
    except (LadderConfigError, ValueError, TypeError) as exc:
        raise ConfigError(f"[transcode]: {exc}") from exc

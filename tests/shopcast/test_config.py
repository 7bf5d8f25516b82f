import pytest

from shopcast.config import ConfigError, load_config


def test_defaults_without_file() -> None:
    cfg = load_config(None, env={})
    assert cfg.server.rtmp_port == 1935
    assert cfg.server.http_port == 8080
    assert cfg.ingest.on_duplicate_publisher == "takeover"


def test_committed_example_loads() -> None:
    cfg = load_config("shopcast.toml", env={})
    assert cfg.ingest.rtmp_app == "live"
    assert cfg.store.path.endswith(".sqlite3")


def test_env_overrides_every_type(tmp_path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[server]\nhttp_port = 9000\n[api]\ntokens = ["a"]\n')
    env = {
        "SHOPCAST_SERVER_HTTP_PORT": "9191",
        "SHOPCAST_API_TOKENS": "t1, t2",
        "SHOPCAST_INGEST_IDLE_TIMEOUT": "2.5",
        "SHOPCAST_INGEST_ON_DUPLICATE_PUBLISHER": "reject",
    }
    cfg = load_config(path, env=env)
    assert cfg.server.http_port == 9191
    assert cfg.api.tokens == ("t1", "t2")
    assert cfg.ingest.idle_timeout == 2.5
    assert cfg.ingest.on_duplicate_publisher == "reject"


@pytest.mark.parametrize(
    ("toml", "env", "message"),
    [
        ("[server]\nhttp_prot = 1\n", {}, "unknown key"),
        ("[nope]\n", {}, "unknown section"),
        ("[server]\nhttp_port = 'x'\n", {}, "not a valid int"),
        ("", {"SHOPCAST_SERVER_RTMP_PORT": "70000"}, "out of range"),
        ("", {"SHOPCAST_INGEST_ON_DUPLICATE_PUBLISHER": "both"}, "takeover"),
        ("[server\n", {}, "Expected"),
        ("", {"SHOPCAST_CONTINUITY_SLATE_WINDOW": "3601"}, "slate_window"),
        ("", {"SHOPCAST_CONTINUITY_GAP_TIMEOUT": "0"}, "gap_timeout"),
        ("[continuity]\nslate_images = ['shoe.png']\n", {}, "stream_id"),
    ],
)
def test_bad_config_is_a_clear_error(tmp_path, toml: str, env: dict, message: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError, match=message):
        load_config(path, env=env)


def test_missing_file() -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config("/nonexistent/shopcast.toml", env={})


def test_continuity_defaults_and_slate_pictures(tmp_path) -> None:
    cfg = load_config(None, env={})
    assert cfg.continuity.gap_timeout == 1.0 and cfg.continuity.slate_window == 120.0
    path = tmp_path / "c.toml"
    path.write_text(
        '[continuity]\nslate_image = "all.png"\nslate_images = ["shoe-launch = /srv/shoe.png"]\n'
    )
    cfg = load_config(path, env={"SHOPCAST_CONTINUITY_SLATE_WINDOW": "3600"})
    assert cfg.continuity.slate_window == 3600
    assert cfg.continuity.image_for("shoe-launch") == "/srv/shoe.png"
    assert cfg.continuity.image_for("demo") == "all.png"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"SHOPCAST_SRT_PASSPHRASE": "short"}, "srt.passphrase must be 10 to 79 characters"),
        ({"SHOPCAST_SRT_PBKEYLEN": "20"}, "srt.pbkeylen must be 0, 16, 24 or 32"),
        ({"SHOPCAST_SRT_PORT": "70000"}, "srt.port must be within 0..65535"),
        ({"SHOPCAST_SRT_MAX_SESSIONS": "0"}, "srt.max_sessions must be positive"),
    ],
)
def test_srt_section_is_checked(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(None, env)


def test_max_publishers_from_env_and_checked() -> None:
    assert load_config(None, {"SHOPCAST_INGEST_MAX_PUBLISHERS": "40"}).ingest.max_publishers == 40
    with pytest.raises(ConfigError, match=r"ingest\.max_publishers must be positive"):
        load_config(None, {"SHOPCAST_INGEST_MAX_PUBLISHERS": "0"})


def test_read_pacing_from_env_and_checked() -> None:
    ingest = load_config(None, {"SHOPCAST_INGEST_READ_PACING": "0"}).ingest
    assert (ingest.read_pacing, ingest.read_pacing_publishers) == (0.0, 64)
    with pytest.raises(ConfigError, match=r"ingest\.read_pacing must be 0 \(off\) to 0\.5"):
        load_config(None, {"SHOPCAST_INGEST_READ_PACING": "2"})
    with pytest.raises(ConfigError, match=r"ingest\.read_pacing_publishers must be at least 1"):
        load_config(None, {"SHOPCAST_INGEST_READ_PACING_PUBLISHERS": "0"})


def test_srt_section_from_env() -> None:
    srt = load_config(None, {"SHOPCAST_SRT_ENABLED": "off", "SHOPCAST_SRT_LATENCY": "400"}).srt
    assert (srt.enabled, srt.latency, srt.port) == (False, 400, 9000)


def test_cluster_section_defaults_env_and_bounds(tmp_path) -> None:
    cfg = load_config("shopcast.toml", env={})
    assert (cfg.cluster.node_id, cfg.cluster.capacity, cfg.cluster.node_timeout) == ("", 4.0, 6.0)
    env = {"SHOPCAST_CLUSTER_NODE_ID": "origin-a", "SHOPCAST_CLUSTER_NODE_TIMEOUT": "2"}
    cfg = load_config(None, env=env)
    assert (cfg.cluster.node_id, cfg.cluster.node_timeout) == ("origin-a", 2.0)
    for bad, message in (
        ({"SHOPCAST_CLUSTER_CAPACITY": "0"}, "capacity must be positive"),
        ({"SHOPCAST_CLUSTER_NODE_TIMEOUT": "0.1"}, "node_timeout"),
        ({"SHOPCAST_CLUSTER_NODE_ID": "a b"}, "node_id"),
    ):
        with pytest.raises(ConfigError, match=message):
            load_config(None, env=bad)

"""``deploy/kubernetes/`` parsed and checked against the code: the ConfigMap's shopcast.toml
loads, every ``SHOPCAST_*`` variable is a real config key, container ports are the ports the
config listens on, probes use the health paths the servers answer, the command lines parse with
the real CLI, and Services, the autoscaler and Secret references point at things that exist."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from benchmarks.harness.origin import make_config
from cdn_edge.cli import edge_config
from shopcast.health import HEALTHZ, READYZ
from shopcast.server import ShopcastServer

from .contract import DEPLOY, ENV_PREFIX, check_env_name, console_script, load, parse_cli

yaml = pytest.importorskip("yaml")  # PyYAML (requirements-dev.txt)
MANIFESTS = DEPLOY / "kubernetes"
REF = re.compile(r"\$\((\w+)\)")
#: What the downward API gives a pod, as the test's stand-ins.
POD_FIELDS = {"metadata.name": "shopcast-pod-0", "status.podIP": "10.1.2.3"}


def documents() -> list[dict[str, Any]]:
    docs = []
    for path in sorted(MANIFESTS.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is not None:
                doc["__file__"] = path.name
                docs.append(doc)
    return docs


def one(kind: str, name: str) -> dict[str, Any]:
    found = [d for d in documents() if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def workloads() -> list[dict[str, Any]]:
    return [d for d in documents() if d["kind"] in ("Deployment", "StatefulSet")]


def container(workload: dict[str, Any]) -> dict[str, Any]:
    containers = workload["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1, workload["metadata"]["name"]
    return dict(containers[0])


def secret_value(name: str, key: str) -> str:
    data = one("Secret", name).get("stringData", {})
    assert key in data, f"Secret {name} has no key {key}"
    return str(data[key])


def expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` expansion; a reference to an unknown variable fails."""

    def sub(m: re.Match[str]) -> str:
        assert m.group(1) in env, f"$({m.group(1)}) is not defined before it is used"
        return env[m.group(1)]

    return REF.sub(sub, text)


def environment(c: dict[str, Any]) -> dict[str, str]:
    """The container's environment with the test's pod fields and the example Secret's values."""
    env: dict[str, str] = {}
    for item in c.get("env", []):
        name = item["name"]
        if "value" in item:
            env[name] = expand(str(item["value"]), env)
        elif ref := item["valueFrom"].get("fieldRef"):
            env[name] = POD_FIELDS[ref["fieldPath"]]
        elif ref := item["valueFrom"].get("secretKeyRef"):
            env[name] = secret_value(ref["name"], ref["key"])
        else:
            raise AssertionError(f"{name}: unexpected valueFrom {item['valueFrom']}")
    return env


def argv(c: dict[str, Any]) -> list[str]:
    env = environment(c)
    command = [expand(str(a), env) for a in c.get("command", []) + c.get("args", [])]
    assert command[0] == console_script(), command
    return command[1:]


def config_toml() -> str:
    return str(one("ConfigMap", "shopcast-config")["data"]["shopcast.toml"])


def ports(c: dict[str, Any]) -> dict[str, tuple[int, str]]:
    return {p["name"]: (p["containerPort"], p.get("protocol", "TCP")) for p in c["ports"]}


def origin() -> dict[str, Any]:
    (found,) = [w for w in workloads() if argv(container(w))[0] == "serve"]
    return found


def edge() -> dict[str, Any]:
    (found,) = [w for w in workloads() if argv(container(w))[0] == "edge"]
    return found


def origin_config() -> Any:
    env = {k: v for k, v in environment(container(origin())).items() if k.startswith(ENV_PREFIX)}
    return load(config_toml(), env)


def test_every_file_parses_and_the_kustomization_lists_them() -> None:
    docs = documents()
    for doc in docs:
        assert {"apiVersion", "kind"} <= set(doc), doc["__file__"]
        assert doc["kind"] == "Kustomization" or "name" in doc["metadata"], doc["__file__"]
    (kustomization,) = [d for d in docs if d["kind"] == "Kustomization"]
    listed = set(kustomization["resources"])
    files = {p.name for p in MANIFESTS.glob("*.yaml")}
    assert listed <= files
    # Everything but the kustomization and the example Secret (made with kubectl) is applied.
    assert files - listed == {"kustomization.yaml", "secret.example.yaml"}
    images = {c["image"] for w in workloads() for c in w["spec"]["template"]["spec"]["containers"]}
    assert images == {i["name"] for i in kustomization["images"]}


def test_env_names_are_config_keys_and_helpers_are_used() -> None:
    for workload in workloads():
        c = container(workload)
        text = " ".join(str(x) for x in c.get("command", []) + c.get("args", []))
        text += " " + " ".join(str(item.get("value", "")) for item in c.get("env", []))
        for item in c.get("env", []):
            name = item["name"]
            if name.startswith(ENV_PREFIX):
                check_env_name(name)
            else:  # a pod field only there to be put into others
                assert f"$({name})" in text, f"{name} is defined and never used"


def test_origin_config_loads_and_ports_are_the_ones_it_listens_on() -> None:
    config = origin_config()
    c = container(origin())
    assert ports(c) == {
        "rtmp": (config.server.rtmp_port, "TCP"),
        "http": (config.server.http_port, "TCP"),
        "srt": (config.srt.port, "UDP"),
    }
    assert config.store.url.startswith("postgresql://")  # the cluster store, from the Secret
    assert config.srt.enabled and config.server.http_host == config.server.rtmp_host == "0.0.0.0"


def test_origin_advertises_its_own_pod_address() -> None:
    config = origin_config()
    cluster = config.cluster
    assert cluster.node_id == POD_FIELDS["metadata.name"]
    http, rtmp = urlsplit(cluster.http_url), urlsplit(cluster.rtmp_url)
    assert (http.scheme, http.hostname, http.port) == (
        "http",
        POD_FIELDS["status.podIP"],
        config.server.http_port,
    )
    assert (rtmp.scheme, rtmp.hostname, rtmp.port, rtmp.path) == (
        "rtmp",
        POD_FIELDS["status.podIP"],
        config.server.rtmp_port,
        f"/{config.ingest.rtmp_app}",
    )


def test_origin_command_reads_the_mounted_configmap() -> None:
    w = origin()
    c = container(w)
    args = parse_cli(argv(c))
    assert args.command == "serve" and not args.demo
    config_path = Path(args.config)
    volumes = {v["name"]: v for v in w["spec"]["template"]["spec"]["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    volume = volumes[mounts[str(config_path.parent)]]
    assert volume["configMap"]["name"] == "shopcast-config"
    assert config_path.name in one("ConfigMap", "shopcast-config")["data"]
    # The origin's working directory (relative paths) and the record spool are writable mounts.
    config = origin_config()
    assert c["workingDir"] in mounts and not volumes[mounts[c["workingDir"]]].get("configMap")
    assert Path(config.record.path).is_relative_to(c["workingDir"])


def test_edge_command_parses_and_matches_the_origins() -> None:
    c = container(edge())
    args = parse_cli(argv(c))
    assert args.command == "edge"
    settings = edge_config(args, environment(c))  # the edge's own validation, its environment
    assert ports(c) == {"http": (settings.port, "TCP")}
    assert settings.host == "0.0.0.0"
    config = origin_config()
    assert settings.cluster == config.store.url
    assert settings.node_timeout == config.cluster.node_timeout
    assert settings.playback_secret == config.playback.secret
    assert settings.edge_id == POD_FIELDS["metadata.name"]
    # The edge's node row: the pod's address, the port it listens on.
    assert settings.advertise_url == f"http://{POD_FIELDS['status.podIP']}:{settings.port}"
    # Secrets come from the environment, never the command line (visible in `ps`).
    command = " ".join(argv(c))
    assert config.store.url not in command and config.playback.secret not in command


def test_probes_use_the_health_paths_the_servers_answer(tmp_path: Path) -> None:
    routes = {
        r.resource.canonical
        for r in ShopcastServer(make_config(tmp_path)).app.router.routes()
        if r.method == "GET" and r.resource is not None
    }
    assert {HEALTHZ, READYZ} <= routes
    for workload in workloads():
        c = container(workload)
        probes = {k: c[k] for k in ("startupProbe", "livenessProbe", "readinessProbe") if k in c}
        assert {"livenessProbe", "readinessProbe"} <= set(probes), workload["metadata"]["name"]
        for kind, probe in probes.items():
            assert probe["httpGet"]["path"] == (READYZ if kind == "readinessProbe" else HEALTHZ)
            assert probe["httpGet"]["port"] == "http" and "http" in ports(c)


def test_services_and_budgets_select_pods_and_name_their_ports() -> None:
    services = [d for d in documents() if d["kind"] == "Service"]
    assert services
    for service in services:
        selector = service["spec"]["selector"]
        chosen = [
            w
            for w in workloads()
            if selector.items() <= w["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert len(chosen) == 1, service["metadata"]["name"]
        c = container(chosen[0])
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in ports(c), (service["metadata"]["name"], port)
            assert port.get("protocol", "TCP") == ports(c)[port["targetPort"]][1]
    for budget in [d for d in documents() if d["kind"] == "PodDisruptionBudget"]:
        labels = budget["spec"]["selector"]["matchLabels"].items()
        chosen = [
            w for w in workloads() if labels <= w["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert chosen == [origin()], budget["metadata"]["name"]
    for w in workloads():
        spec = w["spec"]
        labels = spec["template"]["metadata"]["labels"]
        assert spec["selector"]["matchLabels"].items() <= labels.items()
        if w["kind"] == "StatefulSet":
            headless = one("Service", spec["serviceName"])
            assert headless["spec"]["clusterIP"] == "None"


def test_edges_autoscale_on_cpu_they_request() -> None:
    (hpa,) = [d for d in documents() if d["kind"] == "HorizontalPodAutoscaler"]
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", edge()["metadata"]["name"])
    assert edge()["kind"] == "Deployment"
    assert 1 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]
    metrics = hpa["spec"]["metrics"]
    assert any(m["type"] == "Resource" and m["resource"]["name"] == "cpu" for m in metrics)
    assert container(edge())["resources"]["requests"]["cpu"]  # utilization is against this


def test_a_misnamed_variable_or_flag_is_caught() -> None:
    """The checks above fail on drift: a renamed key, an unknown flag."""
    with pytest.raises(AssertionError, match="SHOPCAST_CLUSTER_NODE_TIMEOUTS"):
        check_env_name("SHOPCAST_CLUSTER_NODE_TIMEOUTS")
    with pytest.raises(AssertionError, match="no such"):
        check_env_name("SHOPCAST_TRANSCODE_RUNG")
    with pytest.raises(AssertionError, match="unrecognized arguments: --origins"):
        parse_cli(["edge", "--origin", "http://a:8080", "--origins", "http://b:8080"])

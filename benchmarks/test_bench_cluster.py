"""Cluster benchmarks: what a cluster asks of PostgreSQL, and what a hop between origins costs.

(a) **PostgreSQL load per origin, scaled by simulation.** 200 simulated origins × 20 live shows
on a PostgreSQL started for the run (``benchmarks/harness/postgres.py``, durable: tags are
committed to disk before their 201), through the store's own
methods (``shopcast/store/postgres.py``): each origin heartbeats its node row and renews its 20
stream leases every ``node_timeout / 3`` (2 s) on an absolute schedule, and every show writes
50 tags/s — offered together 100 heartbeats/s, 100 lease renewals/s (4,000 leases) and 200,000
tag inserts/s. Three phases: the control plane alone; the control plane with tag writers going as
fast as the database lets them (achieved vs offered); the control plane with tags at half of that
(latency below saturation). Per operation kind: queries/s achieved vs offered, p50/p99 latency,
leases lost (a renewal that found its lease expired). Whether the load generator or the database
was the limit is measured, not assumed: the generator's CPU time (this process) against the
PostgreSQL processes' and the whole machine's (``/proc``) over the same wall-clock interval, the
writers' mean number in flight (Little's law), and the same INSERT from pgbench (a C client whose
cost is next to nothing) on the same database.

(b) **Tag latency across origins** (``test_bench_cluster_tag_hop``): a tag POSTed to origin A
for a show owned by origin C, against the same tag POSTed to C itself, in the same run.
"""

from __future__ import annotations

import asyncio
import importlib
import itertools
import os
import random
import re
import resource
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from benchmarks.harness.origin import ffmpeg_publish_args, requires_ffmpeg
from benchmarks.harness.postgres import DB_USER, PostgresServer, requires_postgres
from benchmarks.loadtest.stats import percentile
from shopcast.config import ClusterSection
from shopcast.store.base import TAG_COLUMNS, NodeRecord, TagRecord
from shopcast.store.postgres import PostgresStore

SMOKE = os.environ.get("SHOPCAST_BENCH_SMOKE") == "1"  # tests/benchmarks: tiny sizes
#: The scale the figures are about (issue #15): the simulation offers exactly this load.
ORIGINS, SHOWS_PER_ORIGIN, TAGS_PER_SHOW_S = (20, 20, 50) if SMOKE else (200, 20, 50)
#: ``[cluster] node_timeout``'s default: heartbeat and renew every third of it.
NODE_TIMEOUT = ClusterSection().node_timeout
BEAT = NODE_TIMEOUT / 3
PHASE_SECONDS = 2.0 if SMOKE else 20.0
#: Concurrent tag writers (each an origin's API handler waiting on its insert): connections.
TAG_WRITERS = 4 if SMOKE else 32
CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass
class Kind:
    """One operation kind's samples in a phase."""

    offered_per_s: float
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    first_error: str = ""
    lost_leases: int = 0

    def failed(self, exc: Exception) -> None:
        self.errors += 1
        self.first_error = self.first_error or f"{type(exc).__name__}: {exc}"[:200]

    def figures(self, seconds: float) -> dict[str, Any]:
        achieved = len(self.latencies) / seconds
        return {
            "offered_per_s": round(self.offered_per_s, 1),
            "achieved_per_s": round(achieved, 1),
            "achieved_vs_offered": round(achieved / self.offered_per_s, 4),
            "p50_ms": round(percentile(self.latencies, 0.5) * 1000, 2),
            "p99_ms": round(percentile(self.latencies, 0.99) * 1000, 2),
            # Little's law: queries in the database on average (achieved × mean latency).
            "mean_in_flight": round(sum(self.latencies) / seconds, 2),
            "errors": self.errors,
            "first_error": self.first_error,
            "lost_leases": self.lost_leases,
        }


def postgres_cpu_seconds(server: PostgresServer) -> float:
    """User + system CPU of the PostgreSQL server and every backend (children of the postmaster,
    plus what exited children left in its counters)."""
    postmaster = int((server.data / "postmaster.pid").read_text().split()[0])
    total = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as fh:
                stat = fh.read()
        except OSError:
            continue  # gone meanwhile
        fields = stat.rpartition(")")[2].split()
        pid, ppid = int(entry.name), int(fields[1])
        if pid == postmaster:
            total += sum(int(f) for f in fields[11:15])  # utime stime cutime cstime
        elif ppid == postmaster:
            total += int(fields[11]) + int(fields[12])
    return total / CLK_TCK


def machine_cpu_seconds() -> float:
    """Busy CPU time of the whole machine, all cores (other processes included)."""
    with open("/proc/stat") as fh:
        ticks = [int(x) for x in fh.readline().split()[1:]]
    idle = ticks[3] + ticks[4]  # idle + iowait
    return (sum(ticks[:8]) - idle) / CLK_TCK


def verdict(generator: float, database: float, machine: float) -> str:
    """Which side limited a closed-loop phase, from CPU cores used over it."""
    cores = os.cpu_count() or 1
    if generator >= 0.9:
        return "generator (its one core is full)"
    if machine >= 0.9 * cores:
        others = max(0.0, machine - generator - database)
        return f"machine (all {cores} cores busy; {others:.2f} of them other processes)"
    return "database (waits: no CPU is full)"


def stream_ids(origin: int) -> list[str]:
    return [f"o{origin:03d}-s{show:02d}" for show in range(SHOWS_PER_ORIGIN)]


def node(origin: int, started_at: float) -> NodeRecord:
    return NodeRecord(
        node_id=f"origin-{origin:03d}",
        role="origin",
        http_url=f"http://10.0.{origin // 250}.{origin % 250}:8080",
        rtmp_url=f"rtmp://10.0.{origin // 250}.{origin % 250}:1935/live",
        capacity=4.0,
        load=SHOWS_PER_ORIGIN / 10,
        viewers={},
        started_at=started_at,
    )


#: Tag ids unique over the whole run (every phase writes into the same table).
_TAG_IDS = itertools.count()


def tags(seed: int) -> Iterator[TagRecord]:
    """Product pins like the commerce API sends them, on random shows of the cluster."""
    rnd = random.Random(seed)
    n = 0
    while True:
        n += 1
        now = time.time()
        origin = rnd.randrange(ORIGINS)
        yield TagRecord(
            id=f"t{next(_TAG_IDS)}",
            stream_id=stream_ids(origin)[rnd.randrange(SHOWS_PER_ORIGIN)],
            kind="product",
            product_id=f"sku-{rnd.randrange(100_000)}",
            data={"title": "Canvas sneaker", "price": "59.90", "currency": "EUR"},
            duration=None,
            pts=n * 33,
            program_date_time=now,
            source="api",
            late=False,
            clicks=0,
            created_at=now,
        )


class ClusterLoad:
    """The simulated origins' traffic against one store."""

    def __init__(self, control: PostgresStore, writes: PostgresStore) -> None:
        self.control, self.writes = control, writes
        self.epochs: dict[int, dict[str, int]] = {}
        self.started_at = time.time()

    async def setup(self) -> None:
        """Every origin registered and holding its shows' leases."""
        for origin in range(ORIGINS):
            await self.control.heartbeat_node(node(origin, self.started_at))
            held = {}
            for stream in stream_ids(origin):
                lease = await self.control.acquire_lease(
                    stream, f"origin-{origin:03d}", NODE_TIMEOUT, takeover=False
                )
                assert lease is not None, stream
                held[stream] = lease.epoch
            self.epochs[origin] = held

    async def control_plane(self, kinds: dict[str, Kind], until: float) -> None:
        """Each origin's heartbeat and lease renewal every BEAT s, on an absolute schedule
        (a slow answer does not slow the offered rate)."""
        loop = asyncio.get_running_loop()
        pending: set[asyncio.Task[None]] = set()

        async def timed(kind: str, call: Any) -> None:
            start = time.perf_counter()
            try:
                result = await call
            except Exception as exc:  # counted and shown: the run goes on
                kinds[kind].failed(exc)
                return
            kinds[kind].latencies.append(time.perf_counter() - start)
            if kind == "lease_renewal":
                kinds[kind].lost_leases += len(result)

        def fire(origin: int) -> None:
            rec = node(origin, self.started_at)
            held = self.epochs[origin]
            for kind, call in (
                ("heartbeat", self.control.heartbeat_node(rec)),
                ("lease_renewal", self.control.renew_leases(rec.node_id, held, NODE_TIMEOUT)),
            ):
                task = asyncio.ensure_future(timed(kind, call))
                pending.add(task)
                task.add_done_callback(pending.discard)

        start = loop.time()
        offsets = sorted((random.uniform(0, BEAT), origin) for origin in range(ORIGINS))
        tick = 0
        while True:
            for offset, origin in offsets:
                at = start + tick * BEAT + offset
                if at >= until:
                    await asyncio.gather(*pending)
                    return
                await asyncio.sleep(max(0.0, at - loop.time()))
                fire(origin)
            tick += 1

    async def tag_writers(self, kind: Kind, until: float, rate: float | None) -> None:
        """``TAG_WRITERS`` concurrent inserts: as fast as they complete (``rate`` None), or
        together at ``rate`` per second on an absolute schedule."""
        loop = asyncio.get_running_loop()

        async def writer(seed: int) -> None:
            records = tags(seed)
            n = 0
            start = loop.time()
            while loop.time() < until:
                if rate is not None:
                    n += 1
                    await asyncio.sleep(max(0.0, start + n * TAG_WRITERS / rate - loop.time()))
                begin = time.perf_counter()
                try:
                    await self.writes.insert_tag(next(records))
                except Exception as exc:
                    kind.failed(exc)
                    continue
                kind.latencies.append(time.perf_counter() - begin)

        await asyncio.gather(*(writer(seed) for seed in range(TAG_WRITERS)))


def offered() -> dict[str, float]:
    return {
        "heartbeat": ORIGINS / BEAT,
        "lease_renewal": ORIGINS / BEAT,
        "tag_insert": ORIGINS * SHOWS_PER_ORIGIN * TAGS_PER_SHOW_S,
    }


async def phase(
    load: ClusterLoad, server: PostgresServer, tag_rate: float | None, with_tags: bool
) -> dict[str, Any]:
    """One measured interval; figures per kind, the CPU each side used, and the limit."""
    kinds = {name: Kind(rate) for name, rate in offered().items()}
    if not with_tags:
        del kinds["tag_insert"]
    loop = asyncio.get_running_loop()
    db_before, gen_before, all_before, wall_before = (
        postgres_cpu_seconds(server),
        time.process_time(),
        machine_cpu_seconds(),
        time.perf_counter(),
    )
    until = loop.time() + PHASE_SECONDS
    jobs = [load.control_plane(kinds, until)]
    if with_tags:
        jobs.append(load.tag_writers(kinds["tag_insert"], until, tag_rate))
    await asyncio.gather(*jobs)
    wall = time.perf_counter() - wall_before
    db_cpu = postgres_cpu_seconds(server) - db_before
    gen_cpu = time.process_time() - gen_before
    machine_share = (machine_cpu_seconds() - all_before) / wall
    queries = sum(len(k.latencies) for k in kinds.values())
    generator_share = gen_cpu / wall  # one thread: 1.0 is a full core, its ceiling
    database_share = db_cpu / wall  # many backends: up to the machine's cores
    return {
        "seconds": round(wall, 2),
        "kinds": {name: k.figures(wall) for name, k in kinds.items()},
        "queries": queries,
        "queries_per_s": round(queries / wall, 1),
        "generator_cpu_cores": round(generator_share, 2),
        "database_cpu_cores": round(database_share, 2),
        "machine_cpu_cores": round(machine_share, 2),
        "database_cpu_ms_per_query": round(db_cpu / max(queries, 1) * 1000, 4),
        "limit": verdict(generator_share, database_share, machine_share),
    }


#: The store's tag INSERT for pgbench, column by column (a column the store adds fails here).
PGBENCH_TAG_VALUES = {
    "id": "gen_random_uuid()::text",
    "stream_id": "'o' || lpad(:origin, 3, '0') || '-s' || lpad(:show, 2, '0')",
    "kind": "'product'",
    "product_id": "'sku-' || :sku",
    "data": """'{"title": "Canvas sneaker", "price": "59.90", "currency": "EUR"}'""",
    "duration": "NULL",
    "pts": ":pts",
    "program_date_time": "extract(epoch FROM clock_timestamp())",
    "source": "'api'",
    "late": "false",
    "clicks": "0",
    "created_at": "extract(epoch FROM clock_timestamp())",
    "replay_clicks": "0",
}
TPS = re.compile(r"^tps = ([\d.]+)", re.MULTILINE)


def pgbench_tag_inserts(server: PostgresServer, url: str, folder: Path) -> dict[str, Any]:
    """The same INSERT from pgbench (a C client, prepared statements, TAG_WRITERS connections,
    one thread): what the database does when the generator costs next to nothing."""
    columns = [c.strip() for c in TAG_COLUMNS.split(",")]
    assert set(columns) == set(PGBENCH_TAG_VALUES), "the store's tag columns changed"
    script = folder / "tag_insert.sql"
    script.write_text(
        f"\\set origin random(0, {ORIGINS - 1})\n"
        f"\\set show random(0, {SHOWS_PER_ORIGIN - 1})\n"
        "\\set sku random(0, 99999)\n"
        "\\set pts random(0, 100000000)\n"
        f"INSERT INTO tags ({', '.join(columns)}) "
        f"VALUES ({', '.join(PGBENCH_TAG_VALUES[c] for c in columns)});\n"
    )
    database = url.rsplit("/", 1)[1]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    db_before, all_before = postgres_cpu_seconds(server), machine_cpu_seconds()
    started = time.perf_counter()
    args = ["-n", "-M", "prepared", "-c", str(TAG_WRITERS), "-j", "1", "-l", "-f", str(script)]
    args += ["-T", str(max(1, round(PHASE_SECONDS)))]
    args += ["-h", "127.0.0.1", "-p", str(server.port), "-U", DB_USER, database]
    run = subprocess.run(
        [str(server.bin / "pgbench"), *args],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=PHASE_SECONDS + 120,
    )
    wall = time.perf_counter() - started
    assert run.returncode == 0, run.stderr[-2000:]
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    client_cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    db_cpu = postgres_cpu_seconds(server) - db_before
    machine = (machine_cpu_seconds() - all_before) / wall
    latencies = [
        int(line.split()[2]) / 1e6
        for log in folder.glob("pgbench_log.*")
        for line in log.read_text().splitlines()
    ]
    tps = TPS.search(run.stdout)
    assert tps is not None, run.stdout
    return {
        "tag_inserts_per_s": round(float(tps.group(1)), 1),
        "p50_ms": round(percentile(latencies, 0.5) * 1000, 2),
        "p99_ms": round(percentile(latencies, 0.99) * 1000, 2),
        "generator_cpu_cores": round(client_cpu / wall, 2),
        "database_cpu_cores": round(db_cpu / wall, 2),
        "machine_cpu_cores": round(machine, 2),
        "database_cpu_ms_per_query": round(db_cpu / max(len(latencies), 1) * 1000, 4),
        "limit": verdict(client_cpu / wall, db_cpu / wall, machine),
    }


async def measure_store_load(server: PostgresServer) -> tuple[dict[str, Any], str]:
    url = server.create_database()
    control = PostgresStore(url, pool_size=10)
    writes = PostgresStore(url, pool_size=TAG_WRITERS)
    await control.open()
    await writes.open()
    try:
        load = ClusterLoad(control, writes)
        await load.setup()
        out = {"control_plane_only": await phase(load, server, None, with_tags=False)}
        saturated = await phase(load, server, None, with_tags=True)
        out["tags_as_fast_as_they_go"] = saturated
        half = saturated["kinds"]["tag_insert"]["achieved_per_s"] / 2
        out["tags_at_half_that"] = await phase(load, server, half, with_tags=True)
        return out, url
    finally:
        await writes.close()
        await control.close()


def run_loop(coro: Any) -> Any:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)  # as the origins run; a cheaper generator too


@requires_postgres
def test_bench_cluster_store_load(benchmark: Any, capsys: Any, tmp_path: Path) -> None:
    """PostgreSQL queries/s and latency per operation kind under a simulated cluster's load."""
    server = PostgresServer()
    server.start(durable=True)  # tags are commerce data: committed to disk before the 201
    try:
        result, url = benchmark.pedantic(
            lambda: run_loop(measure_store_load(server)), rounds=1, iterations=1
        )
        c_client = pgbench_tag_inserts(server, url, tmp_path)
    finally:
        server.close()
    saturated = result["tags_as_fast_as_they_go"]
    tag = saturated["kinds"]["tag_insert"]
    # The projection the figures are for: database cores the full offered load would need at
    # the CPU per query measured here (tag inserts: pgbench's, where the generator cost least).
    rates = offered()
    control = result["control_plane_only"]["database_cpu_ms_per_query"]
    cores_needed = (
        rates["tag_insert"] * c_client["database_cpu_ms_per_query"]
        + (rates["heartbeat"] + rates["lease_renewal"]) * control
    ) / 1000
    benchmark.extra_info.update(
        {
            "scale": {
                "origins": ORIGINS,
                "shows_per_origin": SHOWS_PER_ORIGIN,
                "tags_per_show_s": TAGS_PER_SHOW_S,
                "node_timeout_s": NODE_TIMEOUT,
                "tag_writers": TAG_WRITERS,
                "phase_seconds": PHASE_SECONDS,
            },
            **result,
            "tag_inserts_from_pgbench": c_client,
            "database_cores_for_full_offered_load": round(cores_needed, 1),
            "summary": {
                "ratio": tag["achieved_vs_offered"],
                "reference": (
                    f"tag inserts offered by {ORIGINS} origins × {SHOWS_PER_ORIGIN} shows × "
                    f"{TAGS_PER_SHOW_S}/s, one PostgreSQL on this machine"
                ),
                "value": (
                    f"{tag['achieved_per_s']:,.0f} tag inserts/s achieved (p99 "
                    f"{tag['p99_ms']} ms); control plane p99 "
                    f"{saturated['kinds']['lease_renewal']['p99_ms']} ms; limit: "
                    f"{saturated['limit']}"
                ),
            },
        }
    )
    lines = [
        f"\nPostgreSQL under {ORIGINS} origins × {SHOWS_PER_ORIGIN} shows "
        f"({TAGS_PER_SHOW_S} tags/s per show), {PHASE_SECONDS:g} s per phase",
        f"{'phase / kind':<34}{'offered/s':>11}{'achieved/s':>12}{'p50 ms':>9}{'p99 ms':>9}"
        f"{'lost':>6}",
    ]
    for name, figures in result.items():
        lines.append(
            f"{name}: {figures['queries_per_s']:,.0f} q/s; CPU generator "
            f"{figures['generator_cpu_cores']} core, database {figures['database_cpu_cores']} "
            f"cores ({figures['database_cpu_ms_per_query']} ms/query); limit: {figures['limit']}"
        )
        for kind, k in figures["kinds"].items():
            lines.append(
                f"  {kind:<32}{k['offered_per_s']:>11,.0f}{k['achieved_per_s']:>12,.0f}"
                f"{k['p50_ms']:>9}{k['p99_ms']:>9}{k['lost_leases']:>6}"
            )
    lines.append(
        f"pgbench, same INSERT, {TAG_WRITERS} connections: {c_client['tag_inserts_per_s']:,.0f}"
        f"/s, p50 {c_client['p50_ms']} ms, p99 {c_client['p99_ms']} ms; CPU client "
        f"{c_client['generator_cpu_cores']} core, database {c_client['database_cpu_cores']} "
        f"cores; limit: {c_client['limit']}"
    )
    lines.append(f"database cores for the full offered load at this cost: {cores_needed:.1f}")
    with capsys.disabled():
        print("\n".join(lines))
    for figures in result.values():  # correctness, not speed: no query failed
        for k in figures["kinds"].values():
            assert k["errors"] == 0, figures


# -- (b) a tag POSTed to origin A for a show owned by origin C --------------------------------

# The e2e helpers, imported by name so mypy (run on benchmarks/) skips those modules: the tag
# API calls, and `shopcast serve` origins on one PostgreSQL.
_api: Any = importlib.import_module("tests.e2e.test_tags_api")
_pg: Any = importlib.import_module("tests.e2e.test_store_postgres")
_tags: Any = importlib.import_module("benchmarks.test_bench_tags")
HOP_TAGS = 10 if SMOKE else 100
HOP_PUBLISH = 30.0 if SMOKE else 100.0


async def wait_owner(http: Any, base: str, node_id: str, timeout: float = 30.0) -> None:
    """Until ``base`` says ``node_id`` owns the demo stream."""
    deadline = time.monotonic() + timeout
    while True:
        async with http.get(f"{base}/api/v1/streams/demo") as r:
            body = await r.json()
        if (body.get("origin") or {}).get("node_id") == node_id:
            return
        assert time.monotonic() < deadline, f"{node_id} never owned the stream: {body}"
        await asyncio.sleep(0.2)


async def measure_tag_hop(tmp_path: Path, url: str) -> dict[str, Any]:
    envs = {
        name: _pg.pg_env(
            tmp_path / name,
            url,
            SHOPCAST_API_TOKENS=_api.API_TOKEN,
            SHOPCAST_CLUSTER_NODE_ID=name,
            SHOPCAST_RECORD_ENABLED="false",  # not the point here; the machine is shared
            SHOPCAST_SRT_ENABLED="false",
        )
        for name in ("A", "B", "C")
    }
    a, c = envs["A"].http, envs["C"].http
    async with _pg.serving_all(*envs.values()), aiohttp.ClientSession(headers=_api.AUTH) as http:
        async with http.post(f"{c}/api/v1/streams/demo/key") as r:
            assert r.status == 200, await r.text()
            key = (await r.json())["stream_key"]
        args = ffmpeg_publish_args(
            envs["C"].rtmp_url(key), seconds=HOP_PUBLISH, size="360x640", realtime=True
        )
        publisher = await asyncio.create_subprocess_exec(
            *args, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
        )
        try:
            await _api.wait_live(http, c)
            await wait_owner(http, a, "C")
            names = await _api.renditions(http, c)
            seen: dict[str, dict[str, float]] = {name: {} for name in names}
            stop = asyncio.Event()
            viewers = [
                asyncio.ensure_future(
                    _tags.follow(http, f"{c}/hls/demo/{name}/index.m3u8", seen[name], stop)
                )
                for name in names
            ]
            posted: list[tuple[str, str, float, float]] = []  # (via, id, sent, acked)
            rng = random.Random(11)
            try:
                await asyncio.sleep(1.0)  # the viewers are holding requests
                for i in range(HOP_TAGS):
                    # Alternating, so both paths see the same moments of the show and machine;
                    # a random phase against the part clock samples the wait for the next part.
                    via, base = ("A", a) if i % 2 else ("C", c)
                    await asyncio.sleep(rng.uniform(0.15, 0.45))
                    sent = time.perf_counter()
                    status, tag = await _api.post_tag(
                        http, base, {"kind": "product", "product_id": f"hop{i}"}
                    )
                    assert status == 201, tag
                    posted.append((via, tag["id"], sent, time.perf_counter()))
                deadline = time.monotonic() + 5
                while time.monotonic() < deadline and not all(
                    p[1] in seen[n] for n in names for p in posted
                ):
                    await asyncio.sleep(0.1)
            finally:
                stop.set()
                await asyncio.gather(*viewers)
            listed = {via: await _api.get_tags(http, base) for via, base in (("A", a), ("C", c))}
        finally:
            if publisher.returncode is None:
                publisher.kill()
            await publisher.wait()
    for tags_listed in listed.values():  # every acknowledged tag is listed on both origins
        assert all(p[1] in tags_listed for p in posted)
    out: dict[str, Any] = {"renditions": names}
    for via in ("A", "C"):
        mine = [p for p in posted if p[0] == via]
        visible = [seen[n][p[1]] - p[2] for n in names for p in mine if p[1] in seen[n]]
        assert len(visible) == len(mine) * len(names), f"via {via}: tags never seen"
        out[via] = {
            "tags": len(mine),
            "api_p50_ms": round(percentile([ack - s for *_, s, ack in mine], 0.5) * 1000, 1),
            "api_p95_ms": round(percentile([ack - s for *_, s, ack in mine], 0.95) * 1000, 1),
            "visible_p50_ms": round(percentile(visible, 0.5) * 1000, 1),
            "visible_p95_ms": round(percentile(visible, 0.95) * 1000, 1),
        }
    return out


@requires_postgres
@requires_ffmpeg
def test_bench_cluster_tag_hop(benchmark: Any, capsys: Any, tmp_path: Path) -> None:
    """Tag POSTed to A for a show owned by C → DATERANGE in C's held blocking playlists, against
    the tag POSTed to C itself (the one-machine path), alternating in one run."""
    server = PostgresServer()
    server.start()
    try:
        url = server.create_database()
        result = benchmark.pedantic(
            lambda: asyncio.run(measure_tag_hop(tmp_path, url)), rounds=1, iterations=1
        )
    finally:
        server.close()
    hop, local = result["A"], result["C"]
    ratio = hop["visible_p50_ms"] / local["visible_p50_ms"]
    benchmark.extra_info.update(
        {
            **result,
            "visible_p50_ratio": round(ratio, 2),
            "api_p50_ratio": round(hop["api_p50_ms"] / local["api_p50_ms"], 2),
            "summary": {
                "ratio": ratio,
                "reference": "the same tag POSTed to the owning origin itself, same run",
                "value": (
                    f"visible p50 {hop['visible_p50_ms']} ms via A vs {local['visible_p50_ms']}"
                    f" ms on C; API p50 {hop['api_p50_ms']} vs {local['api_p50_ms']} ms"
                ),
            },
        }
    )
    lines = [
        f"\ntag → DATERANGE in C's held blocking playlists, ms ({result['renditions']})",
        f"{'POSTed to':<22}{'tags':>6}{'API p50':>9}{'API p95':>9}{'vis p50':>9}{'vis p95':>9}",
    ]
    for via, label in (("C", "C (owner, 1 machine)"), ("A", "A (forwards to C)")):
        r = result[via]
        lines.append(
            f"{label:<22}{r['tags']:>6}{r['api_p50_ms']:>9}{r['api_p95_ms']:>9}"
            f"{r['visible_p50_ms']:>9}{r['visible_p95_ms']:>9}"
        )
    lines.append(f"ratio (visible p50, A / C): {ratio:.2f}")
    with capsys.disabled():
        print("\n".join(lines))

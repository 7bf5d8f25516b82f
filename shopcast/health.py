"""Probes for load balancers and orchestrators: ``GET /healthz`` (the process answers: liveness)
and ``GET /readyz`` (it can take publishers and viewers now: readiness), on origins and edges.

Liveness never looks at the database: an origin whose database is away keeps its live shows
playing from memory (a restart would end them), so only readiness goes down with it.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Mapping

from aiohttp import web

#: A readiness check: ``None`` when fine, else why not (one short line).
ReadinessCheck = Callable[[], Awaitable[str | None]]
HEALTHZ, READYZ = "/healthz", "/readyz"
#: Longer than this and a check counts as failed: probes (haproxy, kubelet) time out at 1–2 s.
CHECK_TIMEOUT = 1.0
#: How much of a failure reason a probe answer carries (they may quote a database error).
_REASON_CHARS = 200
#: A probe's answer is about this moment: never cached (the edge or a CDN must not keep it).
NO_STORE = {"Cache-Control": "no-store"}
LIVE_BODY = json.dumps({"status": "alive"}).encode()


class Readiness:
    """Named checks run together on each ``/readyz``; ``closing`` fails them all at once (a
    node shutting down leaves the load balancer before it stops accepting)."""

    def __init__(self, checks: Mapping[str, ReadinessCheck] | None = None) -> None:
        self.checks: dict[str, ReadinessCheck] = dict(checks or {})
        self.closing = False

    async def report(self) -> tuple[int, bytes]:
        """HTTP status (200 ready, 503 not) and the JSON body naming each check's result."""
        names = list(self.checks)
        results = await asyncio.gather(*(self._run(self.checks[n]) for n in names))
        checks = {name: why or "ok" for name, why in zip(names, results, strict=True)}
        if self.closing:
            checks["shutdown"] = "the node is shutting down"
        ready = all(v == "ok" for v in checks.values())
        body = {"status": "ready" if ready else "not_ready", "checks": checks}
        return (200 if ready else 503), json.dumps(body).encode()

    @staticmethod
    async def _run(check: ReadinessCheck) -> str | None:
        try:
            why = await asyncio.wait_for(check(), CHECK_TIMEOUT)
        except TimeoutError:
            return f"no answer within {CHECK_TIMEOUT:g} s"
        except Exception as exc:  # a probe reports a failure, it never raises one
            why = f"{type(exc).__name__}: {exc}"
        return why[:_REASON_CHARS] if why is not None else None


def add_health_routes(app: web.Application, readiness: Readiness) -> None:
    """Mount ``/healthz`` and ``/readyz`` (no token: probes carry none)."""

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(body=LIVE_BODY, content_type="application/json", headers=NO_STORE)

    async def readyz(_: web.Request) -> web.Response:
        status, body = await readiness.report()
        return web.Response(
            status=status, body=body, content_type="application/json", headers=NO_STORE
        )

    app.router.add_get(HEALTHZ, healthz)
    app.router.add_get(READYZ, readyz)

"""The ingest path alone, as a process: ``shopcast serve``'s RTMP server and stream registry, a
hub per publisher and one reader draining it (where the transcoder would read), no packaging,
no HTTP, no store (every key is its own stream id).

Run with ``python -P <this file> PORT`` and ``PYTHONPATH`` a checkout (it imports only that
checkout's ``ingest``, so an older tree is measured the same way); it prints ``listening`` when
ready, and on stdin ``report`` one JSON line (sessions started, live now, hub drops); ``quit``
ends it.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

from ingest.rtmp.server import RTMPServer, RTMPServerSettings
from ingest.sessions import LiveStreams


async def main(port: int) -> None:
    async def authorize(key: str) -> str | None:
        return key

    streams = LiveStreams(authorize, hub_queue_size=512)
    readers: list[Any] = []
    tasks: set[asyncio.Task[None]] = set()
    started = 0

    async def drain(reader: Any) -> None:
        async for _ in reader:
            pass

    def session_started(session: Any) -> None:
        nonlocal started
        started += 1
        reader = session.hub.add_reader("transcode")
        readers.append(reader)
        task = asyncio.get_running_loop().create_task(drain(reader))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    streams.on_session_start.append(session_started)
    server = RTMPServer(streams, RTMPServerSettings(app="live"))
    await server.start("127.0.0.1", port)
    print("listening", flush=True)
    loop = asyncio.get_running_loop()
    stdin = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    while line := (await stdin.readline()).decode().strip():
        if line == "report":
            dropped = sum(r.stats.dropped for r in readers)
            report = {"sessions": started, "live": len(streams.sessions), "hub_dropped": dropped}
            print(json.dumps(report), flush=True)
        elif line == "quit":
            break
    await server.close()


if __name__ == "__main__":
    try:
        import uvloop

        uvloop.run(main(int(sys.argv[1])))
    except ImportError:
        asyncio.run(main(int(sys.argv[1])))

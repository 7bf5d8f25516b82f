"""Viewers per stream: distinct clients seen within the last ``window`` seconds."""

from __future__ import annotations


class ViewerTracker:
    """Counts a client (token, or address + User-Agent) once per stream while it keeps asking."""

    def __init__(self, window: float = 15.0) -> None:
        self.window = window
        self._seen: dict[str, dict[str, float]] = {}

    def seen(self, stream: str, client: str, now: float) -> None:
        self._seen.setdefault(stream, {})[client] = now

    def counts(self, now: float) -> dict[str, int]:
        """Per-stream counts, forgetting clients (and streams) quiet for longer than the window."""
        horizon = now - self.window
        out: dict[str, int] = {}
        for stream in list(self._seen):
            clients = self._seen[stream]
            for client in [c for c, t in clients.items() if t < horizon]:
                del clients[client]
            if clients:
                out[stream] = len(clients)
            else:
                del self._seen[stream]
        return out

"""Host ICE candidates on configured addresses and a UDP port range.

aiortc has no setting for either: its ICE agent (aioice ``Connection``) binds an ephemeral port
on every interface address except 127.0.0.1. A media server wants its candidates where the
firewall lets UDP in, and tests want loopback only, so for a peer connection with such a policy
we replace the agent's ``gather_candidates`` with one that binds where we say. Server-reflexive
candidates (STUN, ``[whip] ice_servers``) are still gathered for each host socket; TURN relays
are only used with the default policy (no addresses, no port range), which leaves aioice alone.
"""

from __future__ import annotations

import asyncio
import ipaddress
import random
from dataclasses import dataclass

from aioice import Candidate
from aioice.candidate import candidate_foundation, candidate_priority
from aioice.ice import (
    Connection,
    StunProtocol,
    get_host_addresses,
    server_reflexive_candidate,
)
from aiortc import RTCPeerConnection


class PortRangeExhausted(OSError):
    """Every port of the configured range is taken."""


@dataclass(frozen=True, slots=True)
class CandidatePolicy:
    """Where host candidates live: ``addresses`` (empty: every interface) and ports (0: any)."""

    addresses: tuple[str, ...] = ()
    port_min: int = 0
    port_max: int = 0

    @property
    def is_default(self) -> bool:
        return not self.addresses and not self.port_min

    def apply(self, pc: RTCPeerConnection) -> None:
        """Use this policy for ``pc``'s ICE agents; call before ``setLocalDescription``."""
        if self.is_default:
            return
        for transceiver in pc.getTransceivers():
            gatherer = transceiver.receiver.transport.transport.iceGatherer
            connection: Connection = gatherer._connection
            if not getattr(connection, "_shopcast_policy", False):
                connection._shopcast_policy = True  # type: ignore[attr-defined]
                connection.gather_candidates = _Gatherer(self, connection)  # type: ignore[method-assign]


class _Gatherer:
    """Replacement for ``Connection.gather_candidates`` (same contract, our sockets)."""

    def __init__(self, policy: CandidatePolicy, connection: Connection) -> None:
        self.policy = policy
        self.connection = connection

    async def __call__(self) -> None:
        conn = self.connection
        if conn._local_candidates_start:
            return
        conn._local_candidates_start = True
        addresses = list(self.policy.addresses) or get_host_addresses(
            use_ipv4=conn._use_ipv4, use_ipv6=conn._use_ipv6
        )
        for component in sorted(conn._components):
            for address in addresses:
                protocol = await self._bind(address)
                host, port = protocol.transport.get_extra_info("sockname")[:2]
                protocol.local_candidate = Candidate(
                    foundation=candidate_foundation("host", "udp", host),
                    component=component,
                    transport="udp",
                    priority=candidate_priority(component, "host"),
                    host=host,
                    port=port,
                    type="host",
                )
                conn._protocols.append(protocol)
                conn._local_candidates.append(protocol.local_candidate)
                if conn.stun_server and ipaddress.ip_address(host).version == 4:
                    try:
                        srflx, _ = await server_reflexive_candidate(protocol, conn.stun_server)
                    except Exception:  # no STUN answer: host candidates only
                        continue
                    conn._local_candidates.append(srflx)
        conn._local_candidates_end = True

    async def _bind(self, address: str) -> StunProtocol:
        loop = asyncio.get_running_loop()
        lo, hi = self.policy.port_min, self.policy.port_max
        ports = list(range(lo, hi + 1)) if lo else [0]
        random.shuffle(ports)  # concurrent sessions should not race for the same first port
        for port in ports:
            try:
                _, protocol = await loop.create_datagram_endpoint(
                    lambda: StunProtocol(self.connection), local_addr=(address, port)
                )
            except OSError:
                continue
            return protocol
        raise PortRangeExhausted(f"no free UDP port on {address} in {lo}..{hi}")

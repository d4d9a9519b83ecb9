"""Whole stacks (StackCore, and tcpcrypt on top) on the simulated network, virtual clock.

Issue 4's property: for any impairment mix up to 10% loss, 25% reordering, 5% duplication
and 1% corruption, a transfer between two stacks delivers exactly the sent bytes and both
ends close cleanly, with tcpcrypt on and off.  `TCPSTACK_SIM_EXAMPLES=500` runs many more.
"""
from __future__ import annotations

import hashlib
import ipaddress
import os
import random

from hypothesis import HealthCheck, given, settings, strategies as st

from tcpcrypt.provider import TcpcryptProvider
from tcpstack.host.endpoint import Closed, Data, Eof, Established
from tcpstack.sim import LinkConfig, Network, StackHost
from tcpstack.host.stack import StackCore

A, B = "10.0.0.1", "10.0.0.2"
EXAMPLES = int(os.environ.get("TCPSTACK_SIM_EXAMPLES", "12"))


class App(StackHost):
    """A SimHost: a StackCore plus a tiny application reacting to endpoint events."""

    def __init__(self, core: StackCore) -> None:
        super().__init__(core)
        self.received = bytearray()
        self.events: list[str] = []
        self.closed_error: list[BaseException | None] = []
        self.on_established = None
        self.reply_on_eof = True

    def react(self) -> None:
        for lst in self.core.pop_ready_listeners():
            while (ep := lst.accept()) is not None:
                self._drain(ep)
        for ep in self.core.pop_ready():
            self._drain(ep)

    def _drain(self, ep) -> None:
        while (ev := ep.next_event()) is not None:
            if isinstance(ev, Established):
                self.events.append("established")
                if self.on_established:
                    self.on_established(ep)
            elif isinstance(ev, Data):
                self.received += ev.data
            elif isinstance(ev, Eof):
                self.events.append("eof")
                ep.close(self.core.now)              # our side is done too: FIN back
            elif isinstance(ev, Closed):
                self.events.append("closed")
                self.closed_error.append(ev.error)


def run_transfer(seed: int, cfg: LinkConfig, encrypted: bool, size: int) -> tuple[App, App, bytes, float]:
    rng = random.Random(seed)
    data = rng.randbytes(size)
    sec = (lambda: TcpcryptProvider()) if encrypted else (lambda: None)
    client = App(StackCore([A], security=sec(), rng=random.Random(seed)))
    server = App(StackCore([B], security=sec(), rng=random.Random(seed + 1)))
    net = Network(seed=seed)
    na = net.add_host(client, [ipaddress.ip_address(A).packed])
    nb = net.add_host(server, [ipaddress.ip_address(B).packed])
    net.connect(na, nb, cfg, reverse=cfg)
    server.core.listen(80, B)

    def start_sending(ep) -> None:
        ep.send(data, client.core.now)
        ep.shutdown_write(client.core.now)

    client.on_established = start_sending
    ep = client.core.connect(B, 80, 0.0)
    client.react()
    end = net.run(max_time=600.0, stop=lambda: "closed" in client.events and "closed" in server.events)
    return client, server, data, end


impairments = st.builds(
    lambda loss, reorder, dup, corrupt, delay: LinkConfig(
        delay=delay, loss=loss, reorder=reorder, duplicate=dup, corrupt=corrupt, rate_bps=50e6),
    st.floats(0, 0.10), st.floats(0, 0.25), st.floats(0, 0.05), st.floats(0, 0.01),
    st.sampled_from([0.001, 0.005, 0.02]))


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**31), cfg=impairments, encrypted=st.booleans())
def test_any_impairment_mix_delivers_exact_bytes_and_closes_cleanly(seed, cfg, encrypted):
    client, server, data, end = run_transfer(seed, cfg, encrypted, 150_000)
    assert hashlib.sha256(server.received).digest() == hashlib.sha256(data).digest()
    assert "eof" in server.events and "eof" in client.events
    assert client.closed_error == [None] and server.closed_error == [None], (client.closed_error, server.closed_error)


def test_lossy_encrypted_and_plain_runs_take_seconds_of_virtual_time_not_wall_time():
    cfg = LinkConfig(delay=0.02, loss=0.05, reorder=0.1, duplicate=0.02, corrupt=0.005, rate_bps=20e6)
    for encrypted in (False, True):
        client, server, data, end = run_transfer(7, cfg, encrypted, 1_000_000)
        assert bytes(server.received) == data
        assert client.closed_error == [None] and server.closed_error == [None]
        assert end > 1.0          # a lossy 1 MB over 40 ms RTT takes real (virtual) seconds

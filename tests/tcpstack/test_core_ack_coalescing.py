"""ACK coalescing in the stack core (tcpstack/host/acks.py, StackCore.packets_to_send): the
rule of tcpstack.host.acks.coalesce_acks applied where each segment's connection is known,
so every driver -- the asyncio edge, the simulator, a test -- sends the same ACKs for the same
batch.  Also the queries the edge uses instead of the core's internals (Stack.linger,
Server.close_clients)."""
from __future__ import annotations

import asyncio
import random

import pytest

from tcpstack.aio.streams import Stack
from tcpstack.host.acks import coalesce_acks
from tcpstack.host.endpoint import Established
from tcpstack.host.stack import StackCore
from tcpstack.wire.segment import ACK
from tests.tcpstack.hosts import pump, tcp_of
from tun.memory import MemoryLink

A, B = "10.0.0.1", "10.0.0.2"
# a batch with two holes, each filled within the batch: after the first, quick-ACK mode ACKs
# each in-order segment, and the coalescing keeps one for every second segment
ORDER = [1, 0, 2, 3, 4, 5, 7, 6]


def core(addr: str, seed: int) -> StackCore:
    return StackCore([addr], secret=bytes([seed]) * 32, rng=random.Random(seed))


def sender_and_flight(receiver: "Driver", order: list[int] = ORDER
                      ) -> tuple[StackCore, list[bytes]]:
    """A deterministic sans-IO sender connected to `receiver`, and its next flight of
    full-sized segments (not delivered yet), in `order`."""
    a = core(A, 1)
    ep = a.connect(B, 80, 0.0)
    for _ in range(5):                    # handshake, answered at once
        out = a.packets_to_send()
        if not out:
            break
        for p in receiver.deliver(out, 0.0):
            a.receive_packet(p, 0.0)
    assert isinstance(ep.next_event(), Established)
    ep.send(bytes(len(order) * ep.conn.snd_mss), 0.1)
    flight = a.packets_to_send()
    assert len(flight) == len(order)
    return a, [flight[i] for i in order]


def acks(packets: list[bytes]) -> list[tuple[int, int, tuple[tuple[int, int], ...]]]:
    segs = [tcp_of(p) for p in packets]
    assert all(not s.payload for s in segs)
    return [(s.flags, s.ack, s.sack_blocks) for s in segs]


class Driver:
    def deliver(self, packets: list[bytes], now: float) -> list[bytes]:
        raise NotImplementedError


class CoreDriver(Driver):
    """The receiving core driven directly (as the simulator and the tests drive it)."""

    def __init__(self, coalesce: bool = True) -> None:
        self.core = core(B, 2)
        self.core.coalesce_acks = coalesce
        self.core.listen(80, B)

    def deliver(self, packets: list[bytes], now: float) -> list[bytes]:
        self.core.receive_packets(packets, now)
        return self.core.packets_to_send()


class _RecordingLink:
    """A Link whose sends are kept; what it receives is handed over by deliver()."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.on_packets = None

    def start(self, on_packets) -> None:
        self.on_packets = on_packets

    def send(self, packet: bytes) -> None:
        self.sent.append(bytes(packet))

    def close(self) -> None:
        pass


class EdgeDriver(Driver):
    """The receiving host as the asyncio edge (Stack) over a link."""

    def __init__(self, stack: Stack, link: _RecordingLink) -> None:
        self.stack, self.link = stack, link

    def deliver(self, packets: list[bytes], now: float) -> list[bytes]:
        self.link.on_packets(packets)    # the core, then the edge's flush, synchronously
        out, self.link.sent = self.link.sent, []
        return out


def test_the_core_sends_what_the_rule_keeps_of_its_uncoalesced_flush():
    """The same batch into two identical cores, one with coalescing off: the coalescing core
    sends exactly what coalesce_acks (the rule over raw packets, as the edge applied it
    before) keeps of the other's flush; a superseded ACK was really there to drop."""
    on, off = CoreDriver(True), CoreDriver(False)
    _, batch_on = sender_and_flight(on)
    _, batch_off = sender_and_flight(off)
    assert batch_on == batch_off
    sent = on.deliver(batch_on, 0.11)
    unfiltered = off.deliver(batch_off, 0.11)
    (ep,) = off.core.endpoints()
    assert sent == coalesce_acks(unfiltered, span=ep.conn.ack_span)
    assert len(sent) < len(unfiltered)
    dropped = len(unfiltered) - len(sent)
    assert on.core.stats.acks_coalesced == dropped and off.core.stats.acks_coalesced == 0
    assert on.core.stats.packets_out == off.core.stats.packets_out - dropped
    # the last ACK acknowledges the whole batch at once (RFC 5681 4.2, test_rfc_rules)
    end = max((tcp_of(p).seq + len(tcp_of(p).payload)) & 0xFFFFFFFF for p in batch_on)
    assert acks(sent)[-1] == (ACK, end, ())


async def test_the_asyncio_edge_sends_the_acks_the_core_sends():
    """One batch (reordered full-sized segments: duplicate ACKs with SACK, then the holes
    filled) through the core driven directly and through the asyncio edge: the same ACKs
    leave, in the same order (flags, cumulative ACK, SACK blocks)."""
    direct = CoreDriver()
    _, batch = sender_and_flight(direct)
    expected = acks(direct.deliver(batch, 0.11))

    link = _RecordingLink()
    stack = Stack(link, [B], security=None)
    got_data = asyncio.Event()

    async def sink(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1)
        got_data.set()

    server = await stack.start_server(sink, B, 80)
    edge = EdgeDriver(stack, link)
    _, batch2 = sender_and_flight(edge)
    assert [tcp_of(p).seq for p in batch2] == [tcp_of(p).seq for p in batch]
    assert acks(edge.deliver(batch2, 0.11)) == expected
    await asyncio.wait_for(got_data.wait(), 5)
    assert stack.stats()["acks_coalesced"] == direct.core.stats.acks_coalesced > 0
    server.close()
    stack.close()


def test_duplicate_acks_are_kept_while_the_hole_stays_open():
    """Out-of-order segments behind a hole get their duplicate ACKs (RFC 5681 3.2, the
    sender's loss signal, each with its SACK blocks), all of them, even within one batch:
    only a strictly greater ACK supersedes."""
    b = CoreDriver()
    order = [0, 1, 3, 4, 2, 5, 7, 6]
    _, batch = sender_and_flight(b, order)
    lost = batch[order.index(2)]
    sent = acks(b.deliver([p for p in batch if p is not lost], 0.11))
    # segments 0 and 1 get their ACK (every second segment), then one duplicate ACK per
    # segment beyond the hole
    assert sent[0] == (ACK, tcp_of(lost).seq, ())
    dups = sent[1:]
    assert len(dups) == len(order) - 3
    assert all(a[1] == tcp_of(lost).seq and a[2] for a in dups)
    assert b.core.stats.acks_coalesced == 0


def test_simulator_driver_gets_coalesced_flushes_too():
    """The simulator's StackHost hands out StackCore.packets_to_send(): the same rule."""
    from tcpstack.sim import StackHost
    b = CoreDriver()
    host = StackHost(b.core)
    _, batch = sender_and_flight(b)
    b.core.receive_packets(batch, 0.11)
    sent = host.packets_to_send()
    assert sent and b.core.stats.acks_coalesced > 0
    assert all(tcp_of(p).flags == ACK for p in sent)


# --- queries instead of reaching into the core ---------------------------------------------

def test_unacknowledged_and_all_sent_acknowledged():
    a, b = core(A, 1), core(B, 2)
    lst = b.listen(80, B)
    ep = a.connect(B, 80, 0.0)
    pump(a, b, 0.0)
    srv = lst.accept()
    assert srv is not None and ep.all_sent_acknowledged and a.unacknowledged() == []
    ep.send(b"x" * 5000, 0.0)
    assert not ep.all_sent_acknowledged and a.unacknowledged() == [ep]
    for t in (0.0, 0.1, 0.2, 0.3):      # delayed ACKs; the Nagle-held tail, its ACK
        b.handle_timer(t)
        pump(a, b, t)
    assert ep.all_sent_acknowledged and a.unacknowledged() == []
    ep.close(1.0)
    assert ep.fin_queued and not ep.all_sent_acknowledged     # the FIN is not acknowledged
    pump(a, b, 1.0)
    assert ep.all_sent_acknowledged


def test_listener_endpoints_are_its_own_accepted_connections():
    """Listener.endpoints(): what this listener accepted, not every connection on its port
    (another listener on the same port at another address, or an outgoing connection from
    that port, are not its clients)."""
    a = core(A, 1)
    b = StackCore([B, "10.0.0.3"], secret=b"\2" * 32, rng=random.Random(2))
    l2, l3 = b.listen(80, B), b.listen(80, "10.0.0.3")
    e2 = a.connect(B, 80, 0.0)
    e3 = a.connect("10.0.0.3", 80, 0.0)
    pump(a, b, 0.0)
    s2, s3 = l2.accept(), l3.accept()
    assert s2 is not None and s3 is not None
    assert l2.endpoints() == [s2] and l3.endpoints() == [s3]
    assert s2.accepted_by is l2 and s2.listener is None
    s2.abort(0.0)
    assert l2.endpoints() == []
    assert e2 and e3


async def test_server_close_clients_closes_only_its_own_clients():
    la, lb = MemoryLink.pair()
    sa = Stack(la, [A], security=None)
    sb = Stack(lb, [B, "10.0.0.3"], security=None)
    closed: dict[str, bytes] = {}

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()                 # until the client's EOF, or our close

    s2 = await sb.start_server(handler, B, 80)
    s3 = await sb.start_server(handler, "10.0.0.3", 80)
    r2, w2 = await sa.open_connection(B, 80)
    r3, w3 = await sa.open_connection("10.0.0.3", 80)
    await asyncio.sleep(0.01)
    s2.close_clients()
    closed["2"] = await asyncio.wait_for(r2.read(), 5)       # EOF: the server closed
    await asyncio.sleep(0.01)
    assert not r3.at_eof()
    s3.abort_clients()
    with pytest.raises(ConnectionError):
        await asyncio.wait_for(r3.read(), 5)
    assert closed["2"] == b""
    for w in (w2, w3):
        w.close()
    for s in (s2, s3):
        s.close()
    sa.close()
    sb.close()

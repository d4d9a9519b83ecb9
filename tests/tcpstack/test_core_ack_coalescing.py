"""ACK coalescing in the stack core (tcpstack/host/acks.py, StackCore.packets_to_send): the
rule of tcpstack.host.acks.coalesce_acks applied where each segment's connection is known,
so every driver -- the asyncio edge, the simulator, a test -- sends the same ACKs for the same
batch."""
from __future__ import annotations

import asyncio
import random

from tcpstack.aio.streams import Stack
from tcpstack.host.acks import coalesce_acks
from tcpstack.host.endpoint import Established
from tcpstack.host.stack import StackCore
from tcpstack.wire.segment import ACK
from tests.tcpstack.hosts import tcp_of

A, B = "10.0.0.1", "10.0.0.2"
ORDER = [0, 1, 3, 4, 2, 5, 7, 6]    # a batch with two holes, each filled within the batch


def core(addr: str, seed: int) -> StackCore:
    return StackCore([addr], secret=bytes([seed]) * 32, rng=random.Random(seed))


def sender_and_flight(receiver: "Driver") -> tuple[StackCore, list[bytes]]:
    """A deterministic sans-IO sender connected to `receiver`, and its next flight of
    full-sized segments (not delivered yet)."""
    a = core(A, 1)
    ep = a.connect(B, 80, 0.0)
    for _ in range(5):                    # handshake, answered at once
        out = a.packets_to_send()
        if not out:
            break
        for p in receiver.deliver(out, 0.0):
            a.receive_packet(p, 0.0)
    assert isinstance(ep.next_event(), Established)
    ep.send(bytes(len(ORDER) * ep.conn.snd_mss), 0.1)
    flight = a.packets_to_send()
    assert len(flight) == len(ORDER)
    return a, [flight[i] for i in ORDER]


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
    assert sent == coalesce_acks(unfiltered)
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
    _, batch = sender_and_flight(b)
    lost = batch[ORDER.index(2)]
    sent = acks(b.deliver([p for p in batch if p is not lost], 0.11))
    assert len(sent) == len(ORDER) - 3              # one per segment beyond the hole
    assert all(a[1] == tcp_of(lost).seq and a[2] for a in sent)
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

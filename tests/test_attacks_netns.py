"""Blind attacks from a third namespace (issue 5), on real TUN devices and kernel routing.

Stacks A and B (two namespaces, veth between, tun.topology.TwoHosts) hold two connections
each moving data both ways while an off-path attacker (a third namespace, tun.topology.
Attacker) sends tens of thousands of spoofed RSTs, SYNs and data segments with the right
4-tuples and guessed sequence numbers (tests/blind_attacker.py).  RFC 5961: no connection
may be reset, no forged byte delivered; the victims answer in-window guesses with challenge
ACKs, which the counters must show."""
from __future__ import annotations

import asyncio
import hashlib
import json
import os
import subprocess
import sys

import pytest

from tcpstack.aio.streams import Stack
from tun.topology import Attacker, TwoHosts

pytestmark = pytest.mark.tun

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHUNK = 32 << 10
ATTACK_DEADLINE = 150      # s; the attack itself takes a few seconds, the test's timeout is 240


def chunk(tag: bytes, i: int) -> bytes:
    return hashlib.sha256(tag + i.to_bytes(4, "big")).digest() * (CHUNK // 32)


async def pump_until(writer: asyncio.StreamWriter, tag: bytes, done: asyncio.Event) -> str:
    """Write chunks until the attack is over (so every attack packet meets live traffic),
    then half-close; returns the SHA-256 of everything written."""
    h = hashlib.sha256()
    i = 0
    while not done.is_set() or i < 8:
        c = chunk(tag, i)
        writer.write(c)
        h.update(c)
        await writer.drain()
        await asyncio.sleep(0.005)
        i += 1
    writer.write_eof()
    return h.hexdigest()


async def drain_all(reader: asyncio.StreamReader) -> str:
    h = hashlib.sha256()
    while data := await reader.read(1 << 16):
        h.update(data)
    return h.hexdigest()


@pytest.mark.parametrize("encrypt", [True, False], ids=["tcpcrypt", "plain"])
@pytest.mark.timeout(240)
async def test_blind_attacks_from_a_third_namespace_reset_and_corrupt_nothing(encrypt, procs):
    with TwoHosts() as net, Attacker(net) as att:
        la, lb = net.links()
        addr_a, addr_b = net.stack_addrs
        sa = Stack(la, [addr_a], security=None if not encrypt else "default")
        sb = Stack(lb, [addr_b], security=None if not encrypt else "default")
        attack_over = asyncio.Event()
        results: dict = {}
        server_tasks = []

        async def serve(reader, writer):
            server_tasks.append(asyncio.current_task())
            port = writer.get_extra_info("peername")[1]
            sent, got = await asyncio.gather(pump_until(writer, b"B%d" % port, attack_over),
                                             drain_all(reader))
            results[("b", port)] = (sent, got, writer.get_extra_info("tcpcrypt_session_id"))
            writer.close()

        server = await sb.start_server(serve, addr_b, 443)
        conns = [await sa.open_connection(addr_b, 443) for _ in range(2)]
        eps = [w.get_extra_info("endpoint") for _, w in conns]
        await asyncio.sleep(0.2)
        server_eps = [ep for ep in sb.connections() if ep.local[1] == 443]
        assert len(server_eps) == 2
        # The attacker knows both 4-tuples (it could observe which ports are in use), in both
        # directions; never the sequence numbers.
        targets = []
        for ep in eps:
            targets.append([addr_a, addr_b, ep.local[1], 443])   # to B, as if from A
            targets.append([addr_b, addr_a, 443, ep.local[1]])   # to A, as if from B
        spec = json.dumps({"targets": targets, "step": 1 << 19, "syns": 1000, "seed": 5961})
        env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
        # Ended by the procs fixture even if this test fails or times out; it also exits by
        # itself if pytest dies (--parent) and after ATTACK_DEADLINE seconds in any case.
        attacker = await procs.exec(
            sys.executable, os.path.join(ROOT, "tests", "blind_attacker.py"),
            "--parent", str(os.getpid()), "--deadline", str(ATTACK_DEADLINE), netns=att.ns,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)

        async def attack():
            out, err = await attacker.communicate(spec.encode())
            attack_over.set()
            assert attacker.returncode == 0, err.decode()
            return json.loads(out)

        async def client(reader, writer):
            port = writer.get_extra_info("sockname")[1]
            sent, got = await asyncio.gather(pump_until(writer, b"A%d" % port, attack_over),
                                             drain_all(reader))
            results[("a", port)] = (sent, got, writer.get_extra_info("tcpcrypt_session_id"))
            writer.close()

        counts, *_ = await asyncio.gather(attack(), *(client(r, w) for r, w in conns))
        for _ in range(200):
            if len(results) == 4:
                break
            await asyncio.sleep(0.05)
        server.close()

        assert counts["sent"] >= 10_000, counts
        # Nothing reset, nothing forged: every byte stream arrived exactly, both ways.
        for ep in eps:
            port = ep.local[1]
            a_sent, a_got, a_sid = results[("a", port)]
            b_sent, b_got, b_sid = results[("b", port)]
            assert a_got == b_sent and b_got == a_sent
            assert a_sid == b_sid and (a_sid is not None) == encrypt
        victims = eps + server_eps
        stats = [ep.conn.stats for ep in victims]
        challenge = sum(s.challenge_acks + s.challenge_acks_throttled for s in stats)
        dropped = sum(s.dropped_segments for s in stats)
        print(f"attack {counts}; challenge ACKs {challenge} "
              f"(sent {sum(s.challenge_acks for s in stats)}), dropped {dropped}")
        # The in-window guesses really reached the RFC 5961 checks (not only the out-of-window
        # path): every SYN and every in-window RST asks for a challenge ACK.
        assert challenge >= 1000, stats
        assert sum(s.challenge_acks for s in stats) > 0
        sa.close()
        sb.close()

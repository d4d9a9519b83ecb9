"""Bind application authentication to the tcpcrypt session ID (RFC 8548 3.4, RFC 8547 5.1).

tcpcrypt alone is unauthenticated: it stops passive eavesdropping, not a man in the middle
who runs two tcpcrypt sessions and relays between them.  But the two sessions then have
*different* session IDs, so if both ends prove knowledge of a pre-shared key over the session
ID (here an HMAC, exchanged inside the encrypted stream), the relay is caught: it knows
neither the key nor how to make the two session IDs equal.

Run:  python3 examples/session_auth.py
It runs three in-memory stacks: a direct client<->server connection (authenticates), and the
same client talking through a relaying man in the middle (detected).
"""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import sys

sys.path.insert(0, __import__("os").path.dirname(__import__("os").path.dirname(__file__)))

from tcpstack import Stack  # noqa: E402
from tun import MemoryLink  # noqa: E402

PSK = b"correct horse battery staple"


def proof(session_id: bytes, role: bytes) -> bytes:
    """HMAC-SHA256 over the session ID, with a role label so a proof cannot be reflected."""
    return hmac.new(PSK, role + session_id, hashlib.sha256).digest()


async def authenticate(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                       role: bytes) -> bool:
    sid = writer.get_extra_info("tcpcrypt_session_id")
    if sid is None:
        return False                      # not encrypted: nothing to bind to
    writer.write(proof(sid, role))
    await writer.drain()
    peer_role = b"server" if role == b"client" else b"client"
    theirs = await reader.readexactly(32)
    return hmac.compare_digest(theirs, proof(sid, peer_role))


async def serve(stack: Stack, addr: str, results: list[bool]) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            results.append(await authenticate(reader, writer, b"server"))
        except asyncio.IncompleteReadError:
            results.append(False)
        writer.close()
    await stack.start_server(handle, addr, 7000)


async def direct() -> bool:
    la, lb = MemoryLink.pair()
    client, server = Stack(la, ["10.9.0.1"]), Stack(lb, ["10.9.0.2"])
    server_results: list[bool] = []
    await serve(server, "10.9.0.2", server_results)
    r, w = await client.open_connection("10.9.0.2", 7000, require_encryption=True)
    ok = await authenticate(r, w, b"client")
    w.close()
    await asyncio.sleep(0.01)
    client.close(); server.close()
    return ok and server_results == [True]


async def through_mitm() -> tuple[bool, bytes, bytes]:
    """client 10.9.0.1 <-> [mitm 10.9.0.2 | mitm 10.9.1.1] <-> server 10.9.1.2.

    The client believes 10.9.0.2 is the server (think: a spoofed DNS answer).  The relay
    terminates tcpcrypt on both sides and copies plaintext between them."""
    l1, l2 = MemoryLink.pair()
    l3, l4 = MemoryLink.pair()
    client, mitm_front = Stack(l1, ["10.9.0.1"]), Stack(l2, ["10.9.0.2"])
    mitm_back, server = Stack(l3, ["10.9.1.1"]), Stack(l4, ["10.9.1.2"])
    server_results: list[bool] = []
    await serve(server, "10.9.1.2", server_results)
    sids: dict[str, bytes] = {}

    async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sids["client-side"] = writer.get_extra_info("tcpcrypt_session_id")
        ur, uw = await mitm_back.open_connection("10.9.1.2", 7000)
        sids["server-side"] = uw.get_extra_info("tcpcrypt_session_id")

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            while data := await src.read(65536):
                dst.write(data)
            dst.close()
        await asyncio.gather(pump(reader, uw), pump(ur, writer), return_exceptions=True)

    await mitm_front.start_server(relay, "10.9.0.2", 7000)
    r, w = await client.open_connection("10.9.0.2", 7000, require_encryption=True)
    ok = await authenticate(r, w, b"client")
    w.close()
    await asyncio.sleep(0.01)
    for s in (client, mitm_front, mitm_back, server):
        s.close()
    return ok, sids["client-side"], sids["server-side"]


async def main() -> int:
    ok = await direct()
    print(f"direct connection: peer authenticated over the session ID: {ok}")
    mitm_ok, sid1, sid2 = await through_mitm()
    print(f"through a relaying man in the middle: authenticated: {mitm_ok}")
    print(f"  client-side session ID {sid1.hex()[:32]}...")
    print(f"  server-side session ID {sid2.hex()[:32]}...  (they differ, so the HMACs cannot match)")
    return 0 if ok and not mitm_ok else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))

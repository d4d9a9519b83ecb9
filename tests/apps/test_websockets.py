"""websockets (its asyncio implementation), server and client unmodified, each on its own
stack in its own namespace: messages up to 1 MB echo back intact, and both ends report the
same tcpcrypt session ID."""
from __future__ import annotations

from dataclasses import replace

import pytest

from . import harness
from .conftest import Pair
from .harness import Launch

pytestmark = [pytest.mark.apps, pytest.mark.tun]


@pytest.mark.parametrize("loop", harness.LOOPS)
async def test_websockets_echo_between_two_stacks(loop, pair, two_hosts, procs):
    """Both ends on the same kind of loop (asyncio's, or uvloop's)."""
    await echo_between(replace(pair, server=replace(pair.server, loop=loop),
                               client=replace(pair.client, loop=loop)), two_hosts, procs)


async def test_websockets_server_under_tcpstack_run_client_with_the_import(two_hosts, procs,
                                                                         tmpdir_shared):
    """The two switches meet: the server under `tcpstack run`, the client switched by its
    one-line import."""
    a, b = two_hosts.stack_addrs
    await echo_between(Pair(Launch("run", f"{a}/24", tmpdir_shared),
                            Launch("import", f"{b}/24", tmpdir_shared, routes=[f"{a}/32"]),
                            a, b, two_hosts.kernel_addrs[0]), two_hosts, procs)


async def echo_between(pair: Pair, two_hosts, procs) -> None:
    server = await harness.start(procs, two_hosts.ns[0], pair.server,
                                 harness.py("websockets_server.py", pair.server_addr, 8765))
    try:
        await server.wait_line(r"^listening on ")
        if pair.server.loop_line is not None:
            assert pair.server.loop_line in server.lines, server.output[-2000:]
        out = await harness.run(procs, two_hosts.ns[1], pair.client,
                                harness.py("websockets_client.py", f"ws://{pair.server_addr}:8765", 30))
        seen = await server.wait_line(r"^client (\S+) (\S+)")
    finally:
        await server.stop()
    assert out["messages"] == 30 and out["echo_ok"] is True
    assert seen.group(1) == pair.client_addr
    if pair.client.mode == "kernel":
        assert out["session_id"] is None and out["server_session_id"] == "none"
    else:
        sid = out["session_id"]
        assert sid and len(sid) >= 64, out
        assert out["server_session_id"] == seen.group(2) == sid     # RFC 8548 4.1

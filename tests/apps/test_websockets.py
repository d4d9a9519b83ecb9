"""websockets (its asyncio implementation), server and client unmodified, each on its own
stack in its own namespace: messages up to 1 MB echo back intact, and both ends report the
same tcpcrypt session ID."""
from __future__ import annotations

import pytest

from . import harness

pytestmark = [pytest.mark.apps, pytest.mark.tun]


async def test_websockets_echo_between_two_stacks(mode, two_hosts, procs, tmpdir_shared):
    net = two_hosts
    if mode == "kernel":
        srv, srv_net, cli_net = net.veth_addrs[0], None, None
    else:
        srv, srv_net, cli_net = net.stack_addrs[0], f"{net.stack_addrs[0]}/24", f"{net.stack_addrs[1]}/24"
    cmd = harness.command(mode, harness.py("websockets_server.py", srv, 8765), addr=srv_net,
                          tmp=tmpdir_shared)
    server = await harness.start(procs, net.ns[0], cmd, harness.env_for(mode, srv_net))
    try:
        await server.wait_line(r"^listening on ")
        cmd = harness.command(mode, harness.py("websockets_client.py", f"ws://{srv}:8765", 30),
                              addr=cli_net, tmp=tmpdir_shared)
        out = await harness.run(procs, net.ns[1], cmd, harness.env_for(mode, cli_net))
        seen = await server.wait_line(r"^client (\S+) (\S+)")
    finally:
        await server.stop()
    assert out["messages"] == 30 and out["echo_ok"] is True
    me = net.veth_addrs[1] if mode == "kernel" else net.stack_addrs[1]
    assert seen.group(1) == me
    if mode == "kernel":
        assert out["session_id"] is None and out["server_session_id"] == "none"
    else:
        sid = out["session_id"]
        assert sid and len(sid) >= 64, out
        assert out["server_session_id"] == seen.group(2) == sid     # RFC 8548 4.1

"""redis-py's asyncio client (redis.asyncio), unmodified, against a real redis-server: on the
kernel, under `tcpstack run`, and with the one-line import."""
from __future__ import annotations

import hashlib

import pytest

from . import harness

pytestmark = [pytest.mark.apps, pytest.mark.tun]


async def test_redis_set_get(mode, host, redis_server, procs, tmpdir_shared):
    cmd = harness.command(mode, harness.py("redis_setget.py", redis_server.addr,
                                           redis_server.port, 200),
                          addr=host.stack_net(), tmp=tmpdir_shared)
    out = await harness.run(procs, host.ns, cmd, harness.env_for(mode, host.stack_net()))
    assert out["keys"] == 200 and out["counter"] == 2
    assert out["set_sha256"] == out["get_sha256"]
    # Who the server saw: the kernel's own address, or the stack's (which only the stack,
    # behind the TUN, can have).
    seen = out["server_sees"].rsplit(":", 1)[0]
    assert seen == (redis_server.addr if mode == "kernel" else host.stack), out

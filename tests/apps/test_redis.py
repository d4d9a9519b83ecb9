"""redis-py's asyncio client (redis.asyncio), unmodified, against a real redis-server: on the
kernel, under `tcpstack run`, and with the one-line import."""
from __future__ import annotations

import pytest

from . import harness

pytestmark = [pytest.mark.apps, pytest.mark.tun]


async def test_redis_set_get(client, host, redis_server, procs):
    out = await harness.run(procs, host.ns, client,
                            harness.py("redis_setget.py", redis_server.addr, redis_server.port, 200))
    assert out["keys"] == 200 and out["counter"] == 2
    assert out["set_sha256"] == out["get_sha256"]
    # Who the server saw: the kernel's own address, or the stack's (which only the stack,
    # behind the TUN, can have).
    seen = out["server_sees"].rsplit(":", 1)[0]
    assert seen == (redis_server.addr if client.mode == "kernel" else host.stack), out

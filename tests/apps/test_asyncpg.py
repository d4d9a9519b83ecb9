"""asyncpg, unmodified, against a real PostgreSQL that accepts only TLS from the stack's
subnet: asyncpg's default ssl="prefer" sends SSLRequest and upgrades the connection with
loop.start_tls, on the kernel and on the userspace stack alike."""
from __future__ import annotations

from dataclasses import replace

import pytest

from . import harness

pytestmark = [pytest.mark.apps, pytest.mark.tun]


@pytest.mark.parametrize("loop", harness.LOOPS)
async def test_asyncpg_queries_over_tls(loop, client, host, postgres, procs):
    """TLS really in use: the server's own view of the connection (pg_stat_ssl for the
    backend's pid) says ssl, with a TLS version; on asyncio's loop and on uvloop's."""
    out = await harness.run(procs, host.ns, replace(client, loop=loop),
                            harness.py("asyncpg_query.py", postgres.dsn()))
    assert out["rows"] == 100 and out["sum"] == sum(range(1000))
    assert out["ssl"] is True and out["tls_version"].startswith("TLSv1."), out
    assert out["server_sees"] == (postgres.addr if client.mode == "kernel" else host.stack), out

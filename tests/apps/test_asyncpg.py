"""asyncpg, unmodified, against a real PostgreSQL that accepts only TLS from the stack's
subnet: asyncpg's default ssl="prefer" sends SSLRequest and upgrades the connection with
loop.start_tls, on the kernel and on the userspace stack alike."""
from __future__ import annotations

import pytest

from . import harness

pytestmark = [pytest.mark.apps, pytest.mark.tun]


async def test_asyncpg_queries_over_tls(client, host, postgres, procs):
    out = await harness.run(procs, host.ns, client, harness.py("asyncpg_query.py", postgres.dsn()))
    assert out["rows"] == 100 and out["sum"] == sum(range(1000))
    assert out["ssl"] is True and out["tls_version"].startswith("TLSv1."), out
    assert out["server_sees"] == (postgres.addr if client.mode == "kernel" else host.stack), out

"""Talk to PostgreSQL with asyncpg: asyncpg's default ssl="prefer" upgrades the connection to
TLS when the server offers it.

    python asyncpg_query.py DSN
"""
import asyncio
import json
import sys

import asyncpg


async def main(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    await conn.execute("CREATE TEMP TABLE items (id int PRIMARY KEY, name text)")
    await conn.executemany("INSERT INTO items VALUES ($1, $2)",
                           [(i, f"item {i}") for i in range(1000)])
    rows = await conn.fetch("SELECT id, name FROM items WHERE id % 10 = 0 ORDER BY id")
    total = await conn.fetchval("SELECT sum(id) FROM items")
    ssl_on, version = await conn.fetchrow(
        "SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
    client = await conn.fetchval("SELECT host(inet_client_addr())")
    print(json.dumps({"rows": len(rows), "sum": total, "ssl": ssl_on, "tls_version": version,
                      "server_sees": client}), flush=True)
    await conn.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))

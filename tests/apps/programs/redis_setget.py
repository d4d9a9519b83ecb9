"""SET and GET keys with redis-py's asyncio client, then ask the server who we are.

    python redis_setget.py HOST PORT [N] [CAFILE]      (with CAFILE: over TLS, verified)
"""
import asyncio
import hashlib
import json
import sys

import redis.asyncio as redis


async def main(host: str, port: int, n: int, cafile: str = None) -> None:
    tls = dict(ssl=True, ssl_ca_certs=cafile, ssl_check_hostname=True) if cafile else {}
    r = redis.Redis(host=host, port=port, **tls)
    h_set, h_get = hashlib.sha256(), hashlib.sha256()
    for i in range(n):
        value = hashlib.sha256(b"%d" % i).hexdigest().encode() * 64   # 4 KB
        await r.set(f"key:{i}", value)
        h_set.update(value)
    for i in range(n):
        h_get.update(await r.get(f"key:{i}"))
    async with r.pipeline(transaction=True) as pipe:
        pipe.incr("counter").incr("counter")
        counter = (await pipe.execute())[-1]
    me = await r.client_info()
    print(json.dumps({"keys": n, "set_sha256": h_set.hexdigest(), "get_sha256": h_get.hexdigest(),
                      "counter": counter, "server_sees": me["addr"]}), flush=True)
    await r.aclose()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]) if len(sys.argv) > 3 else 200,
                     *sys.argv[4:5]))

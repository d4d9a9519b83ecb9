"""Run a command over SSH with asyncssh, feeding it 1 MB on stdin.

    python asyncssh_exec.py HOST PORT USER KEY KNOWN_HOSTS
"""
import asyncio
import hashlib
import json
import sys

import asyncssh


async def main(host: str, port: int, user: str, key: str, known_hosts: str) -> None:
    data = b"".join(hashlib.sha256(b"%d" % i).digest() for i in range(32768))   # 1 MB
    async with asyncssh.connect(host, port, username=user, client_keys=[key],
                                known_hosts=known_hosts) as conn:
        result = await conn.run('echo "$SSH_CONNECTION"; sha256sum', input=data, encoding=None)
        peer = conn.get_extra_info("peername")
    connection, digest = result.stdout.decode().splitlines()
    print(json.dumps({"exit_status": result.exit_status, "remote_sha256": digest.split()[0],
                      "sha256": hashlib.sha256(data).hexdigest(),
                      "server_sees": connection.split()[0], "peername": list(peer)[:2]}),
          flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), *sys.argv[3:6]))

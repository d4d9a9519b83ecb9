"""redis-py's asyncio client (redis.asyncio), unmodified, against a real redis-server (plain
and TLS): on the kernel, under `tcpstack run`, and with the one-line import."""
from __future__ import annotations

import asyncio
import os
import subprocess
from dataclasses import replace

import pytest

from . import harness

pytestmark = [pytest.mark.apps, pytest.mark.tun]


@pytest.mark.parametrize("loop", harness.LOOPS)
@pytest.mark.parametrize("tls", [False, True], ids=["tcp", "tls"])
async def test_redis_set_get(tls, loop, client, host, redis_server, procs):
    """Over TLS too: redis-py's ssl=True is asyncio.open_connection(ssl=...), a TLS
    transport made by create_connection over the stack, the certificate verified."""
    args = [redis_server.tls_port, 200, redis_server.cafile] if tls else [redis_server.port, 200]
    out = await harness.run(procs, host.ns, replace(client, loop=loop),
                            harness.py("redis_setget.py", redis_server.addr, *args))
    assert out["keys"] == 200 and out["counter"] == 2
    assert out["set_sha256"] == out["get_sha256"]
    # Who the server saw: the kernel's own address, or the stack's (which only the stack,
    # behind the TUN, can have).
    seen = out["server_sees"].rsplit(":", 1)[0]
    assert seen == (redis_server.addr if client.mode == "kernel" else host.stack), out


async def test_tcpstack_run_python_interpreter_form(host, redis_server, procs, tmpdir_shared):
    """`tcpstack run -- python3 script.py ARGS`, as a user would type it."""
    launch = harness.Launch("run", host.stack_net(), tmpdir_shared, routes=[f"{host.server}/32"])
    cmd = [os.path.join(harness.BIN, "tcpstack"), "run", "--addr", host.stack_net(), "--route",
           f"{host.server}/32", "--", "python3", harness.program("redis_setget.py"),
           redis_server.addr, str(redis_server.port), "20"]
    p = await procs.exec(*cmd, netns=host.ns, env=launch.env, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    out, err = await asyncio.wait_for(p.communicate(), 30)
    assert p.returncode == 0, err.decode()
    assert harness.last_json(out.decode())["server_sees"].startswith(host.stack + ":")


@pytest.mark.parametrize("mode", ["run", "import"])
async def test_require_encryption_refuses_the_plain_kernel_server(mode, host, redis_server, procs,
                                                                  tmpdir_shared):
    """Asked for encryption, the switch refuses a peer without TCP-ENO (redis-server on the
    kernel) and the program fails: not one command reaches the server in plaintext."""
    launch = harness.Launch(mode, host.stack_net(), tmpdir_shared, routes=[f"{host.server}/32"],
                            require_encryption=True)
    p = await procs.exec(*launch.cmd(harness.py("redis_setget.py", redis_server.addr,
                                                redis_server.port, 5)),
                         netns=host.ns, env=launch.env, stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = await asyncio.wait_for(p.communicate(), 30)
    assert p.returncode != 0, out.decode()
    assert "did not negotiate encryption" in err.decode(), err.decode()[-3000:]
    stats = await procs.run("redis-cli", "-h", redis_server.addr, "-p", str(redis_server.port),
                            "INFO", "stats", netns=host.ns)
    processed = int(stats.stdout.split("total_commands_processed:")[1].split()[0])
    assert processed == 0, stats.stdout     # redis-cli's own INFO is counted after the reply

"""asyncssh, unmodified, against OpenSSH's sshd: public-key login, a command fed 1 MB on
stdin, its output checked."""
from __future__ import annotations

from dataclasses import replace

import pytest

from . import harness

pytestmark = [pytest.mark.apps, pytest.mark.tun]


@pytest.mark.parametrize("loop", harness.LOOPS)
async def test_asyncssh_runs_a_command(loop, client, host, sshd, procs):
    out = await harness.run(procs, host.ns, replace(client, loop=loop),
                            harness.py("asyncssh_exec.py", sshd.addr, sshd.port, sshd.user,
                                       sshd.key, sshd.known_hosts))
    assert out["exit_status"] == 0
    assert out["remote_sha256"] == out["sha256"]
    assert out["peername"] == [sshd.addr, sshd.port]
    assert out["server_sees"] == (sshd.addr if client.mode == "kernel" else host.stack), out

"""asyncssh, unmodified, against OpenSSH's sshd: public-key login, a command fed 1 MB on
stdin, its output checked."""
from __future__ import annotations

import pytest

from . import harness

pytestmark = [pytest.mark.apps, pytest.mark.tun]


async def test_asyncssh_runs_a_command(mode, host, sshd, procs, tmpdir_shared):
    cmd = harness.command(mode, harness.py("asyncssh_exec.py", sshd.addr, sshd.port, sshd.user,
                                           sshd.key, sshd.known_hosts),
                          addr=host.stack_net(), tmp=tmpdir_shared)
    out = await harness.run(procs, host.ns, cmd, harness.env_for(mode, host.stack_net()))
    assert out["exit_status"] == 0
    assert out["remote_sha256"] == out["sha256"]
    assert out["peername"] == [sshd.addr, sshd.port]
    assert out["server_sees"] == (sshd.addr if mode == "kernel" else host.stack), out

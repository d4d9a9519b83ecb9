"""examples/overlay_kv.py: an asyncio application switched onto the encrypted overlay by one
import.  Two hosts (network namespaces, kernel routing over a veth pair); in each, the
application process brings its own TUN + userspace stack up from TCPCRYPT_TUN."""
from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from tun.topology import TwoHosts

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLE = os.path.join(ROOT, "examples", "overlay_kv.py")


def test_the_switch_is_one_import_line():
    src = open(EXAMPLE).read()
    imports = [l for l in src.splitlines() if re.match(r"\s*(import|from)\s", l)]
    assert "from tcpcrypt import asyncio   # the one change: was `import asyncio`" in imports
    assert not any("tcpstack" in l or "tun" in l.split() for l in imports)
    # Nothing else in the program knows about the userspace stack.
    body = src.split("from tcpcrypt import asyncio", 1)[1]
    assert "tcpcrypt" not in body.replace("tcpcrypt_session_id", "")


def test_without_a_stack_the_error_says_how_to_get_one():
    env = {k: v for k, v in os.environ.items() if not k.startswith("TCPCRYPT_")}
    env["PYTHONPATH"] = ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")
    r = subprocess.run([sys.executable, EXAMPLE, "client", "10.231.6.2", "7070"],
                       capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode != 0
    assert "TCPCRYPT_TUN" in r.stderr and "set_default_stack" in r.stderr


@pytest.mark.tun
def test_unmodified_app_talks_encrypted_across_two_hosts():
    with TwoHosts(tuns=False) as net:
        env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
        srv_addr, cli_addr = net.stack_addrs[1], net.stack_addrs[0]
        server = net.ns[1].popen([sys.executable, EXAMPLE, "serve", "7070"], text=True,
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                 env=dict(env, TCPCRYPT_TUN=f"{srv_addr}/24"))
        try:
            assert server.stdout.readline().strip() == "server: listening on port 7070"
            r = net.ns[0].run([sys.executable, EXAMPLE, "client", srv_addr, "7070", "200"],
                              timeout=60, env=dict(env, TCPCRYPT_TUN=f"{cli_addr}/24"))
            assert r.returncode == 0, r.stdout + r.stderr
            m = re.search(r"client: session ID ([0-9a-f]+)", r.stdout)
            assert m, r.stdout
            assert "client: 200 keys set and read back, 0 wrong" in r.stdout
            line = server.stdout.readline()
            # The server saw the same session ID (RFC 8548 4.1: both ends derive it).
            assert f"session ID {m.group(1)}" in line, line
            assert line.startswith(f"server: client ('{cli_addr}',")
        finally:
            server.terminate()
            server.wait(timeout=30)

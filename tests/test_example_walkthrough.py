"""examples/walkthrough.py: the guided tour shows what it says, deterministically."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(*args: str) -> str:
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run([sys.executable, os.path.join(ROOT, "examples", "walkthrough.py"), *args],
                       capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


def test_walkthrough_chapters_show_eno_key_exchange_recovery_and_close(tmp_path):
    out = run("--svg", str(tmp_path))
    # 1: the SYN offers tcpcrypt TEPs in ENO; the SYN-ACK picks one.
    syn = next(l for l in out.splitlines() if "|  SYN seq=0" in l)
    assert "eno" in syn and "X25519" in syn
    assert re.search(r"\|  SYN ACK seq=0 ack=1 .*eno b=1 X25519", out)
    # 2: the same session ID at both ends.
    c = re.search(r"client session ID: ([0-9a-f]{66})", out)
    s = re.search(r"server session ID: ([0-9a-f]{66})", out)
    assert c and s and c.group(1) == s.group(1)
    assert "session IDs match: True" in out
    # 3: both lost segments resent, by fast retransmit and SACK, no timeout, bytes intact.
    assert out.count("(lost in the network)") == 2
    assert re.search(r"fast retransmits: 1; SACK retransmits: 1; timeouts: 0", out)
    assert "delivered intact: True" in out
    lost = re.findall(r"seq=(\d+) ack=\d+ len=1448 .*\(lost in the network\)", out)
    assert re.search(r"retransmitted \(relative seq\): \[(\d+), (\d+)\]", out).groups() == tuple(lost)
    # 4: FIN both ways, TIME-WAIT for 2 MSL on the client.
    assert "[TIME-WAIT]" in out and "[LAST-ACK]" in out
    m = re.search(r"from t=([\d.]+) s to t=([\d.]+) s", out)
    assert abs(float(m.group(2)) - float(m.group(1)) - 60.0) < 0.01
    for name in ("1-handshake", "2-key-exchange", "3-loss-recovery", "4-close"):
        ET.parse(tmp_path / f"{name}.svg")


def test_walkthrough_is_deterministic_and_chapters_select():
    # Identical runs, except the session ID: the ECDHE keys are fresh randomness every time
    # (cryptography's key generation cannot be seeded, and must not be).
    def mask(text: str) -> str:
        return re.sub(r"session ID: [0-9a-f]+", "session ID: ...", text)
    first, second = run(), run()
    assert mask(first) == mask(second)
    assert first != second
    one = run("--chapter", "2")
    assert "Chapter 2" in one and "Chapter 1" not in one and "Chapter 3" not in one

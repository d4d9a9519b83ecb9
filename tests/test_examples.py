"""The examples run and show what they claim."""
from __future__ import annotations

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_session_auth_example_authenticates_directly_and_catches_the_mitm():
    r = subprocess.run([sys.executable, os.path.join(ROOT, "examples", "session_auth.py")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "direct connection: peer authenticated over the session ID: True" in r.stdout
    assert "through a relaying man in the middle: authenticated: False" in r.stdout

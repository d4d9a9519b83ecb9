"""The programs in tests/apps/programs are what any user would write: plain `import asyncio`,
nothing that knows about the userspace stack; the one-line variant differs by that line only."""
from __future__ import annotations

import difflib
import os
import re

import pytest

from . import harness

PROGRAMS = sorted(f for f in os.listdir(harness.PROGRAMS) if f.endswith(".py"))


def test_there_are_programs():
    assert len(PROGRAMS) >= 9


@pytest.mark.parametrize("name", PROGRAMS)
def test_program_is_unmodified_asyncio(name):
    src = open(harness.program(name)).read()
    imports = [line for line in src.splitlines() if re.match(r"\s*(import|from)\s", line)]
    assert imports.count("import asyncio") == 1, imports
    assert not any(re.search(r"\b(tcpstack|tcpcrypt|tun)\b", line) for line in imports), imports
    # The session ID is read the standard way, through get_extra_info; nothing else is special.
    assert "tcpcrypt" not in src.replace('"tcpcrypt_session_id"', "")


@pytest.mark.parametrize("name", PROGRAMS)
def test_one_line_copy_changes_exactly_that_line(name, tmp_path):
    path = harness.program(name)
    copy = harness.one_line_copy(path, str(tmp_path))
    diff = [d for d in difflib.ndiff(open(path).read().splitlines(), open(copy).read().splitlines())
            if d[:1] in "+-"]
    assert diff == ["- import asyncio", "+ from tcpcrypt import asyncio"]

"""Tests leave nothing behind, even when they fail (issue 11, tests/reaper.py, conftest.py).

Each case runs a small generated test file in a pytest of its own (with this project's
conftest as a plugin) and looks at what that run left: a child started through the `procs`
fixture is ended whether its test passes, fails or times out; a child, a namespace or a TUN
device leaked past the fixtures fails the run, is named in its report, and is removed.  And
tests/blind_attacker.py cannot outlive its parent or its deadline.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
import time

import pytest

from tests.reaper import _alive, _stat

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def env_with_root() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))


def run_pytest(tmp_path, source: str, *args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    """`python3 -m pytest` on `source` (as test_inner.py in tmp_path), with tests/conftest.py."""
    path = tmp_path / "test_inner.py"
    path.write_text(textwrap.dedent(source))
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-c", os.devnull,
         "--rootdir", str(tmp_path), "-p", "tests.conftest", "-o", "asyncio_mode=auto",
         *args, str(path)],
        cwd=ROOT, env=env_with_root(), capture_output=True, text=True, timeout=timeout)


def pids_in(path) -> list[int]:
    return [int(x) for x in path.read_text().split()] if path.exists() else []


def assert_gone(pids: list[int]) -> None:
    """None of pids is still running (a zombie is gone too: it only waits for its reaping)."""
    deadline = time.monotonic() + 5
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [p for p in pids if _alive(p)], f"still running: {[p for p in pids if _alive(p)]}"


def test_children_started_through_procs_are_ended_when_tests_pass_fail_or_time_out(tmp_path):
    record = tmp_path / "pids"
    r = run_pytest(tmp_path, f"""
        import asyncio, subprocess, time, pytest

        def note(*pids):
            with open({str(record)!r}, "a") as f:
                f.write("".join(f"{{p}}\\n" for p in pids))

        def test_passes(procs):
            note(procs.popen(["sleep", "300"]).pid)

        def test_fails(procs):
            # a shell that ignores SIGTERM, with a child of its own: the group is killed
            p = procs.popen(["sh", "-c", "trap '' TERM; sleep 300 & echo $!; wait"],
                            stdout=subprocess.PIPE, text=True)
            note(p.pid, int(p.stdout.readline()))
            assert False, "this test fails"

        async def test_fails_async(procs):
            p = await procs.exec("sleep", "300")
            note(p.pid)
            raise RuntimeError("this test fails too")

        @pytest.mark.timeout(2)
        def test_times_out(procs):
            note(procs.popen(["sleep", "300"]).pid)
            time.sleep(60)

        @pytest.mark.timeout(2)
        async def test_times_out_async(procs):
            note((await procs.exec("sleep", "300")).pid)
            await asyncio.sleep(60)
        """)
    out = r.stdout + r.stderr
    assert "1 passed" in out and "4 failed" in out, out
    assert "LEFTOVERS" not in out, out
    assert r.returncode == 1
    pids = pids_in(record)
    assert len(pids) == 6
    assert_gone(pids)


def test_a_child_leaked_past_the_fixtures_fails_the_run_and_is_named_and_ended(tmp_path):
    record = tmp_path / "pids"
    r = run_pytest(tmp_path, f"""
        import pathlib, subprocess, time

        def cmdline(pid):
            try:
                return pathlib.Path(f"/proc/{{pid}}/cmdline").read_bytes().split(bytes(1))
            except OSError:
                return []

        def test_leaks():
            p = subprocess.Popen(["sh", "-c", "sleep 300 & sleep 301; true"])
            open({str(record)!r}, "w").write(str(p.pid))
            # Both grandchildren have exec'd sleep before the test ends (a forked shell shows
            # its parent's command line until it execs: a race on a busy machine).
            children = pathlib.Path(f"/proc/{{p.pid}}/task/{{p.pid}}/children")
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                names = sorted(cmdline(k)[:2] for k in children.read_text().split())
                if names == [[b"sleep", b"300"], [b"sleep", b"301"]]:
                    break
                time.sleep(0.01)

        def test_clean(procs):
            procs.popen(["true"])
        """)
    out = r.stdout + r.stderr
    assert "2 passed" in out, out
    assert r.returncode == 1, out                        # the tests passed; the run did not
    assert "LEFTOVERS" in out
    (pid,) = pids_in(record)
    m = re.search(rf"process {pid}: sh -c sleep 300 & sleep 301; true "
                  r"\(still running after test_inner.py::test_leaks\)", out)
    assert m, out
    assert re.search(r"process \d+: sleep 300 \(still running after test_inner.py::test_leaks\)", out), out
    assert re.search(r"process \d+: sleep 301 ", out), out
    assert "test_clean" not in out.split("LEFTOVERS", 1)[1].split("short test summary")[0]
    assert_gone([pid] + [int(p) for p in re.findall(r"process (\d+): sleep", out)])


def test_a_run_that_leaves_nothing_passes(tmp_path):
    r = run_pytest(tmp_path, """
        import subprocess

        def test_runs_a_child_to_completion():
            assert subprocess.run(["true"]).returncode == 0

        def test_through_procs(procs):
            procs.popen(["sleep", "300"])
        """)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "LEFTOVERS" not in r.stdout + r.stderr


@pytest.mark.tun
def test_a_leaked_namespace_interface_and_tun_device_fail_the_run_and_are_removed(tmp_path):
    record = tmp_path / "names"
    r = run_pytest(tmp_path, f"""
        import subprocess
        from tun.device import TunDevice, unique_ifname
        from tun.netns import NetNS, TunInNamespace

        kept = []

        def test_leaks_a_namespace_with_a_process_inside():
            ns = NetNS()                                  # never closed
            p = subprocess.Popen(["ip", "netns", "exec", ns.name, "sleep", "300"])
            kept.append(ns)
            with open({str(record)!r}, "a") as f:
                f.write(f"{{ns.name}} {{p.pid}}\\n")

        def test_leaks_a_tun_device():
            dev = TunDevice(unique_ifname("tct"))         # in this namespace, never closed
            kept.append(dev)
            with open({str(record)!r}, "a") as f:
                f.write(f"{{dev.name}}\\n")

        def test_clean(netns):
            with TunInNamespace(netns, "10.231.77.1/24"):
                pass
        """)
    out = r.stdout + r.stderr
    assert "3 passed" in out, out
    assert r.returncode == 1, out
    lines = record.read_text().split("\n")
    ns_name, pid = lines[0].split()
    dev = lines[1].strip()
    report = out.split("LEFTOVERS", 1)[1]
    assert f"never closed: <NetNS {ns_name}>" in report
    assert f"network namespace {ns_name} (processes {pid} inside)" in report
    assert f"interface {dev}" in report
    assert re.search(rf"TUN device {dev} \(fd \d+ still open\)", report)
    assert re.search(rf"process {pid}: sleep 300 \(still running after "
                     r"test_inner.py::test_leaks_a_namespace_with_a_process_inside\)", report)
    assert ns_name not in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert dev not in subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    assert_gone([int(pid)])


# --- tests/blind_attacker.py bounds its own life --------------------------------------------

ATTACKER = os.path.join(ROOT, "tests", "blind_attacker.py")


def test_blind_attacker_exits_at_its_deadline(procs):
    t0 = time.monotonic()
    p = procs.popen([sys.executable, ATTACKER, "--deadline", "0.5"], stdin=subprocess.PIPE,
                    stderr=subprocess.PIPE, text=True, env=env_with_root())   # stdin stays open
    assert p.wait(timeout=30) == 3                  # (communicate() would close its stdin)
    assert "deadline of 0.5 s reached" in p.stderr.read()
    assert time.monotonic() - t0 < 10


def test_blind_attacker_dies_with_its_parent(procs):
    """Even a SIGKILLed parent (no finally, no fixture runs) leaves no attacker behind."""
    sh = procs.popen(["sh", "-c", f"exec 3<&0; {sys.executable} {ATTACKER} --parent $$ <&3 & echo $!; wait"],
                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env_with_root())
    attacker = int(sh.stdout.readline())
    deadline = time.monotonic() + 10                  # until it runs Python (past the exec)
    while "blind_attacker" not in open(f"/proc/{attacker}/cmdline").read() and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.5)                                   # and has set its parent-death signal
    assert _alive(attacker)
    os.kill(sh.pid, 9)
    sh.wait()
    assert_gone([attacker])
    st = _stat(attacker)                              # re-parented to us (a subreaper): reap it
    if st is not None and st[1] == os.getpid():
        os.waitpid(attacker, 0)

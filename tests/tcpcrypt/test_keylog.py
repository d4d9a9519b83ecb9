"""The tcpcrypt key log (tcpcrypt/keylog.py): the line format, what it logs (once per session,
at key setup, both ends alike), the file's mode, and that nothing is logged unless asked."""
from __future__ import annotations

import logging
import os
import stat

import pytest

from tcpcrypt import keys
from tcpcrypt.frames import FrameKey, open_frame
from tcpcrypt.keylog import (ENV_VAR, KeyLogEntry, KeyLogFile, KeyLogWriter, format_line,
                             keylog_from_env, parse_keylog, parse_line)
from tcpcrypt.provider import TcpcryptProvider
from tcpcrypt.suites import AEAD_AES_256_GCM, AEAD_CHACHA20_POLY1305, TcpcryptConfig
from tcpstack.aio.streams import Stack
from tun.memory import MemoryLink

from .sessions import handshake, negotiate

A, B = "10.0.0.1", "10.0.0.2"


async def echo(reader, writer):
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.close()


def test_line_format_round_trips():
    e = KeyLogEntry(bytes([0x23]) + bytes(range(32)), AEAD_AES_256_GCM, "B", bytes(range(32, 64)))
    line = format_line(e)
    assert line == ("TCPCRYPT_SESSION 23" + bytes(range(32)).hex() + " AEAD_AES_256_GCM B "
                    + bytes(range(32, 64)).hex() + "\n")
    assert parse_line(line) == e
    # the AEAD by number, comments, blank lines and other labels
    assert parse_line(line.replace("AEAD_AES_256_GCM", "0x0002")) == e
    assert parse_line("# a comment") is None and parse_line("  \n") is None
    assert parse_line("CLIENT_RANDOM 00 11") is None
    # both ends log the same session: one entry
    assert parse_keylog([line, line.replace(" B ", " A "), "\n"]) == [e]


@pytest.mark.parametrize("bad", [
    "TCPCRYPT_SESSION 23ab AEAD_AES_128_GCM A",                                  # 4 fields
    "TCPCRYPT_SESSION 23ab AEAD_NONE A " + "00" * 32,                            # unknown AEAD
    "TCPCRYPT_SESSION 23ab AEAD_AES_128_GCM C " + "00" * 32,                     # role
    "TCPCRYPT_SESSION 23ab AEAD_AES_128_GCM A " + "00" * 16,                     # short mk0
    "TCPCRYPT_SESSION 2x AEAD_AES_128_GCM A " + "00" * 32,                       # hex
])
def test_malformed_lines_are_refused(bad):
    with pytest.raises(ValueError):
        parse_line(bad)
    with pytest.raises(ValueError, match="line 2"):
        parse_keylog(["", bad])


def test_the_generations_follow_the_key_schedule():
    """mk[j] = CPRF(mk[j-1], CONST_REKEY, 32); k_ab/k_ba = CPRF(mk[j], CONST_KEY_A/B, ...)
    (RFC 8548 3.3, 3.8), computed here step by step from keys.cprf."""
    mk0 = bytes(range(32))
    e = KeyLogEntry(b"\x23" + bytes(32), AEAD_CHACHA20_POLY1305, "A", mk0)
    mk2 = keys.cprf(keys.cprf(mk0, b"\x03", 32), b"\x03", 32)
    assert e.master_key(2) == mk2
    assert e.traffic_key(2, True) == keys.cprf(mk2, b"\x04", 32 + 12)
    assert e.traffic_key(2, False) == keys.cprf(mk2, b"\x05", 32 + 12)


async def test_both_ends_log_the_session_once_with_the_key_that_opens_its_frames():
    lines: list[str] = []
    log = KeyLogWriter(lines.append)
    la, lb = MemoryLink.pair()
    sa = Stack(la, [A], security=TcpcryptProvider(keylog=log))
    sb = Stack(lb, [B], security=TcpcryptProvider(keylog=log))
    await sb.start_server(echo, B, 7)
    r, w = await sa.open_connection(B, 7, require_encryption=True)
    for i in range(5):
        w.write(b"ping %d" % i)
        assert await r.readexactly(6) == b"ping %d" % i
    sid = w.get_extra_info("tcpcrypt_session_id")
    info = w.get_extra_info("tcpcrypt")
    w.write_eof()
    assert await r.read() == b""
    w.close()
    sa.close(); sb.close()
    assert len(lines) == 2                               # once per end, not per frame
    ea, eb = (parse_line(x) for x in sorted(lines, key=lambda x: x.split()[3]))
    assert ea is not None and eb is not None
    assert ea.session_id == eb.session_id == sid
    assert ea.aead == eb.aead == info["aead"]
    assert (ea.role, eb.role) == ("A", "B")
    assert ea.mk0 == eb.mk0


def test_the_logged_key_opens_a_sessions_frames():
    """Sans-IO: two TcpcryptSessions, the key log's mk[0] opens A's and B's frames."""
    lines: list[str] = []
    a, b = negotiate()
    a._keylog = b._keylog = KeyLogWriter(lines.append)   # as TcpcryptSession(keylog=) sets it
    handshake(a, b)
    assert len(lines) == 2
    frame = a.send(b"secret")
    [e] = parse_keylog(lines)
    suite = e.suite
    key = FrameKey(suite, e.traffic_key(0, True), 0)
    assert open_frame(key, a._tx_offset - len(frame), frame)[3] == b"secret"
    back = b.send(b"reply")
    key = FrameKey(suite, e.traffic_key(0, False), 0)
    assert open_frame(key, b._tx_offset - len(back), back)[3] == b"reply"


def test_the_file_is_created_0600_and_appended(tmp_path):
    path = tmp_path / "keys.log"
    old = os.umask(0)               # even with no umask: 0600, not 0666
    try:
        f = KeyLogFile(path)
    finally:
        os.umask(old)
    assert path.exists() and stat.S_IMODE(path.stat().st_mode) == 0o600
    f("one\n")
    KeyLogFile(path)("two\n")
    assert path.read_text() == "one\ntwo\n"


def test_an_existing_wider_file_keeps_its_mode_and_is_warned_about(tmp_path, caplog):
    path = tmp_path / "keys.log"
    path.write_text("# mine\n")
    path.chmod(0o644)
    with caplog.at_level(logging.WARNING, logger="tcpcrypt.keylog"):
        KeyLogFile(path)("x\n")
    assert stat.S_IMODE(path.stat().st_mode) == 0o644          # never changed, never widened
    assert "readable" in caplog.text
    assert path.read_text() == "# mine\nx\n"


def test_a_failing_writer_does_not_fail_the_session(caplog):
    def broken(line: str) -> None:
        raise OSError(28, "No space left on device")
    with caplog.at_level(logging.WARNING, logger="tcpcrypt.keylog"):
        KeyLogWriter(broken).log_session(KeyLogEntry(b"\x23" + bytes(32), 1, "A", bytes(32)))
    assert "No space left" in caplog.text


def test_keylog_from_env(tmp_path):
    assert keylog_from_env({}) is None
    assert keylog_from_env({ENV_VAR: ""}) is None
    w = keylog_from_env({ENV_VAR: str(tmp_path / "k")})
    assert isinstance(w, KeyLogWriter) and (tmp_path / "k").exists()


async def test_the_stack_logs_to_TCPCRYPT_KEYLOGFILE_and_nothing_unless_asked(tmp_path, monkeypatch):
    async def one_connection() -> bytes:
        la, lb = MemoryLink.pair()
        sa, sb = Stack(la, [A]), Stack(lb, [B])          # the default provider, at the edge
        await sb.start_server(echo, B, 7)
        r, w = await sa.open_connection(B, 7)
        w.write(b"hi")
        assert await r.readexactly(2) == b"hi"
        sid = w.get_extra_info("tcpcrypt_session_id")
        w.write_eof()
        assert await r.read() == b""
        w.close()
        sa.close(); sb.close()
        return sid

    monkeypatch.delenv(ENV_VAR, raising=False)
    monkeypatch.chdir(tmp_path)
    await one_connection()
    assert list(tmp_path.iterdir()) == []                # absent when not asked

    path = tmp_path / "sub" / "keys.log"
    path.parent.mkdir()
    monkeypatch.setenv(ENV_VAR, str(path))
    sid = await one_connection()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    entries = parse_keylog(path.read_text().splitlines())
    assert [e.session_id for e in entries] == [sid]
    assert len(path.read_text().splitlines()) == 2       # the two ends


def test_a_config_change_keeps_the_keylog():
    """Per-connection options make a new config (provider._config_for); the key log is the
    provider's, so a connection with resume=False is logged too."""
    lines: list[str] = []
    p = TcpcryptProvider(TcpcryptConfig(), keylog=KeyLogWriter(lines.append))
    assert p._config_for({"resume": False}) is not p.config and p.keylog is not None

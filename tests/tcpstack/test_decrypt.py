"""`tcpstack decrypt` and `tcpstack diagram --keylog` (tcpstack/tools/decrypt.py): a capture of
two stacks talking HTTP over tcpcrypt, in memory, decrypted with the key log the stacks
wrote; Wireshark's own HTTP dissector (tshark, skipped when absent) must find the request
and the response with their exact bodies.  Also: a wrong key log leaves the frames as they
are and says so, rekeys decrypt across generations, resumed sessions (keys of the original
roles) decrypt, plain connections are copied, every rebuilt packet has good checksums."""
from __future__ import annotations

import asyncio
import shutil
import subprocess
from pathlib import Path

import pytest

from tcpcrypt.keylog import KeyLogFile, KeyLogWriter, parse_keylog
from tcpcrypt.provider import TcpcryptProvider
from tcpcrypt.suites import TcpcryptConfig
from tcpstack.__main__ import main as tcpstack_main
from tcpstack.aio.streams import Stack
from tcpstack.tools.decrypt import analyse, decrypt
from tcpstack.tools.pcap import PcapWriter, read_capture
from tcpstack.wire.ip import parse_ip
from tcpstack.wire.tcp import parse_tcp
from tun.memory import MemoryLink

A, B = "10.0.0.1", "10.0.0.2"
TSHARK = shutil.which("tshark")
REQUEST_BODY = b"name=tcpcrypt&secret=inside-the-frames"
RESPONSE_BODY = b"<html><body>the plaintext the key log opens: " + b"z" * 3000 + b"</body></html>"


async def http_server(reader, writer):
    head = await reader.readuntil(b"\r\n\r\n")
    length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length")))
    body = await reader.readexactly(length)
    assert body == REQUEST_BODY
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: %d\r\n"
                 b"Connection: close\r\n\r\n" % len(RESPONSE_BODY) + RESPONSE_BODY)
    await writer.drain()
    writer.close()


async def http_exchange(stack: Stack, port: int = 80, src: str = B) -> tuple[bytes | None, bytes]:
    r, w = await stack.open_connection(src, port)
    w.write(b"POST /upload HTTP/1.1\r\nHost: b\r\nContent-Type: application/x-www-form-urlencoded\r\n"
            b"Content-Length: %d\r\n\r\n" % len(REQUEST_BODY) + REQUEST_BODY)
    reply = await r.read()
    sid = w.get_extra_info("tcpcrypt_session_id")
    w.close()
    return sid, reply


async def capture(tmp: Path, *, cfg: TcpcryptConfig | None = None, connections: int = 1,
                  plain: bool = False, back: bool = False, addrs: tuple[str, str] = (A, B),
                  drop_b: int | None = None) -> tuple[Path, Path, list]:
    """HTTP exchanges from A to B (and, with back=True, one from B to A, which resumes with
    the roles of the first session swapped), captured at A; the key log both wrote.
    drop_b: lose the drop_b-th packet B sends with data (A captures its retransmission)."""
    a_addr, b_addr = addrs
    keylog, pcap = tmp / "keys.log", tmp / "conn.pcap"
    log = KeyLogWriter(KeyLogFile(keylog))
    la, lb = MemoryLink.pair()
    sec_a = None if plain else TcpcryptProvider(cfg, keylog=log)
    sec_b = None if plain else TcpcryptProvider(cfg, keylog=log)
    sa, sb = Stack(la, [a_addr], security=sec_a), Stack(lb, [b_addr], security=sec_b)
    writer = PcapWriter(str(pcap))
    sa.core.on_packet = writer
    if drop_b is not None:
        sent = [0]

        def lose(packet: bytes) -> bytes | None:
            hdr, payload = parse_ip(packet)
            if parse_tcp(payload, hdr.src, hdr.dst).payload:
                sent[0] += 1
                if sent[0] == drop_b:
                    return None
            return packet
        lb.filter = lose
    await sb.start_server(http_server, b_addr, 80)
    await sa.start_server(http_server, a_addr, 80)
    results = []
    for _ in range(connections):
        results.append(await http_exchange(sa, src=b_addr))
    if back:
        results.append(await http_exchange(sb, src=a_addr))
    await asyncio.sleep(0.05)             # the last ACKs
    writer.close()
    sa.close(); sb.close()
    for _sid, reply in results:
        assert reply.endswith(RESPONSE_BODY)
    return pcap, keylog, results


def tshark_http(path: Path) -> list[list[str]]:
    """(method, uri, response code, body) of every HTTP message tshark finds (requests and
    responses only: Wireshark calls undecodable data on port 80 "HTTP continuation")."""
    # out-of-order reassembly: the test with a lost segment has data after a hole
    out = subprocess.run([TSHARK, "-o", "tcp.reassemble_out_of_order:TRUE", "-r", str(path),
                          "-Y", "http.request || http.response", "-T", "fields",
                          "-e", "http.request.method", "-e", "http.request.uri",
                          "-e", "http.response.code", "-e", "http.file_data"],
                         capture_output=True, text=True, check=True).stdout
    return [line.split("\t") for line in out.splitlines()]


def body_of(field: str) -> bytes:
    """http.file_data as tshark prints it: text, or hex (colon-separated or not) in some versions."""
    try:
        return bytes.fromhex(field.replace(":", ""))
    except ValueError:
        return field.encode()


def checksums_good(path: Path) -> None:
    for _t, pkt in read_capture(str(path)):
        hdr, payload = parse_ip(pkt)                       # verifies the IPv4 header checksum
        parse_tcp(payload, hdr.src, hdr.dst, verify_checksum=True)


def tcp_payloads(path: Path) -> bytes:
    out = []
    for _t, pkt in read_capture(str(path)):
        hdr, payload = parse_ip(pkt)
        out.append(bytes(parse_tcp(payload, hdr.src, hdr.dst, verify_checksum=False).payload))
    return b"".join(out)


async def test_decrypted_capture_shows_http_inside(tmp_path, capsys):
    pcap, keylog, [(sid, _)] = await capture(tmp_path)
    plain = tmp_path / "plain.pcap"
    assert tcpstack_main(["decrypt", str(pcap), "--keylog", str(keylog), "-o", str(plain)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in out] == ["Init1", "Init2", "decrypted"]
    assert sid is not None and sid.hex() in out[2]
    checksums_good(plain)
    # the encrypted capture hides the bodies; the plaintext one has them, on the same packets
    assert REQUEST_BODY not in tcp_payloads(pcap)
    assert REQUEST_BODY in tcp_payloads(plain) and RESPONSE_BODY in tcp_payloads(plain)
    assert len(read_capture(str(plain))) == len(read_capture(str(pcap)))
    if TSHARK is None:
        pytest.skip("tshark not installed: the plaintext capture was checked without it")
    assert tshark_http(pcap) == []                     # encrypted: Wireshark sees no HTTP
    rows = tshark_http(plain)
    assert [(r[0], r[1], r[2]) for r in rows] == [("POST", "/upload", ""), ("", "", "200")]
    assert body_of(rows[0][3]) == REQUEST_BODY
    assert body_of(rows[1][3]) == RESPONSE_BODY


async def test_a_wrong_key_log_leaves_the_frames_and_names_the_connection(tmp_path, capsys):
    (tmp_path / "one").mkdir(); (tmp_path / "two").mkdir()
    pcap, _, _ = await capture(tmp_path / "one")
    _, other_keys, _ = await capture(tmp_path / "two")        # another session's key log
    plain = tmp_path / "plain.pcap"
    assert tcpstack_main(["decrypt", str(pcap), "--keylog", str(other_keys), "-o", str(plain)]) == 1
    out = capsys.readouterr().out
    conn = analyse([p for _t, p in read_capture(str(pcap))], [])[0]
    assert f"NOT DECRYPTED {conn.name}: no key in the key log opens its frames" in out
    assert [p for _t, p in read_capture(str(plain))] == [p for _t, p in read_capture(str(pcap))]
    if TSHARK is not None:
        assert tshark_http(plain) == []


async def test_rekeys_decrypt_across_generations(tmp_path, capsys):
    cfg = TcpcryptConfig(frame_size=500, rekey_after_frames=2)
    pcap, keylog, _ = await capture(tmp_path, cfg=cfg)
    plain = tmp_path / "plain.pcap"
    with open(keylog) as f:
        conns = decrypt(str(pcap), f, str(plain))
    out = capsys.readouterr().out.splitlines()
    [c] = conns
    assert c.decrypted
    gens = {d.src: max(f.generation for f in d.frames) for d in c.dirs.values()}
    assert gens[(B, 80)] >= 3                       # 3 KB in 500-byte frames, 2 per generation
    rekeys = [line for line in out if line.startswith("rekey")]
    assert len(rekeys) == sum(gens.values())
    assert any("10.0.0.2:80 -> 10.0.0.1" in line and "generation 3" in line for line in rekeys)
    assert RESPONSE_BODY in tcp_payloads(plain)
    checksums_good(plain)
    if TSHARK is not None:
        rows = tshark_http(plain)
        assert body_of(rows[1][3]) == RESPONSE_BODY


async def test_resumed_sessions_decrypt_whichever_host_opens(tmp_path, capsys):
    """The second connection resumes (no Init1/Init2); the third is opened by B and resumes
    with keys of the ORIGINAL roles (RFC 8548 3.5): the key is found either way."""
    pcap, keylog, results = await capture(tmp_path, connections=2, back=True)
    assert len(parse_keylog(keylog.read_text().splitlines())) == 3
    plain = tmp_path / "plain.pcap"
    assert tcpstack_main(["decrypt", str(pcap), "--keylog", str(keylog), "-o", str(plain)]) == 0
    out = capsys.readouterr().out
    assert out.count("Init1") == 1 and out.count("decrypted") == 3
    for sid, _ in results:
        assert sid is not None and sid.hex() in out
    assert tcp_payloads(plain).count(RESPONSE_BODY) == 3
    checksums_good(plain)


async def test_plain_connections_are_copied(tmp_path, capsys):
    pcap, keylog, _ = await capture(tmp_path, plain=True)
    assert keylog.read_text() == ""
    plain = tmp_path / "plain.pcap"
    assert tcpstack_main(["decrypt", str(pcap), "--keylog", str(keylog), "-o", str(plain)]) == 0
    assert "plain 10.0.0.1:" in capsys.readouterr().out
    assert [p for _t, p in read_capture(str(plain))] == [p for _t, p in read_capture(str(pcap))]


async def test_diagram_keylog_notes(tmp_path, capsys):
    cfg = TcpcryptConfig(frame_size=500, rekey_after_frames=2)
    pcap, keylog, _ = await capture(tmp_path, cfg=cfg)
    assert tcpstack_main(["diagram", str(pcap), "--keylog", str(keylog)]) == 0
    text = capsys.readouterr().out
    assert "(Init1)" in text and "(Init2)" in text
    assert "rekey gen 1" in text and "rekey gen 3" in text and text.count("FINp") == 2
    # the plaintext lengths noted add up to the application bytes of both directions
    [c] = analyse([p for _t, p in read_capture(str(pcap))], parse_keylog(keylog.open()))
    noted = sum(int(x.split()[0]) for x in text.split("plain ")[1:])
    assert noted == sum(len(d.plain) for d in c.dirs.values())
    # without the key: no notes, and a line on stderr
    other = tmp_path / "other.log"
    other.write_text("")
    assert tcpstack_main(["diagram", str(pcap), "--keylog", str(other)]) == 0
    captured = capsys.readouterr()
    assert "plain " not in captured.out and "NOT DECRYPTED" in captured.err


async def test_ipv6_and_a_lost_segment(tmp_path, capsys):
    """IPv6 headers rebuilt; B's response frame lost once: A's capture has the
    retransmission only after later data, and the stream is reassembled from it."""
    pcap, keylog, _ = await capture(tmp_path, addrs=("fd00::1", "fd00::2"), drop_b=2,
                                    cfg=TcpcryptConfig(frame_size=1000))
    plain = tmp_path / "plain.pcap"
    assert tcpstack_main(["decrypt", str(pcap), "--keylog", str(keylog), "-o", str(plain)]) == 0
    assert "decrypted [fd00::1]:" in capsys.readouterr().out
    checksums_good(plain)
    if TSHARK is not None:
        rows = tshark_http(plain)
        assert body_of(rows[0][3]) == REQUEST_BODY and body_of(rows[1][3]) == RESPONSE_BODY


def test_cli_keylog_option(tmp_path):
    """--keylog on the commands that bring a stack up: a provider with the file's writer."""
    from tcpstack.tools.cli import CliError, Host, build_parser
    path = tmp_path / "keys.log"
    args = build_parser().parse_args(["connect", "10.77.0.1", "80", "--addr", "10.77.0.2/24",
                                      "--keylog", str(path)])
    provider = Host(args)._security()
    assert isinstance(provider, TcpcryptProvider) and provider.keylog is not None
    assert path.exists() and oct(path.stat().st_mode & 0o777) == oct(0o600)
    plain = build_parser().parse_args(["connect", "10.77.0.1", "80", "--addr", "10.77.0.2/24",
                                       "--keylog", str(path), "--plain"])
    assert Host(plain)._security() is None
    default = build_parser().parse_args(["listen", "80", "--addr", "10.77.0.2/24"])
    assert Host(default)._security() == "default"
    bad = build_parser().parse_args(["listen", "80", "--addr", "10.77.0.2/24",
                                     "--keylog", str(tmp_path / "no" / "such" / "dir")])
    with pytest.raises(CliError, match="--keylog"):
        Host(bad)._security()


def test_decrypt_usage_errors(tmp_path, capsys):
    assert tcpstack_main(["decrypt", str(tmp_path / "none.pcap"), "--keylog",
                          str(tmp_path / "none.log"), "-o", str(tmp_path / "o.pcap")]) == 2
    assert "tcpstack decrypt:" in capsys.readouterr().err

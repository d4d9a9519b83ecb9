"""The shipped Wireshark dissector (tcpstack/tools/wireshark/tcpeno_tcpcrypt.lua) on captures
of two stacks talking tcpcrypt in memory: TCP-ENO's fields with TEP names, Init1/Init2 by
field, encryption frames with the rekey bit and clen, resumption identifiers, the whole byte
stream accounted for, nothing malformed.  Skipped when tshark is not installed."""
from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

from tcpcrypt.provider import TcpcryptProvider
from tcpcrypt.suites import (AEAD_AES_128_GCM, TEP_CURVE448, TEP_CURVE25519, TEP_P256, TEP_P521,
                             TcpcryptConfig)
from tcpstack.aio.streams import Stack
from tcpstack.tools import wireshark
from tcpstack.tools.pcap import PcapWriter, read_pcap
from tcpstack.wire.segment import ACK, PSH, SYN, TCPSegment
from tcpstack.wire.tcp import build_ip_tcp
from tun.memory import MemoryLink

TSHARK = shutil.which("tshark")
pytestmark = pytest.mark.skipif(TSHARK is None, reason="tshark not installed")

A, B = "10.0.0.1", "10.0.0.2"
PORT = 7            # Wireshark's Echo port: the conversation must win over the port's dissector
PLUGIN = str(wireshark.plugin_path())
# Every expert item the dissector can add; none may appear on a capture of two good stacks.
OWN_EXPERTS = ("tcpeno.ill_formed", "tcpeno.z_bits", "tcpeno.second_global",
               "tcpeno.resume_nonce_long", "tcpcrypt.init_short", "tcpcrypt.cres",
               "tcpcrypt.clen_short", "tcpcrypt.ignored_nonempty")


async def echo(reader, writer):
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.close()


async def capture(path: Path, cfg: TcpcryptConfig, connections: int = 1,
                  sizes: tuple[int, ...] = (100, 3000, 20000), a: str = A, b: str = B) -> None:
    """Two stacks in memory; A's every packet (both directions) into path.  Each connection
    echoes writes of the given sizes (one frame per write: many span segments)."""
    la, lb = MemoryLink.pair()
    sa = Stack(la, [a], security=TcpcryptProvider(cfg))
    sb = Stack(lb, [b], security=TcpcryptProvider(cfg))
    pcap = PcapWriter(str(path))
    sa.core.on_packet = pcap
    try:
        await sb.start_server(echo, b, PORT)
        for _ in range(connections):
            r, w = await sa.open_connection(b, PORT, require_encryption=True)
            for n in sizes:
                w.write(os.urandom(n))
                await w.drain()
                await r.readexactly(n)
            w.write_eof()
            assert await r.read() == b""
            w.close()
            await asyncio.sleep(0.02)            # the FIN exchange completes
    finally:
        sa.close()
        sb.close()
        pcap.close()


def tshark(pcap: Path, *args: str, plugin: bool = True) -> str:
    cmd = [TSHARK or "tshark", "-n", "-r", str(pcap)]
    if plugin:
        cmd += ["-X", f"lua_script:{PLUGIN}"]
    res = subprocess.run(cmd + list(args), capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert "Lua: Error" not in res.stderr and "lua_script" not in res.stderr, res.stderr
    return res.stdout


def fields(pcap: Path, *names: str, display_filter: str = "", two_pass: bool = False,
           options: tuple[str, ...] = ()) -> list[dict[str, list[str]]]:
    args = [*options, "-T", "fields", "-E", "separator=|", "-E", "occurrence=a", "-E", "aggregator=;"]
    for n in names:
        args += ["-e", n]
    if display_filter:
        args += ["-Y", display_filter]
    if two_pass:
        args.insert(0, "-2")
    rows = []
    for line in tshark(pcap, *args).splitlines():
        cols = line.split("|")
        assert len(cols) == len(names), line
        rows.append({n: (c.split(";") if c else []) for n, c in zip(names, cols)})
    return rows


def assert_clean(pcap: Path) -> None:
    """Zero malformed packets, no expert error, none of the dissector's own complaints."""
    bad = tshark(pcap, "-Y", "_ws.malformed || _ws.expert.severity >= error || "
                 + " || ".join(OWN_EXPERTS))
    assert bad == "", bad


def assert_stream_accounted(pcap: Path) -> dict[tuple[str, str], list[str]]:
    """Every TCP payload byte of every direction belongs to one Init message or one frame the
    dissector showed whole: the sums agree.  Returns the PDU kinds per direction, in order."""
    rows = fields(pcap, "tcp.stream", "tcp.srcport", "tcp.len", "tcpcrypt.message_len",
                  "tcpcrypt.clen", "tcpcrypt.control.rekey")
    payload: dict[tuple[str, str], int] = defaultdict(int)
    shown: dict[tuple[str, str], int] = defaultdict(int)
    kinds: dict[tuple[str, str], list[str]] = defaultdict(list)
    for r in rows:
        key = (r["tcp.stream"][0], r["tcp.srcport"][0])
        payload[key] += int(r["tcp.len"][0])
        shown[key] += sum(int(x) for x in r["tcpcrypt.message_len"])
        shown[key] += sum(3 + int(x) for x in r["tcpcrypt.clen"])
        kinds[key] += ["init"] * len(r["tcpcrypt.message_len"])
        kinds[key] += ["rekey" if x == "1" else "frame" for x in r["tcpcrypt.control.rekey"]]
    assert payload and dict(payload) == dict(shown)
    return kinds


@pytest.fixture(scope="module")
def main_capture(tmp_path_factory) -> Path:
    """A fresh connection then a resumed one (the session cache is on by default), each
    direction rekeying after every 3 frames."""
    path = tmp_path_factory.mktemp("ws") / "two_stacks.pcap"
    asyncio.run(capture(path, TcpcryptConfig(rekey_after_frames=3), connections=2))
    return path


def test_eno_fields_with_tep_names_and_the_b_bit(main_capture):
    syns = fields(main_capture, "frame.number", "tcp.flags.ack", "tcpeno.form", "tcpeno.tep",
                  "tcpeno.v", "tcpeno.global.b", "tcpeno.role", "tcpeno.negotiated_tep",
                  "tcpeno.resumption", display_filter="tcp.flags.syn == 1")
    assert len(syns) == 4                                     # two SYNs, two SYN-ACKs
    syn, synack = syns[0], syns[1]
    assert syn["tcp.flags.ack"] == ["0"] and synack["tcp.flags.ack"] == ["1"]
    assert syn["tcpeno.form"][0].startswith("SYN form")
    # the default offer, increasing priority: P-521, P-256, Curve448, Curve25519 (last wins)
    assert syn["tcpeno.tep"] == [hex(t) for t in (TEP_P521, TEP_P256, TEP_CURVE448, TEP_CURVE25519)]
    assert syn["tcpeno.global.b"] == [] and syn["tcpeno.role"][0].startswith("A (b=0, implicit")
    assert synack["tcpeno.global.b"] == ["1"] and synack["tcpeno.role"][0].startswith("B (b=1")
    assert synack["tcpeno.tep"] == [hex(TEP_CURVE25519)] and synack["tcpeno.v"] == ["0"]
    assert synack["tcpeno.negotiated_tep"] == [hex(TEP_CURVE25519)]
    assert synack["tcpeno.resumption"] == ["0"] and syn["tcpeno.negotiated_tep"] == []
    # names, as Wireshark shows them
    text = tshark(main_capture, "-V", "-Y", f"frame.number == {synack['frame.number'][0]}")
    for line in ("TCP Encryption Negotiation Option (TCP-ENO, RFC 8547): SYN form, host B: b=1, "
                 "TCPCRYPT_ECDHE_Curve25519; negotiated TCPCRYPT_ECDHE_Curve25519",
                 "Kind: TCP-ENO (69)",
                 "Global suboption: 0x01 (b=1, a=0)",
                 ".... ...1 = b (passive role): True",
                 ".... ..0. = a (application-aware): False",
                 "TEP TCPCRYPT_ECDHE_Curve25519 (0x23), v=0",
                 ".010 0011 = TEP identifier (glt): TCPCRYPT_ECDHE_Curve25519 (0x23)",
                 "[Negotiated TEP: TCPCRYPT_ECDHE_Curve25519 (0x23) (RFC 8547 4.5)]"):
        assert line in text, line
    # the non-SYN form A keeps sending until it hears from B (RFC 8547 4.6): empty
    nonsyn = fields(main_capture, "tcpeno.form", "tcpeno.length",
                    display_filter="tcpeno && tcp.flags.syn == 0")
    assert nonsyn and all(r["tcpeno.form"][0].startswith("non-SYN form") and r["tcpeno.length"] == ["2"]
                          for r in nonsyn)


def test_init1_and_init2_fields_by_name(main_capture):
    rows = fields(main_capture, "tcp.stream", "tcpcrypt.magic", "tcpcrypt.message_len",
                  "tcpcrypt.nciphers", "tcpcrypt.sym_cipher", "tcpcrypt.n_a", "tcpcrypt.n_b",
                  "tcpcrypt.pub_a", "tcpcrypt.pub_b", "tcpcrypt.tep", "tcpcrypt.resumed",
                  display_filter="tcpcrypt.magic")
    assert [r["tcpcrypt.magic"] for r in rows] == [["0x15101a0e"], ["0x097105e0"]]
    assert {r["tcp.stream"][0] for r in rows} == {"0"}        # the resumed connection has none
    init1, init2 = rows
    assert init1["tcpcrypt.nciphers"] == ["3"]
    assert init1["tcpcrypt.sym_cipher"] == ["0x0010", "0x0002", "0x0001"]
    assert init2["tcpcrypt.sym_cipher"] == [f"0x{AEAD_AES_128_GCM:04x}"]
    assert len(bytes.fromhex(init1["tcpcrypt.n_a"][0])) == 32 == len(bytes.fromhex(init2["tcpcrypt.n_b"][0]))
    assert len(bytes.fromhex(init1["tcpcrypt.pub_a"][0])) == 32 == len(bytes.fromhex(init2["tcpcrypt.pub_b"][0]))
    assert int(init1["tcpcrypt.message_len"][0]) == 8 + 1 + 3 * 2 + 32 + 32
    assert int(init2["tcpcrypt.message_len"][0]) == 8 + 2 + 32 + 32
    assert init1["tcpcrypt.tep"] == ["0x23"] and init1["tcpcrypt.resumed"] == ["0"]
    text = tshark(main_capture, "-V", "-Y", "tcpcrypt.magic")
    for line in ("Init1, message_len 79", "Magic: INIT1_MAGIC (0x15101a0e)", "message_len: 79",
                 "nciphers: 3", "sym_cipher: AEAD_CHACHA20_POLY1305 (0x0010)",
                 "sym_cipher: AEAD_AES_256_GCM (0x0002)", "sym_cipher: AEAD_AES_128_GCM (0x0001)",
                 "N_A: ", "Pub_A: ", "(TCPCRYPT_ECDHE_Curve25519)",
                 "Init2, message_len 74", "Magic: INIT2_MAGIC (0x097105e0)", "N_B: ", "Pub_B: "):
        assert line in text, line
    summary = tshark(main_capture, "-Y", "tcpcrypt.magic")
    assert "tcpcrypt" in summary and "Init1 sym_cipher_list=AEAD_CHACHA20_POLY1305," in summary
    assert "Init2 sym_cipher=AEAD_AES_128_GCM" in summary


def test_frames_rekey_and_clen_and_the_whole_stream_accounted(main_capture):
    kinds = assert_stream_accounted(main_capture)
    assert len(kinds) == 4                                    # two connections, two directions
    for (stream, _), seq in kinds.items():
        assert (seq[0] == "init") == (stream == "0"), seq     # resumed: frames from byte 0
        frames = [k for k in seq if k != "init"]
        assert "rekey" in frames, seq                         # rekey_after_frames=3
        assert frames[:3] == ["frame"] * 3 and frames[3] == "rekey", seq
    rows = fields(main_capture, "tcpcrypt.control", "tcpcrypt.control.cres", "tcpcrypt.control.rekey",
                  "tcpcrypt.clen", "tcpcrypt.tag", display_filter="tcpcrypt.control")
    frames = [(c, z, k, n, t) for r in rows for c, z, k, n, t in zip(
        r["tcpcrypt.control"], r["tcpcrypt.control.cres"], r["tcpcrypt.control.rekey"],
        r["tcpcrypt.clen"], r["tcpcrypt.tag"], strict=True)]
    assert frames and all(z == "0x00" for _, z, _, _, _ in frames)           # cres zero
    assert all((c == "0x01") == (k == "1") and c in ("0x00", "0x01") for c, _, k, _, _ in frames)
    assert all(len(bytes.fromhex(t)) == 16 for *_, t in frames)               # the AEAD tag
    clens = {int(c) for r in fields(main_capture, "tcpcrypt.clen") for c in r["tcpcrypt.clen"]}
    # one frame per write: flags byte + data + 16-byte tag
    assert {1 + 100 + 16, 1 + 3000 + 16, 1 + 20000 + 16} <= clens
    text = tshark(main_capture, "-V", "-Y", "tcpcrypt.control.rekey == 1")
    for line in ("Encryption frame, clen ", ", rekey", "0000 000. = cres (reserved): 0x00",
                 ".... ...1 = rekey: True", "AEAD tag: "):
        assert line in text, line
    assert_clean(main_capture)


def test_resumption_identifier_in_both_syns(main_capture):
    rows = fields(main_capture, "tcp.stream", "tcpeno.v", "tcpeno.data_len", "tcpeno.resume_id_half",
                  "tcpeno.resume_nonce", "tcpeno.resumption", display_filter="tcp.flags.syn == 1 && tcp.stream == 1")
    assert len(rows) == 2
    syn, synack = rows
    assert syn["tcpeno.v"][-1] == "1" and synack["tcpeno.v"] == ["1"]   # 3.5: v = 1
    for r in rows:
        assert r["tcpeno.data_len"][-1] == "17"                       # 9-byte half + 8-byte nonce
        assert len(bytes.fromhex(r["tcpeno.resume_id_half"][0])) == 9
        assert len(bytes.fromhex(r["tcpeno.resume_nonce"][0])) == 8
    assert syn["tcpeno.resume_id_half"] != synack["tcpeno.resume_id_half"]   # the two halves
    assert synack["tcpeno.resumption"] == ["1"]
    text = tshark(main_capture, "-V", "-Y", "tcp.flags.syn == 1 && tcp.stream == 1")
    for line in ("TEP TCPCRYPT_ECDHE_Curve25519 (0x23), v=1: resumption suboption",
                 "1... .... = v (suboption data follows): True",
                 "Resumption identifier half (resume[i]{0..8} or {9..17}): ",
                 "Resumption nonce (nonce_a or nonce_b): ",
                 "negotiated TCPCRYPT_ECDHE_Curve25519 (resumed)"):
        assert line in text, line
    resumed = fields(main_capture, "tcpcrypt.resumed", display_filter="tcpcrypt && tcp.stream == 1")
    assert resumed and all(r["tcpcrypt.resumed"] == ["1"] for r in resumed)


def test_two_pass_dissection_agrees(main_capture):
    """tshark -2 dissects its first pass without a tree (no fields to read): the same
    conversations are found and shown."""
    one = fields(main_capture, "frame.number", "tcpeno.negotiated_tep", "tcpcrypt.magic", "tcpcrypt.clen")
    two = fields(main_capture, "frame.number", "tcpeno.negotiated_tep", "tcpcrypt.magic", "tcpcrypt.clen",
                 two_pass=True)
    assert one == two


def test_without_the_handshake_the_init_magic_finds_the_stream(main_capture, tmp_path):
    """A capture that starts after the SYNs: the heuristic on INIT1/INIT2_MAGIC (tried after
    the port's own dissector unless tcp.try_heuristic_first; Echo owns port 7), or Decode As."""
    late = tmp_path / "late.pcap"
    w = PcapWriter(str(late))
    for t, p in read_pcap(str(main_capture))[3:]:
        w.write(p, t)
    w.close()
    for options in (("-o", "tcp.try_heuristic_first:TRUE"), ("-d", f"tcp.port=={PORT},tcpcrypt")):
        rows = fields(late, "tcpcrypt.magic", "tcpcrypt.pub_a", "tcpcrypt.pub_b",
                      display_filter="tcpcrypt.magic", options=options)
        assert [r["tcpcrypt.magic"] for r in rows] == [["0x15101a0e"], ["0x097105e0"]], options
        assert len(bytes.fromhex(rows[0]["tcpcrypt.pub_a"][0])) == 32   # X25519 by its length
        assert len(bytes.fromhex(rows[1]["tcpcrypt.pub_b"][0])) == 32
    assert_clean(late)


@pytest.mark.parametrize("tep,pub_len", [(TEP_P256, 35), (TEP_P521, 69), (TEP_CURVE448, 56)],
                         ids=["P256", "P521", "Curve448"])
def test_every_tep_public_key_layout(tmp_path, tep, pub_len):
    path = tmp_path / "tep.pcap"
    asyncio.run(capture(path, TcpcryptConfig(teps=(tep,)), sizes=(10,)))
    rows = fields(path, "tcpcrypt.magic", "tcpcrypt.pub_a", "tcpcrypt.pub_b", "tcpcrypt.pubkey_len",
                  "tcpcrypt.tep", display_filter="tcpcrypt.magic")
    assert len(rows) == 2
    for r, pub in zip(rows, ("tcpcrypt.pub_a", "tcpcrypt.pub_b")):
        assert r["tcpcrypt.tep"] == [hex(tep)]
        assert len(bytes.fromhex(r[pub][0])) == pub_len
        if tep in (TEP_P256, TEP_P521):                      # RFC 8548 5: pubkey_len prefix
            assert r["tcpcrypt.pubkey_len"] == [str(pub_len - 2)]
        else:
            assert r["tcpcrypt.pubkey_len"] == []
    assert_stream_accounted(path)
    assert_clean(path)


def test_ipv6_fresh_and_resumed(tmp_path):
    path = tmp_path / "v6.pcap"
    asyncio.run(capture(path, TcpcryptConfig(), connections=2, sizes=(5000,), a="fd00::1", b="fd00::2"))
    rows = fields(path, "tcp.stream", "tcpeno.negotiated_tep", "tcpeno.resumption", "tcpcrypt.magic",
                  display_filter="tcpeno.negotiated_tep || tcpcrypt.magic")
    assert [(r["tcp.stream"], r["tcpeno.resumption"], r["tcpcrypt.magic"]) for r in rows] == [
        (["0"], ["0"], []), (["0"], [], ["0x15101a0e"]), (["0"], [], ["0x097105e0"]), (["1"], ["1"], [])]
    assert_stream_accounted(path)
    assert_clean(path)


def test_cli_prints_the_path_and_installs_where_wireshark_loads_it(tmp_path, main_capture):
    def cli(*args: str) -> str:
        env = dict(os.environ, HOME=str(tmp_path))     # a scratch personal plugins folder
        res = subprocess.run([sys.executable, "-m", "tcpstack", "wireshark-plugin", *args], env=env,
                             capture_output=True, text=True, timeout=60)
        assert res.returncode == 0, res.stderr
        return res.stdout.strip()

    assert Path(cli()) == wireshark.plugin_path() and wireshark.plugin_path().is_file()
    # --install: Wireshark's "Personal Lua Plugins" folder (tshark -G folders) under HOME
    installed = Path(cli("--install"))
    assert installed == tmp_path / ".local/lib/wireshark/plugins" / wireshark.PLUGIN_NAME
    assert installed.read_bytes() == wireshark.plugin_path().read_bytes()
    res = subprocess.run([TSHARK or "tshark", "-G", "plugins"], capture_output=True, text=True,
                         timeout=60, env=dict(os.environ, HOME=str(tmp_path)))
    assert str(installed) in res.stdout                       # tshark loads it at start-up
    res = subprocess.run([TSHARK or "tshark", "-n", "-r", str(main_capture), "-Y", "tcpcrypt.magic"],
                         capture_output=True, text=True, timeout=60, env=dict(os.environ, HOME=str(tmp_path)))
    assert "Init1 sym_cipher_list=" in res.stdout and "Init2 sym_cipher=" in res.stdout   # no -X needed
    assert Path(cli("--install", "--dir", str(tmp_path / "x"))) == tmp_path / "x" / wireshark.PLUGIN_NAME
    assert (tmp_path / "x" / wireshark.PLUGIN_NAME).is_file()


def test_a_plain_peer_leaves_the_stream_alone(tmp_path):
    """ENO offered, the server has no TCP-ENO: no negotiation, the stream is not tcpcrypt."""
    path = tmp_path / "plain.pcap"
    la, lb = MemoryLink.pair()

    async def run() -> None:
        sa, sb = Stack(la, [A]), Stack(lb, [B], security=None)
        pcap = PcapWriter(str(path))
        sa.core.on_packet = pcap
        try:
            await sb.start_server(echo, B, PORT)
            r, w = await sa.open_connection(B, PORT)
            assert w.get_extra_info("tcpcrypt_session_id") is None
            w.write(b"\x15\x10\x1a\x0e plain bytes that look like INIT1_MAGIC")
            w.write_eof()
            await r.read()
            w.close()
            await asyncio.sleep(0.02)
        finally:
            sa.close(); sb.close(); pcap.close()
    asyncio.run(run())
    rows = fields(path, "tcpeno.tep", "tcpeno.negotiated_tep", "tcpcrypt", display_filter="tcpeno || tcpcrypt")
    assert len(rows) == 1 and rows[0]["tcpeno.tep"] and not rows[0]["tcpeno.negotiated_tep"]
    assert_clean(path)


def crafted(tmp_path: Path, segments: list[TCPSegment]) -> Path:
    path = tmp_path / "crafted.pcap"
    w = PcapWriter(str(path))
    for i, seg in enumerate(segments):
        src, dst = (A4, B4) if seg.src_port == 40000 else (B4, A4)
        w.write(build_ip_tcp(seg, src, dst), 1000.0 + i)
    w.close()
    return path


A4, B4 = bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2])


@pytest.mark.parametrize("eno,expert", [
    (b"\x85\xa3\x01", "tcpeno.ill_formed"),               # length byte: 6 bytes, 1 there
    (b"\x81\x23\x01\x02", "tcpeno.ill_formed"),           # length byte then v = 0
    (b"\x81", "tcpeno.ill_formed"),                       # length byte ends the option
    (b"\x1d\x23", "tcpeno.z_bits"),                       # z bits set, b = 1
    (b"\x00\x01\x23", "tcpeno.second_global"),
    (b"\xa3" + bytes(20), "tcpeno.resume_nonce_long"),    # 9-byte half + 11-byte nonce
], ids=["past-end", "then-v0", "at-end", "z-bits", "two-globals", "long-nonce"])
def test_ill_formed_options_are_flagged_not_crashed_on(tmp_path, eno, expert):
    path = crafted(tmp_path, [TCPSegment(40000, 80, 1000, 0, SYN, 65535, eno=(eno,))])
    rows = fields(path, "_ws.expert.severity", "_ws.malformed", display_filter=expert)
    # an ill-formed option is what Wireshark calls malformed (expert group Malformed); the
    # others are protocol warnings on a well-formed option
    assert len(rows) == 1 and bool(rows[0]["_ws.malformed"]) == (expert == "tcpeno.ill_formed")
    text = tshark(path, "-V")
    assert "Lua Error" not in text and "TCP Encryption Negotiation Option" in text


def test_odd_streams_are_flagged_not_crashed_on(tmp_path):
    """Decode As tcpcrypt on bytes that are not: an Init1 too short for its fields, a frame
    shorter than a tag with cres bits set, a frame cut by the end of the capture."""
    init1 = (0x15101A0E).to_bytes(4, "big") + (20).to_bytes(4, "big") + b"\x05" + bytes(11)
    frame = b"\xfe\x00\x04abcd"
    cut = b"\x00\x40\x00" + bytes(10)
    path = crafted(tmp_path, [
        TCPSegment(40000, 80, 1000, 0, SYN, 65535),
        TCPSegment(80, 40000, 5000, 1001, SYN | ACK, 65535),
        TCPSegment(40000, 80, 1001, 5001, ACK | PSH, 512, init1 + frame),
        TCPSegment(40000, 80, 1001 + len(init1 + frame), 5001, ACK | PSH, 512, cut),
    ])
    rows = fields(path, "tcpcrypt.init_short", "tcpcrypt.cres", "tcpcrypt.clen_short", "_ws.malformed",
                  options=("-d", "tcp.port==80,tcpcrypt"))
    assert rows[2]["tcpcrypt.init_short"] and rows[2]["tcpcrypt.cres"] and rows[2]["tcpcrypt.clen_short"]
    assert [bool(r["_ws.malformed"]) for r in rows] == [False, False, True, False]
    text = tshark(path, "-V", "-d", "tcp.port==80,tcpcrypt")
    assert "Lua Error" not in text

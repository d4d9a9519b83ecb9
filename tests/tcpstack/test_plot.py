"""`tcpstack plot` (tcpstack/tools/plot.py): the data behind the pictures, then the pictures.

The series are checked against the TCB itself (its cwnd, ssthresh, pipe, srtt and rto after
each ACK it processes, read by wrapping TCPConnection._process_ack, independently of the
sample observer) and against a capture built by hand; the drawing is checked only for
producing an SVG or PNG and for failing in one line without matplotlib.
"""
from __future__ import annotations

import sys

import pytest

from tcpstack.__main__ import main as tcpstack_main
from tcpstack.tcp.congestion.base import INFINITE_SSTHRESH
from tcpstack.tcp.connection import TCPConnection
from tcpstack.tcp.events import CCSample
from tcpstack.tools.pcap import PcapWriter
from tcpstack.tools.plot import CCRecorder, CCSeries, run_sim, time_sequence
from tcpstack.wire.segment import ACK, SYN, TCPSegment
from tcpstack.wire.tcp import build_ip_tcp

A, B = bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2])


@pytest.fixture
def after_each_ack(monkeypatch):
    """Every TCB's state right after each _process_ack: (conn, t, cwnd, ssthresh, pipe,
    srtt, rto, in fast recovery, in RTO recovery)."""
    seen: list[tuple] = []
    original = TCPConnection._process_ack

    def wrapped(self, seg, seq, ack, plen, now):
        original(self, seg, seq, ack, plen, now)
        seen.append((self, now, self.cc.cwnd, self.cc.ssthresh, self._pipe(), self._rtt.srtt,
                     self.rto, self._in_recovery, self._in_loss))
    monkeypatch.setattr(TCPConnection, "_process_ack", wrapped)
    return seen


@pytest.mark.parametrize("cc", ["newreno", "cubic"])
def test_the_series_of_a_lossy_simulator_run_are_the_tcbs_values_after_each_ack(cc, after_each_ack):
    run = run_sim(cc, loss=0.01, nbytes=1_000_000, seed=1)
    assert run.delivered and run.cc == cc
    samples = run.series.samples
    conns = {c for c, *_ in after_each_ack if c.cc.name == cc and c.snd_una - c.iss > 1000}
    assert len(conns) == 1                         # the sender (the receiver sends no data)
    tcb = [r[1:] for r in after_each_ack if r[0] in conns]
    acks = [(s.t, s.cwnd, s.ssthresh, s.pipe, s.srtt, s.rto, s.in_recovery, s.in_loss)
            for s in samples if s.event == "ack"]
    assert acks == tcb
    assert len(acks) > 200
    # the series drawn are those values: cwnd everywhere, ssthresh once it is set
    cwnd = run.series.series("cwnd")
    assert [v for _, v in cwnd] == [r[1] for r in tcb]
    assert len({v for _, v in cwnd}) > 20          # it moved: slow start, losses, growth
    ssthresh = run.series.series("ssthresh")
    assert [v for _, v in ssthresh] == [r[2] for r in tcb if r[2] < INFINITE_SSTHRESH]
    assert ssthresh and ssthresh[0][0] > 0         # arbitrarily high until the first loss
    assert [v for _, v in run.series.series("rto")] == [r[5] for r in tcb]
    # 1% loss: the sender went through fast recovery, each episode one in the series
    episodes = run.series.recoveries()
    assert run.stats.recoveries >= 2
    assert sum(k == "fast" for *_, k in episodes) == run.stats.recoveries
    assert all(start < end for start, end, _ in episodes)


def test_timeouts_are_sampled_and_shown_as_rto_recovery_episodes():
    # (seed 4 served until recovery probes and quick ACKs changed the run: its two
    # timeouts are now back to back, one episode; seed 11 until two-segment loss probes
    # left it none; seed 13 has one, alone)
    run = run_sim("cubic", loss=0.15, nbytes=200_000, seed=13)
    assert run.delivered
    st = run.stats
    rto_samples = [s for s in run.series.samples if s.event == "rto"]
    assert st.timeouts > 0 and len(rto_samples) == st.timeouts
    assert all(s.in_loss and not s.in_recovery for s in rto_samples)
    episodes = run.series.recoveries()
    assert sum(k == "rto" for *_, k in episodes) == st.timeouts     # (none back to back here)
    assert sum(k == "fast" for *_, k in episodes) == st.recoveries


def _s(t: float, rec: bool = False, loss: bool = False, cwnd: int = 10) -> CCSample:
    return CCSample(t, "ack", cwnd, INFINITE_SSTHRESH, 0, None, 1.0, rec, loss, 0)


def test_recovery_episodes_run_from_the_first_sample_in_the_state_to_the_first_out():
    s = CCSeries([_s(0), _s(1, rec=True), _s(2, rec=True), _s(3), _s(4, loss=True),
                  _s(5, rec=True), _s(6, rec=True)])
    assert s.recoveries() == [(1, 3, "fast"), (4, 5, "rto"), (5, 6, "fast")]
    assert s.series("ssthresh") == [] and s.series("srtt") == []
    assert s.series("cwnd") == [(t, 10) for t in range(7)]


def test_the_recorder_keeps_samples_per_connection():
    rec = CCRecorder()
    a, b = object(), object()
    rec(a, _s(0))
    rec(b, _s(1))
    rec(a, _s(2))
    assert [s.t for s in rec.samples[a]] == [0, 2] and [s.t for s in rec.samples[b]] == [1]


# --- the time-sequence graph --------------------------------------------------------------------

def _pkt(src: bytes, dst: bytes, sport: int, dport: int, seq: int, ack: int, flags: int,
         window: int, payload: bytes = b"", **opts) -> bytes:
    seg = TCPSegment(sport, dport, seq, ack, flags, window, payload, **opts)
    return build_ip_tcp(seg, src, dst)


def handmade_capture(client_ws: int | None = 7) -> list[tuple[float, str, bytes]]:
    """A client sends three 1000-byte segments; the second is lost, SACKed around and
    resent.  ISNs 4294967000 (the sequence numbers wrap) and 5000; the server's shift is 3."""
    c, s = 4294967000, 5000
    d = b"x" * 1000
    def seq(n):
        return (c + n) & 0xFFFFFFFF
    return [
        (100.0, "", _pkt(A, B, 40000, 80, c, 0, SYN, 65535, mss=1460, wscale=client_ws,
                         sack_permitted=True)),
        (100.5, "", _pkt(B, A, 80, 40000, s, seq(1), SYN | ACK, 65535, mss=1460, wscale=3,
                         sack_permitted=True)),
        (101.0, "", _pkt(A, B, 40000, 80, seq(1), s + 1, ACK, 512, d)),
        (101.1, "", _pkt(A, B, 40000, 80, seq(1001), s + 1, ACK, 512, d)),      # lost
        (101.2, "", _pkt(A, B, 40000, 80, seq(2001), s + 1, ACK, 512, d)),
        (101.3, "", _pkt(B, A, 80, 40000, s + 1, seq(1001), ACK, 100)),
        (101.4, "", _pkt(B, A, 80, 40000, s + 1, seq(1001), ACK, 100,
                         sack_blocks=((seq(2001), seq(3001)),))),
        (101.5, "", _pkt(A, B, 40000, 80, seq(1001), s + 1, ACK, 512, d)),      # resent
        (101.6, "", _pkt(B, A, 80, 40000, s + 1, seq(3001), ACK, 200)),
    ]


def test_time_sequence_of_a_handmade_capture():
    ts = time_sequence(handmade_capture())
    assert ts.sender == ("10.0.0.1", 40000) and ts.receiver == ("10.0.0.2", 80)
    assert ts.t0 == 100.0 and ts.wscale == 3
    assert ts.data == [(1.0, 1, 1001), (pytest.approx(1.1), 1001, 2001), (pytest.approx(1.2), 2001, 3001)]
    assert ts.retransmissions == [(1.5, 1001, 2001)]
    assert ts.acks == [(0.5, 1), (pytest.approx(1.3), 1001), (pytest.approx(1.4), 1001), (pytest.approx(1.6), 3001)]
    # the SYN-ACK's window is never scaled (RFC 7323 2.2), the others by the server's shift
    assert [w for _, w in ts.window] == [1 + 65535, 1001 + 800, 1001 + 800, 3001 + 1600]
    assert ts.sacks == [(pytest.approx(1.4), 2001, 3001)]


def test_no_shift_unless_both_syns_carry_window_scale_and_the_direction_can_be_chosen():
    ts = time_sequence(handmade_capture(client_ws=None))
    assert ts.wscale == 0
    assert [w for _, w in ts.window] == [1 + 65535, 1001 + 100, 1001 + 100, 3001 + 200]
    rev = time_sequence(handmade_capture(), (("10.0.0.2", 80), ("10.0.0.1", 40000)))
    assert rev.sender == ("10.0.0.2", 80) and rev.data == [] and rev.retransmissions == []
    assert [a for _, a in rev.acks] == [1, 1, 1, 1]       # the client's ACKs of the server's SYN


def test_time_sequence_of_a_simulated_capture_agrees_with_the_sender():
    run = run_sim("newreno", loss=0.02, nbytes=400_000, seed=5)
    ts = time_sequence(run.records)
    assert ts.sender == ("10.0.0.1", ts.sender[1]) and ts.wscale is not None
    assert len(ts.retransmissions) == run.stats.retransmits > 0
    # first transmissions cover the stream exactly once, in order
    assert ts.data[0][1] == 1 and ts.data[-1][2] == 400_001
    assert all(a[2] == b[1] for a, b in zip(ts.data, ts.data[1:]))
    assert ts.acks[-1][1] == 400_002                  # everything and the FIN
    assert ts.sacks and all(left >= 1 and right <= 400_001 for _, left, right in ts.sacks)
    # the ACK line never goes down; the window's edge stays ahead of it
    acks = [a for _, a in ts.acks]
    assert acks == sorted(acks)
    assert all(w >= a for (_, a), (_, w) in zip(ts.acks, ts.window))


# --- the command --------------------------------------------------------------------------------

def test_plot_a_capture_as_svg_and_png(tmp_path, capsys):
    pcap = tmp_path / "c.pcap"
    with PcapWriter(str(pcap)) as w:
        for t, _, p in handmade_capture():
            w.write(p, t)
    assert tcpstack_main(["plot", str(pcap), "-o", str(tmp_path / "ts.svg")]) == 0
    svg = (tmp_path / "ts.svg").read_text()
    assert svg.lstrip().startswith("<?xml") and "<svg" in svg
    assert tcpstack_main(["plot", str(pcap), "--time", "0.9:1.7", "--conn",
                          "10.0.0.1:40000-10.0.0.2:80", "-o", str(tmp_path / "ts.png")]) == 0
    assert (tmp_path / "ts.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_simulated_runs_side_by_side(tmp_path, capsys):
    out = tmp_path / "cc.png"
    assert tcpstack_main(["plot", "--sim", "--cc", "newreno,cubic", "--loss", "0.01",
                          "--bytes", "150000", "--time", "0:0.5", "--pcap-dir", str(tmp_path),
                          "-o", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in lines] == ["newreno", "cubic"]
    assert time_sequence_from(tmp_path / "cubic.pcap").data[-1][2] == 150_001


def time_sequence_from(path):
    from tcpstack.tools.diagram import read_pcap
    return time_sequence(read_pcap(str(path)))


@pytest.mark.parametrize("argv, message", [
    ([], "give a capture to draw, or --sim"),
    (["--sim", "--cc", "bogus"], "bogus"),
    (["/nonexistent.pcap"], "/nonexistent.pcap"),
])
def test_mistakes_are_one_line(argv, message, tmp_path, capsys):
    assert tcpstack_main(["plot", *argv, "-o", str(tmp_path / "x.png")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("tcpstack plot: ") and message in err and err.count("\n") == 1


def test_without_matplotlib_one_line_says_what_to_install(tmp_path, capsys, monkeypatch):
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)      # import matplotlib -> ImportError
    assert tcpstack_main(["plot", "--sim", "-o", str(tmp_path / "x.png")]) == 1
    err = capsys.readouterr().err
    assert err == "tcpstack plot: matplotlib is not installed: pip install 'tcpcrypt-py[plot]'\n"
    assert not (tmp_path / "x.png").exists()

"""The `tcpstack` command line, run for real: each command brings its own TUN device and
stack up inside a network namespace of the test's (tun.topology.TwoHosts(tuns=False): two
hosts, kernel routing over a veth pair)."""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time

import pytest

from tests.waiting import wait_for
from tcpstack.tools.cli import render_stats
from tun.netns import NetNS
from tun.topology import TwoHosts

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
CMD = [sys.executable, "-m", "tcpstack"]




def stats(ctl: str) -> dict:
    r = subprocess.run(CMD + ["stats", "--control", ctl, "--json"], capture_output=True,
                       text=True, timeout=30, env=ENV)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_render_stats_is_an_ss_like_table():
    snap = {"addresses": ["10.0.0.2"], "listeners": ["10.0.0.2:7000"],
            "stack": {"packets_in": 5, "malformed": 0},
            "connections": [{"state": "ESTABLISHED", "local": "10.0.0.2:7000",
                             "remote": "10.0.0.1:40000", "cwnd": 14480, "ssthresh": 1 << 31,
                             "srtt": 0.0012, "rto": 0.2, "retransmits": 1, "bytes_out": 10,
                             "bytes_in": 20, "fast_retransmits": 1, "sack_retransmits": 0,
                             "timeouts": 0, "congestion_control": "cubic", "tep": "X25519",
                             "aead": "AEAD_AES_128_GCM", "session_id": "23ab"}]}
    out = render_stats(snap).splitlines()
    assert out[0] == "stack 10.0.0.2; listening: 10.0.0.2:7000"
    assert out[2].split() == ["ESTABLISHED", "10.0.0.2:7000", "10.0.0.1:40000", "14480", "inf",
                              "1.20", "200", "1", "10", "20", "X25519", "AEAD_AES_128_GCM"]
    assert out[3].split() == ["fast", "1", "sack", "0", "timeouts", "0", "cubic", "session", "23ab"]
    assert out[4] == "stack: packets_in=5"


@pytest.mark.tun
def test_listen_connect_across_two_hosts_encrypted_with_stats_trace_and_pcap(tmp_path):
    data = os.urandom(2 << 20)
    src = tmp_path / "in.bin"
    src.write_bytes(data)
    pcap = str(tmp_path / "listen.pcap")
    with TwoHosts(tuns=False) as net:
        a, b = net.stack_addrs
        ctl_l, ctl_c = str(tmp_path / "l.sock"), str(tmp_path / "c.sock")
        # Outputs go to files: a pipe nobody drains while the test feeds the client's stdin
        # would block the listener (2 MB of stdout, a trace line per segment on stderr).
        l_out, l_err = open(tmp_path / "l.out", "w+b"), open(tmp_path / "l.err", "w+b")
        listener = net.ns[1].popen(CMD + ["listen", "7000", "--addr", f"{b}/24", "--control", ctl_l,
                                          "--pcap", pcap, "--trace"],
                                   stdin=subprocess.PIPE, stdout=l_out, stderr=l_err, env=ENV)
        # The client starts once the listener's stack is up, as a user would: a SYN sent
        # before the listener's TUN device exists meets ICMP unreachable, and connect
        # stops at the first one (as connect(2) does).
        wait_for(lambda: os.path.exists(ctl_l), what="the listener's control socket")
        # Both stdins are pipes we hold open: the connection stays up for `stats`.
        client = net.ns[0].popen(CMD + ["connect", b, "7000", "--addr", f"{a}/24", "--control",
                                        ctl_c, "--progress"],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, env=ENV)
        try:
            wait_for(lambda: os.path.exists(ctl_l), what="the listener's control socket")
            wait_for(lambda: any(c["state"] == "ESTABLISHED" for c in stats(ctl_l)["connections"]),
                     what="an established connection")
            conn = next(c for c in stats(ctl_l)["connections"] if c["state"] == "ESTABLISHED")
            assert conn["local"] == f"{b}:7000" and conn["remote"].startswith(f"{a}:")
            assert conn["encrypted"] and conn["tep"] and conn["aead"]
            table = subprocess.run(CMD + ["stats", "--control", ctl_l], capture_output=True,
                                   text=True, timeout=30, env=ENV).stdout
            assert "ESTABLISHED" in table and f"session {conn['session_id']}" in table
            # trace of the running client, live: send a little and watch it go out
            tracer = subprocess.Popen(CMD + ["trace", "--control", ctl_c, "-n", "2"],
                                      stdout=subprocess.PIPE, text=True, env=ENV)
            time.sleep(0.3)
            client.stdin.write(data)
            client.stdin.close()
            client.stdin = None                 # (so communicate() does not flush it)
            traced = tracer.communicate(timeout=30)[0]
            assert re.search(rf"^[\d.]+ out {a}:\d+ > {b}:7000 \[", traced, re.M), traced
            listener.communicate(b"bye", timeout=60)
            out, lerr = (tmp_path / "l.out").read_bytes(), (tmp_path / "l.err").read_bytes()
            cout, cerr = client.communicate(timeout=60)
        finally:
            for p in (listener, client):
                if p.poll() is None:
                    p.kill()
        assert listener.returncode == 0 and client.returncode == 0, (lerr, cerr)
        assert hashlib.sha256(out).digest() == hashlib.sha256(data).digest()
        lerr, cerr = lerr.decode(), cerr.decode()
        sid_l = re.search(r"session ID ([0-9a-f]+)", lerr).group(1)
        sid_c = re.search(r"session ID ([0-9a-f]+)", cerr).group(1)
        assert sid_l == sid_c == conn["session_id"]
        assert "tcpcrypt TCPCRYPT_ECDHE_Curve25519 AEAD_AES_128_GCM" in cerr
        assert cout == b"bye"
        assert "sent" in cerr and "MB/s" in cerr             # the progress bar
        # --trace: the SYN with ENO and the state transitions, on the listener's stderr
        assert re.search(rf"in  {a}:\d+ > {b}:7000 \[S\] seq 0 .*eno", lerr), lerr[:2000]
        assert "CLOSED -> SYN-RECEIVED" in lerr
        assert "SYN-RECEIVED -> ESTABLISHED" in lerr
    if shutil.which("tshark"):
        # (port 7000 belongs to Wireshark's Gryphon dissector: read the payload as data, since
        # ciphertext is not Gryphon; the IP and TCP layers are what is checked)
        r = subprocess.run(["tshark", "-n", "-r", pcap, "-o", "tcp.check_checksum:TRUE",
                            "-d", "tcp.port==7000,data",
                            "-Y", "_ws.malformed || _ws.expert.severity >= error || tcp.checksum.status == 0",
                            "-T", "fields", "-e", "frame.number"], capture_output=True, text=True)
        assert r.returncode == 0 and r.stdout.strip() == "", r.stdout[:500] + r.stderr
        syn = subprocess.run(["tshark", "-n", "-r", pcap, "-Y", "tcp.flags.syn == 1 && tcp.option_kind == 69",
                              "-T", "fields", "-e", "tcp.flags.ack"], capture_output=True, text=True)
        assert sorted(syn.stdout.split()) == ["0", "1"]


@pytest.mark.tun
def test_up_serves_echo_and_http_to_the_kernel_and_ping_works(tmp_path):
    with NetNS() as ns:
        ctl = str(tmp_path / "up.sock")
        up = ns.popen(CMD + ["up", "--addr", "10.240.7.2/24", "--echo", "7", "--http", "80",
                             "--control", ctl], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                      env=ENV)
        try:
            wait_for(lambda: os.path.exists(ctl), what="the control socket")
            r = ns.run([sys.executable, "-c",
                        "import socket; s = socket.create_connection(('10.240.7.2', 7), timeout=10);"
                        "s.sendall(b'hello over the userspace stack'); s.shutdown(socket.SHUT_WR);"
                        "print(s.recv(100).decode())"], timeout=30)
            assert r.stdout.strip() == "hello over the userspace stack", r.stderr
            if shutil.which("curl"):
                r = ns.run(["curl", "-s", "-o", "/dev/null", "-w", "%{size_download}",
                            "http://10.240.7.2/1000000"], timeout=30)
                assert r.stdout == "1000000", r.stderr
            snap = stats(ctl)
            assert "*:7" in snap["listeners"] and snap["stack"]["packets_in"] > 0
            ping = ns.run(CMD + ["ping", "10.241.7.1", "--addr", "10.241.7.2/24", "-c", "2",
                                 "-i", "0.2", "--control", str(tmp_path / "p.sock")],
                          timeout=30, env=ENV)
            assert ping.returncode == 0, ping.stdout + ping.stderr
            assert ping.stdout.count("bytes from 10.241.7.1: icmp_seq=") == 2
            assert "2 packets transmitted, 2 received, 0% packet loss" in ping.stdout
        finally:
            up.terminate()
            _, uerr = up.communicate(timeout=30)
        assert up.returncode == 0 and "down" in uerr.decode()
        assert not os.path.exists(ctl)                      # the control socket is removed
        assert "tcs" not in ns.run(["ip", "-br", "link"]).stdout   # and the TUN device

"""The node's specs and its TOML file (tcpstack.overlay.config): forms, defaults, and the
command line overriding the file."""
from __future__ import annotations

import pytest

from tcpstack.overlay.config import (Expose, Forward, Listen, OverlayError, merge, parse_expose,
                                     parse_forward, parse_listen, parse_user)
from tcpstack.tools.cli import build_parser


def test_specs():
    assert parse_listen("1080") == Listen("127.0.0.1", 1080)
    assert parse_listen("0.0.0.0:1080") == Listen("0.0.0.0", 1080)
    assert parse_listen("[::1]:1080") == Listen("::1", 1080)
    assert parse_listen("localhost:1080") == Listen("127.0.0.1", 1080)
    assert parse_forward("5432:10.231.6.2:5432") == Forward(Listen("127.0.0.1", 5432), "10.231.6.2", 5432)
    assert parse_forward("[::1]:5432:[fd00:6::2]:5433") == Forward(Listen("::1", 5432), "fd00:6::2", 5433)
    assert parse_forward("0.0.0.0:80:nodeb.overlay:8080").host == "nodeb.overlay"
    assert parse_expose("8080:127.0.0.1:80") == Expose(8080, "127.0.0.1", 80)
    assert str(parse_forward("[::1]:1:[fd00::2]:2")) == "[::1]:1->[fd00::2]:2"
    assert parse_user("alice:se:cret") == (b"alice", b"se:cret")
    for bad in ("", "x", "0", "65536", "1:2:3", "[::1:80"):
        with pytest.raises(ValueError):
            parse_listen(bad)
    for bad in ("80:host", "80:host:0", "a:80:h:1", "1:2:3:4:5", "80::1", "80:-x:1"):
        with pytest.raises(ValueError):
            parse_forward(bad)
    for bad in ("80:h", "0:h:1", "1:h:1:2"):
        with pytest.raises(ValueError):
            parse_expose(bad)


def _args(*argv: str):
    return build_parser().parse_args(["up", *argv])


def test_file_and_command_line(tmp_path):
    conf = tmp_path / "node.toml"
    conf.write_text('address = "10.231.5.2/24"\nmtu = 1400\nroutes = ["10.231.7.0/24"]\n'
                    'socks5 = 1080\nforwards = ["5432:10.231.6.2:5432", "2222:10.231.6.2:22"]\n'
                    'exposes = ["8080:127.0.0.1:80"]\nsocks5_users = ["alice:secret"]\n'
                    'require_encryption = true\nconnect_timeout = 5\noffload = false\n')
    a = _args("--config", str(conf))
    cfg = merge(a)
    assert (a.addr, a.mtu, a.route, a.offload, a.require_encryption) == \
        ("10.231.5.2/24", 1400, ["10.231.7.0/24"], False, True)
    assert cfg.socks5 == Listen("127.0.0.1", 1080) and len(cfg.forwards) == 2
    assert cfg.socks5_users == {b"alice": b"secret"} and cfg.connect_timeout == 5
    # the command line wins; a repeatable option replaces the file's list
    a = _args("--config", str(conf), "--addr", "10.231.9.2/24", "--mtu", "1300",
              "--forward", "6000:10.231.6.2:6000", "--socks5", "1081", "--no-offload")
    cfg = merge(a)
    assert (a.addr, a.mtu) == ("10.231.9.2/24", 1300)
    assert cfg.forwards == [parse_forward("6000:10.231.6.2:6000")]
    assert cfg.exposes == [parse_expose("8080:127.0.0.1:80")]          # not given: the file's
    assert cfg.socks5 == Listen("127.0.0.1", 1081)
    # without a file: the defaults
    a = _args("--addr", "10.231.5.2/24")
    cfg = merge(a)
    assert (a.mtu, a.offload, a.route, cfg.socks5, cfg.forwards) == (1500, True, [], None, [])


def test_users_file(tmp_path):
    f = tmp_path / "users"
    f.write_text("# socks5 users\nalice:secret\n\nbob:hunter2\n")
    cfg = merge(_args("--addr", "10.0.0.2/24", "--socks5", "1080", "--socks5-users", str(f)))
    assert cfg.socks5_users == {b"alice": b"secret", b"bob": b"hunter2"}
    f.write_text("alice:secret\nbob\n")
    with pytest.raises(OverlayError, match=rf"^{f}:2: expected USER:PASSWORD$"):
        merge(_args("--addr", "10.0.0.2/24", "--socks5", "1080", "--socks5-users", str(f)))
    with pytest.raises(OverlayError, match="without --socks5"):
        merge(_args("--addr", "10.0.0.2/24", "--socks5-user", "a:b"))


def test_same_stack_port_twice():
    with pytest.raises(OverlayError, match="stack port 80 is already --expose 80->127.0.0.1:8080"):
        merge(_args("--addr", "10.0.0.2/24", "--expose", "80:127.0.0.1:8080", "--http", "80"))
    with pytest.raises(OverlayError, match="already"):
        merge(_args("--addr", "10.0.0.2/24", "--expose", "80:127.0.0.1:1", "--expose", "80:127.0.0.1:2"))


def test_paths_in_the_file_are_relative_to_it(tmp_path, monkeypatch):
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "users").write_text("alice:secret\n")
    conf = tmp_path / "etc" / "node.toml"
    conf.write_text('address = "10.0.0.2/24"\nsocks5 = 1080\nsocks5_users_file = "users"\n'
                    'control = "node.sock"\npcap = "/var/tmp/x.pcap"\n')
    monkeypatch.chdir(tmp_path)
    a = _args("--config", str(conf.relative_to(tmp_path)))
    cfg = merge(a)
    assert cfg.socks5_users == {b"alice": b"secret"}
    assert a.control == str(tmp_path / "etc" / "node.sock") and a.pcap == "/var/tmp/x.pcap"


def test_congestion_control_from_the_file_or_the_command_line(tmp_path):
    """`congestion_control` in the file (--congestion-control on the command line wins);
    an algorithm the stack does not have is one error naming file and line."""
    from tcpstack.tools.cli import stack_config
    conf = tmp_path / "node.toml"
    conf.write_text('address = "10.231.5.2/24"\ncongestion_control = "BBR"\n')
    a = _args("--config", str(conf))
    merge(a)
    assert a.congestion_control == "bbr"
    assert stack_config(a).tcp.congestion_control == "bbr"
    a = _args("--config", str(conf), "--cc", "newreno")
    merge(a)
    assert a.congestion_control == "newreno"
    a = _args("--addr", "10.231.5.2/24")
    merge(a)
    assert a.congestion_control is None and stack_config(a) is None     # cubic, the default
    conf.write_text('address = "10.231.5.2/24"\n\ncongestion_control = "vegas"\n')
    with pytest.raises(OverlayError, match=r"node\.toml:3: congestion_control = 'vegas': not one "
                                           r"the stack has \(bbr, cubic, newreno, reno\)"):
        merge(_args("--config", str(conf)))
    conf.write_text('address = "10.231.5.2/24"\ncongestion_control = 1\n')
    with pytest.raises(OverlayError, match=r"congestion_control"):
        merge(_args("--config", str(conf)))

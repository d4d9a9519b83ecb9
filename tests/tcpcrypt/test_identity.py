"""Node identities and the peers file (tcpcrypt/identity.py): file modes, the one-line public
key form, every malformed peers-file line named by file and line number, atomic reload."""
from __future__ import annotations

import base64
import ipaddress
import os
import stat

import pytest

from tcpcrypt.errors import IdentityError, PeersFileError
from tcpcrypt.identity import KEY_TYPE, Identity, Member, Members, PublicKey, parse_peers


@pytest.fixture
def ident() -> Identity:
    return Identity.generate()


def key_line(ident: Identity) -> str:
    return ident.public_key.text()


# --- keys ------------------------------------------------------------------------------

def test_public_key_text_form_round_trips(ident: Identity) -> None:
    text = ident.public_key.text()
    kind, b64 = text.split(" ")
    assert kind == KEY_TYPE == "tcpcrypt-ed25519"
    assert len(base64.b64decode(b64)) == 32 and len(b64) == 44
    assert PublicKey.parse(text) == ident.public_key
    assert PublicKey.parse("  " + text + "\n") == ident.public_key
    assert str(ident.public_key) == text


@pytest.mark.parametrize("bad", ["", "ssh-ed25519 AAAA", "tcpcrypt-ed25519",
                                 "tcpcrypt-ed25519 !!!notbase64!!!",
                                 "tcpcrypt-ed25519 " + base64.b64encode(b"x" * 31).decode(),
                                 "tcpcrypt-ed25519 " + base64.b64encode(b"x" * 32).decode() + " x"])
def test_public_key_parse_refuses_malformed(bad: str) -> None:
    with pytest.raises(IdentityError):
        PublicKey.parse(bad)


def test_sign_and_verify(ident: Identity) -> None:
    sig = ident.sign(b"message")
    assert len(sig) == 64
    assert ident.public_key.verify(sig, b"message")
    assert not ident.public_key.verify(sig, b"messagf")
    assert not Identity.generate().public_key.verify(sig, b"message")
    assert not ident.public_key.verify(sig[:-1], b"message")


def test_save_creates_0600_and_load_round_trips(tmp_path, ident: Identity) -> None:
    path = tmp_path / "node.key"
    old = os.umask(0)               # even with a permissive umask, the file is 0600
    try:
        ident.save(path)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    loaded = Identity.load(path)
    assert loaded.public_key == ident.public_key
    assert loaded.path == str(path)
    assert ident.public_key.verify(loaded.sign(b"m"), b"m")


def test_save_refuses_to_overwrite(tmp_path, ident: Identity) -> None:
    path = tmp_path / "node.key"
    path.write_text("precious")
    with pytest.raises(IdentityError, match="already exists"):
        ident.save(path)
    assert path.read_text() == "precious"


def test_save_refuses_a_symlink(tmp_path, ident: Identity) -> None:
    target = tmp_path / "elsewhere"
    (tmp_path / "node.key").symlink_to(target)
    with pytest.raises(IdentityError):
        ident.save(tmp_path / "node.key")
    assert not target.exists()


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o620, 0o602, 0o644, 0o666])
def test_load_refuses_group_or_other_access(tmp_path, ident: Identity, mode: int) -> None:
    path = tmp_path / "node.key"
    ident.save(path)
    path.chmod(mode)
    with pytest.raises(IdentityError, match=f"node.key: permissions {mode:04o} are too open"):
        Identity.load(path)


def test_load_accepts_0400(tmp_path, ident: Identity) -> None:
    path = tmp_path / "node.key"
    ident.save(path)
    path.chmod(0o400)
    assert Identity.load(path).public_key == ident.public_key


def test_load_missing_file_names_it(tmp_path) -> None:
    with pytest.raises(IdentityError, match="missing.key: no such private key file"):
        Identity.load(tmp_path / "missing.key")


@pytest.mark.parametrize("content", [b"", b"garbage\n", b"-----BEGIN PRIVATE KEY-----\nAAAA\n"
                                     b"-----END PRIVATE KEY-----\n"])
def test_load_malformed_content_names_the_file(tmp_path, content: bytes) -> None:
    path = tmp_path / "bad.key"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, content)
    os.close(fd)
    with pytest.raises(IdentityError, match="bad.key"):
        Identity.load(path)


def test_load_refuses_a_non_ed25519_key(tmp_path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
    pem = X25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption())
    path = tmp_path / "x.key"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, pem)
    os.close(fd)
    with pytest.raises(IdentityError, match="x.key: .*not an Ed25519 private key"):
        Identity.load(path)


def test_load_refuses_a_directory(tmp_path) -> None:
    d = tmp_path / "dir"
    d.mkdir(mode=0o700)
    with pytest.raises(IdentityError, match="not a regular file"):
        Identity.load(d)


# --- the peers file --------------------------------------------------------------------

def test_peers_file_parses_keys_addresses_comments() -> None:
    a, b, c = (Identity.generate() for _ in range(3))
    text = (f"# the overlay\n\n"
            f"{key_line(a)} 10.231.6.2  # alice\n"
            f"   {key_line(b)}  10.231.7.0/24,fd00:1::/64 , 10.231.8.1 #bob's site\n"
            f"{key_line(c)}\n")
    m = Members.from_text(text, "peers")
    assert len(m) == 3
    ma, mb, mc = m.identities()
    assert (ma.public_key, ma.comment, ma.line) == (a.public_key, "alice", 3)
    assert ma.networks == (ipaddress.ip_network("10.231.6.2/32"),)
    assert mb.networks == (ipaddress.ip_network("10.231.7.0/24"),
                           ipaddress.ip_network("fd00:1::/64"),
                           ipaddress.ip_network("10.231.8.1/32"))
    assert (mb.comment, mb.line) == ("bob's site", 4)
    assert (mc.networks, mc.comment) == ((), "")
    assert m.admits(a.public_key, "10.231.6.2")
    assert not m.admits(a.public_key, "10.231.6.3")
    assert m.admits(b.public_key, "10.231.7.200") and m.admits(b.public_key, "fd00:1::9")
    assert not m.admits(b.public_key, "fd00:2::9")
    assert m.admits(c.public_key, "192.0.2.1")       # no address listed: any address
    assert not m.admits(Identity.generate().public_key, "10.231.6.2")
    assert "not in the peers file" in (m.check(Identity.generate().public_key, "10.0.0.1") or "")
    assert "may not use address 10.231.6.3" in (m.check(a.public_key, "10.231.6.3") or "")
    assert a.public_key in m and [x.public_key for x in m] == [a.public_key, b.public_key,
                                                               c.public_key]


def test_member_line_text_parses_back() -> None:
    a = Identity.generate()
    m = Members.from_text(f"{key_line(a)} 10.1.0.0/16, 10.2.0.1 # x y\n").get(a.public_key)
    assert m is not None
    again = Members.from_text(m.line_text()).get(a.public_key)
    assert again is not None and (again.networks, again.comment) == (m.networks, m.comment)


def _malformed(key: str) -> list[tuple[str, str]]:
    return [
        ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE 10.0.0.1", "expected a public key"),
        ("tcpcrypt-ed25519", "without the base64 key"),
        ("tcpcrypt-ed25519 @@@@", "not valid base64"),
        ("tcpcrypt-ed25519 " + base64.b64encode(b"k" * 16).decode(), "decodes to 16 bytes"),
        (f"{key} 10.0.0.256", "'10.0.0.256' is not an IP address or prefix"),
        (f"{key} 10.0.0.1/24", "'10.0.0.1/24' has host bits set"),
        (f"{key} 10.0.0.1 alice", "'alice' is not an IP address or prefix (a comment starts with '#')"),
        (" , ,", "commas without a public key"),
    ]


@pytest.mark.parametrize("index", range(8))
def test_malformed_line_names_file_and_line(tmp_path, index: int) -> None:
    a, b = Identity.generate(), Identity.generate()
    bad, what = _malformed(key_line(b))[index]
    path = tmp_path / "peers"
    path.write_text(f"# header\n{key_line(a)} 10.0.0.1\n\n{bad}\n")
    with pytest.raises(PeersFileError) as ei:
        Members.load(path)
    assert ei.value.line == 4 and ei.value.path == str(path)
    assert str(ei.value).startswith(f"{path}:4: ")
    assert what in str(ei.value)


def test_duplicate_key_is_an_error_naming_both_lines() -> None:
    a = Identity.generate()
    with pytest.raises(PeersFileError, match=r"peers:3: duplicate key .* already listed on line 1"):
        parse_peers(f"{key_line(a)} 10.0.0.1\n# x\n{key_line(a)} 10.0.0.2\n", "peers")


def test_missing_peers_file_names_it(tmp_path) -> None:
    with pytest.raises(IdentityError, match="nope: no such peers file"):
        Members.load(tmp_path / "nope")


def test_reload_applies_changes_and_reports_them(tmp_path) -> None:
    a, b, c = (Identity.generate() for _ in range(3))
    path = tmp_path / "peers"
    path.write_text(f"{key_line(a)} 10.0.0.1\n{key_line(b)} 10.0.0.2\n")
    m = Members.load(path)
    path.write_text(f"{key_line(a)} 10.0.0.9\n{key_line(c)}\n")
    added, removed = m.reload()
    assert {x.public_key for x in removed} == {a.public_key, b.public_key}   # a's address changed
    assert {x.public_key for x in added} == {a.public_key, c.public_key}
    assert not m.admits(b.public_key, "10.0.0.2")
    assert not m.admits(a.public_key, "10.0.0.1") and m.admits(a.public_key, "10.0.0.9")
    assert m.admits(c.public_key, "10.9.9.9")


@pytest.mark.parametrize("breakage", ["malformed", "missing"])
def test_reload_error_keeps_the_old_set_and_raises(tmp_path, breakage: str) -> None:
    a, b = Identity.generate(), Identity.generate()
    path = tmp_path / "peers"
    path.write_text(f"{key_line(a)} 10.0.0.1\n")
    m = Members.load(path)
    if breakage == "malformed":
        # the first line alone would remove a and add b: nothing of it may take effect
        path.write_text(f"{key_line(b)} 10.0.0.2\n{key_line(b)[:-3]} 10.0.0.3\n")
        with pytest.raises(PeersFileError, match=":2: "):
            m.reload()
    else:
        path.unlink()
        with pytest.raises(IdentityError, match="no such peers file"):
            m.reload()
    assert m.admits(a.public_key, "10.0.0.1")
    assert not m.admits(b.public_key, "10.0.0.2")
    assert len(m) == 1


def test_members_of_and_reload_without_file() -> None:
    a = Identity.generate()
    m = Members.of(a, Member(Identity.generate().public_key,
                             (ipaddress.ip_network("10.0.0.0/8"),)))
    assert m.admits(a.public_key, "1.2.3.4") and len(m) == 2
    with pytest.raises(IdentityError, match="not read from a file"):
        m.reload()

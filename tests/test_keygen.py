"""`tcpstack keygen` (tcpstack/tools/keygen.py): a new private key file with mode 0600 and its
public key on stdout; `--public FILE` prints an existing key's public half; errors are one
line naming the file, exit status 1."""
from __future__ import annotations

import os
import stat

import pytest

from tcpcrypt.identity import Identity, PublicKey
from tcpstack.__main__ import main


def test_keygen_writes_0600_and_prints_the_public_key(tmp_path, capsys) -> None:
    path = tmp_path / "node.key"
    assert main(["keygen", "--out", str(path)]) == 0
    out, err = capsys.readouterr()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    line = out.strip()
    assert out.count("\n") == 1 and line.startswith("tcpcrypt-ed25519 ")
    assert PublicKey.parse(line) == Identity.load(path).public_key
    assert str(path) in err and "0600" in err

    assert main(["keygen", "--public", str(path)]) == 0
    out, err = capsys.readouterr()
    assert out.strip() == line and err == ""


def test_keygen_default_file_is_in_the_current_directory(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["keygen"]) == 0
    assert stat.S_IMODE((tmp_path / "tcpstack.key").stat().st_mode) == 0o600
    assert capsys.readouterr().out.startswith("tcpcrypt-ed25519 ")


def test_keygen_refuses_to_overwrite(tmp_path, capsys) -> None:
    path = tmp_path / "node.key"
    path.write_text("keep me")
    assert main(["keygen", "--out", str(path)]) == 1
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1
    assert f"{path}: already exists" in err
    assert path.read_text() == "keep me"


@pytest.mark.parametrize("case", ["too-open", "missing", "garbage"])
def test_keygen_public_refusals_are_one_line(tmp_path, capsys, case: str) -> None:
    path = tmp_path / "node.key"
    if case == "too-open":
        Identity.generate().save(path)
        path.chmod(0o644)
        what = "permissions 0644 are too open"
    elif case == "garbage":
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
        os.write(fd, b"not a key\n")
        os.close(fd)
        what = "not an unencrypted PEM private key"
    else:
        what = "no such private key file"
    assert main(["keygen", "--public", str(path)]) == 1
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1
    assert err.startswith(f"tcpstack: keygen: {path}: ") and what in err


def test_keygen_out_and_public_are_exclusive(tmp_path, capsys) -> None:
    with pytest.raises(SystemExit) as ei:
        main(["keygen", "--out", str(tmp_path / "a"), "--public", str(tmp_path / "b")])
    assert ei.value.code == 2
    assert "not allowed with" in capsys.readouterr().err

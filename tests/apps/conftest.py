"""Fixtures for tests/apps: real servers (PostgreSQL, Redis, OpenSSH's sshd) started from their
Debian binaries inside a network namespace the test creates, each with a temporary data
directory, and the addresses the programs under test use.

One host (`host`): a namespace whose kernel owns SERVER = 10.239.N.1 (on lo, where the kernel
servers listen).  A program switched onto the userspace stack brings its TUN up there with
--addr 10.231.N.2/24 (the kernel side of that TUN is 10.231.N.1) and reaches SERVER through
the TUN; the server then sees the stack's address, 10.231.N.2, which no kernel socket in the
namespace can have: that is how a test knows the traffic went over the stack.

Two hosts (`two_hosts`): tun.topology.TwoHosts without TUN devices (the programs bring their
own): stacks at 10.231.A.2 and 10.231.B.2, the kernels routing between them over a veth.
"""
from __future__ import annotations

import datetime
import itertools
import os
import shutil
import signal
import subprocess
import tempfile
from dataclasses import dataclass
from typing import Any, AsyncIterator, Iterator

import pytest

from tests.reaper import Procs
from tun.topology import TwoHosts

from .harness import MODES, Launch

_n = itertools.count()


def _pg_bin() -> str | None:
    for d in sorted((p for p in os.listdir("/usr/lib/postgresql") if p.isdigit()), key=int,
                    reverse=True) if os.path.isdir("/usr/lib/postgresql") else []:
        if os.path.exists(os.path.join("/usr/lib/postgresql", d, "bin", "postgres")):
            return os.path.join("/usr/lib/postgresql", d, "bin")
    return None


def need(*paths: str) -> None:
    """Skip, naming what is missing, when a server's binary is not installed."""
    for p in paths:
        if not (os.path.exists(p) if os.sep in p else shutil.which(p)):
            pytest.skip(f"{p} not installed (Debian: see .ci/run's package list)")


@pytest.fixture(params=MODES)
def mode(request: pytest.FixtureRequest) -> str:
    return request.param


@dataclass
class Host:
    ns: Any
    n: int
    server: str                     # the kernel's address the servers listen on (lo)
    stack: str                      # the address a switched program's stack takes
    kernel_tun: str                 # the kernel side of that program's TUN

    def stack_net(self) -> str:
        return f"{self.stack}/24"


@pytest.fixture
def host() -> Iterator[Host]:
    from tun.netns import NetNS
    n = (os.getpid() + next(_n)) % 200 + 20
    with NetNS() as ns:
        ns.ip("addr", "add", f"10.239.{n}.1/32", "dev", "lo")
        yield Host(ns, n, f"10.239.{n}.1", f"10.231.{n}.2", f"10.231.{n}.1")


@pytest.fixture
def two_hosts() -> Iterator[TwoHosts]:
    with TwoHosts(tuns=False) as net:
        yield net


@pytest.fixture
def client(mode: str, host: Host, tmpdir_shared: str) -> Launch:
    """How the test's client program runs on `host`: on the kernel, or switched onto a stack
    at host.stack whose routes include the kernel servers' address (host.server)."""
    if mode == "kernel":
        return Launch(mode, None, tmpdir_shared)
    return Launch(mode, host.stack_net(), tmpdir_shared, routes=[f"{host.server}/32"])


@dataclass
class Pair:
    """A server program in two_hosts' first namespace and a client in the second, both in
    the test's mode: kernel (over the veth addresses) or each on its own stack."""
    server: Launch
    client: Launch
    server_addr: str            # where the server listens
    client_addr: str            # the address the server sees the client come from
    kernel_side: str            # the server namespace kernel's address towards its server


@pytest.fixture
def pair(mode: str, two_hosts: TwoHosts, tmpdir_shared: str) -> Pair:
    net = two_hosts
    if mode == "kernel":
        k = Launch(mode, None, tmpdir_shared)
        return Pair(k, k, net.veth_addrs[0], net.veth_addrs[1], net.veth_addrs[0])
    a, b = net.stack_addrs
    return Pair(Launch(mode, f"{a}/24", tmpdir_shared),
                Launch(mode, f"{b}/24", tmpdir_shared, routes=[f"{a}/32"]),   # the other stack
                a, b, net.kernel_addrs[0])


@pytest.fixture
def tmpdir_shared() -> Iterator[str]:
    """A temporary directory other users (postgres) can enter (pytest's tmp_path is 0700
    under /tmp/pytest-of-root)."""
    d = tempfile.mkdtemp(prefix="tcpcpy-apps-")
    os.chmod(d, 0o755)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def self_signed(path_cert: str, path_key: str, cn: str) -> None:
    """A self-signed certificate (P-256) for a test server at the IP address `cn` (also its
    subjectAltName, so clients that verify can use the file as their CA)."""
    import ipaddress
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(cn))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    with open(path_cert, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(path_key, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    os.chmod(path_key, 0o600)


async def serve(procs: Procs, ns: Any, cmd: list[str], addr: str, port: int, log: str,
                what: str, timeout: float = 20.0, stop: int = signal.SIGTERM) -> AsyncIterator[None]:
    """Start a server inside `ns` (output to the file `log`), wait until it listens on
    addr:port, yield, then end it (`stop`, SIGKILL after 5 s) on the test's own loop."""
    import asyncio
    with open(log, "wb") as out:
        proc = await procs.exec(*cmd, netns=ns, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    try:
        while True:
            r = await asyncio.create_subprocess_exec(
                "ip", "netns", "exec", ns.name, "ss", "-Hltn", f"sport = :{port}",
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
            out_, _ = await r.communicate()
            if f"{addr}:{port}" in out_.decode():
                break
            if proc.returncode is not None or loop.time() > deadline:
                raise AssertionError(f"{what} is not listening on {addr}:{port} (exit "
                                     f"{proc.returncode}): {open(log, errors='replace').read()[-3000:]}")
            await asyncio.sleep(0.05)
        yield
    finally:
        if proc.returncode is None:
            proc.send_signal(stop)
            try:
                await asyncio.wait_for(proc.wait(), 5)
            except asyncio.TimeoutError:
                proc.kill()
                await proc.wait()


# --- PostgreSQL -------------------------------------------------------------------------------

@dataclass
class Postgres:
    addr: str
    port: int
    user: str
    password: str
    database: str

    def dsn(self) -> str:
        return f"postgresql://{self.user}:{self.password}@{self.addr}:{self.port}/{self.database}"


@pytest.fixture
async def postgres(host: Host, procs: Procs, tmpdir_shared: str) -> AsyncIterator[Postgres]:
    """PostgreSQL from Debian's binaries, run as the postgres user, ssl=on with a self-signed
    certificate, and only TLS connections from the stack's subnet (pg_hba `hostssl`)."""
    bin_ = _pg_bin()
    if bin_ is None:
        pytest.skip("PostgreSQL not installed (Debian: postgresql; see .ci/run)")
    need("setpriv")
    data = os.path.join(tmpdir_shared, "pg")
    os.mkdir(data, 0o700)
    shutil.chown(data, "postgres", "postgres")
    pw = os.path.join(tmpdir_shared, "pw")
    with open(pw, "w") as f:
        f.write("s3cret\n")
    os.chmod(pw, 0o644)
    as_postgres = ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups"]
    r = subprocess.run([*as_postgres, os.path.join(bin_, "initdb"),
                        "-D", data, "-U", "app", "--auth=scram-sha-256", f"--pwfile={pw}",
                        "--no-sync", "-E", "UTF8", "--locale=C"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    with open(os.path.join(data, "pg_hba.conf"), "a") as f:
        f.write("hostssl all all 10.0.0.0/8 scram-sha-256\n")     # TLS only, from the stacks
    cert, key = os.path.join(data, "server.crt"), os.path.join(data, "server.key")
    self_signed(cert, key, host.server)
    shutil.chown(cert, "postgres")
    shutil.chown(key, "postgres")
    port = 5432
    cmd = [*as_postgres, os.path.join(bin_, "postgres"), "-D", data,
           "-k", data, "-c", f"listen_addresses={host.server}", "-c", f"port={port}",
           "-c", "ssl=on", "-c", "fsync=off"]
    async for _ in serve(procs, host.ns, cmd, host.server, port,
                         os.path.join(tmpdir_shared, "postgres.log"), "postgres",
                         stop=signal.SIGINT):       # PostgreSQL's fast shutdown
        yield Postgres(host.server, port, "app", "s3cret", "postgres")


# --- Redis ------------------------------------------------------------------------------------

@dataclass
class Redis:
    addr: str
    port: int
    tls_port: int            # the same server over TLS (its certificate: cafile)
    cafile: str


@pytest.fixture
async def redis_server(host: Host, procs: Procs, tmpdir_shared: str) -> AsyncIterator[Redis]:
    need("redis-server")
    port, tls_port = 6379, 6380
    cert, key = os.path.join(tmpdir_shared, "redis.crt"), os.path.join(tmpdir_shared, "redis.key")
    self_signed(cert, key, host.server)
    cmd = ["redis-server", "--bind", host.server, "--port", str(port), "--dir", tmpdir_shared,
           "--save", "", "--appendonly", "no", "--protected-mode", "no", "--daemonize", "no",
           "--tls-port", str(tls_port), "--tls-cert-file", cert, "--tls-key-file", key,
           "--tls-ca-cert-file", cert, "--tls-auth-clients", "no"]
    async for _ in serve(procs, host.ns, cmd, host.server, port,
                         os.path.join(tmpdir_shared, "redis.log"), "redis-server"):
        yield Redis(host.server, port, tls_port, cert)


# --- OpenSSH ----------------------------------------------------------------------------------

@dataclass
class Sshd:
    addr: str
    port: int
    user: str
    key: str                 # the client's private key (OpenSSH format)
    known_hosts: str


@pytest.fixture
async def sshd(host: Host, procs: Procs, tmpdir_shared: str) -> AsyncIterator[Sshd]:
    """OpenSSH's sshd in the foreground with its own config, host key and authorized key
    (root, public key only)."""
    need("/usr/sbin/sshd", "ssh-keygen")
    d = tmpdir_shared
    for name in ("host_key", "client_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name,
                        "-f", os.path.join(d, name)], check=True, timeout=30)
    shutil.copy(os.path.join(d, "client_key.pub"), os.path.join(d, "authorized_keys"))
    port = 2222
    cfg = os.path.join(d, "sshd_config")
    with open(cfg, "w") as f:
        f.write(f"ListenAddress {host.server}:{port}\n"
                f"HostKey {d}/host_key\n"
                f"PidFile {d}/sshd.pid\n"
                f"AuthorizedKeysFile {d}/authorized_keys\n"
                "PermitRootLogin prohibit-password\n"
                "PasswordAuthentication no\nKbdInteractiveAuthentication no\n"
                "UsePAM no\nStrictModes no\nUseDNS no\n")
    host_pub = open(os.path.join(d, "host_key.pub")).read().split()
    known = os.path.join(d, "known_hosts")
    with open(known, "w") as f:
        f.write(f"[{host.server}]:{port} {host_pub[0]} {host_pub[1]}\n")
    os.makedirs("/run/sshd", mode=0o755, exist_ok=True)    # sshd's privilege-separation dir
    async for _ in serve(procs, host.ns, ["/usr/sbin/sshd", "-D", "-e", "-f", cfg], host.server,
                         port, os.path.join(d, "sshd.log"), "sshd"):
        yield Sshd(host.server, port, "root", os.path.join(d, "client_key"), known)

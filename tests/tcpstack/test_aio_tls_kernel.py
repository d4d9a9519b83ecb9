"""TLS between the stack and the Linux kernel's TCP with Python's ssl module on the kernel
side (issue 16): a kernel TLS server and a kernel TLS client, in a namespace of the test's
own behind a TUN device (tun.topology.KernelSide), on the default loop and uvloop."""
from __future__ import annotations

import asyncio
import hashlib
import ssl
import subprocess
import sys

import pytest

from tcpstack.aio.streams import Stack
from tests.tcpstack.test_aio_tls import NAME, make_cert
from tun.topology import KernelSide, wait_for_port

pytestmark = pytest.mark.tun

KERNEL_SERVER = r"""
import socket, ssl, sys
addr, port, cert, key = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER); ctx.load_cert_chain(cert, key)
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((addr, port)); s.listen(1)
c, _ = s.accept()
t = ctx.wrap_socket(c, server_side=True)
total = 0
while True:
    d = t.recv(65536)
    if not d:
        break
    total += len(d)
    t.sendall(d)
print(total, t.version(), flush=True)
"""

KERNEL_CLIENT = r"""
import hashlib, socket, ssl, sys
addr, port, cert, name = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
ctx = ssl.create_default_context(cafile=cert)
with socket.create_connection((addr, port), timeout=20) as c:
    with ctx.wrap_socket(c, server_hostname=name) as t:
        t.sendall(b"kernel says hi\n")
        got = b""
        while not got.endswith(b"\n"):
            got += t.recv(100)
        print(got.decode().strip(), t.version(), flush=True)
"""


def run_on(loop_kind: str, coro_fn):
    if loop_kind == "uvloop":
        uvloop = pytest.importorskip("uvloop")
        loop = uvloop.new_event_loop()
    else:
        loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(asyncio.wait_for(coro_fn(), 60))
    finally:
        loop.close()


@pytest.mark.parametrize("loop_kind", ["asyncio", "uvloop"])
def test_stack_tls_client_against_a_kernel_tls_server(tmp_path, procs, loop_kind):
    certfile, keyfile = make_cert(tmp_path)
    cctx = ssl.create_default_context(cafile=certfile)
    blob = hashlib.sha256(b"x").digest() * 32768            # 1 MB

    async def main():
        with KernelSide() as k:
            stack = Stack(k.link(), [k.stack_addr])
            try:
                proc = procs.popen([sys.executable, "-c", KERNEL_SERVER, k.kernel_addr,
                                    "4433", certfile, keyfile], netns=k.name,
                                   stdout=subprocess.PIPE, text=True)
                await wait_for_port(k, k.kernel_addr, 4433)
                reader, writer = await stack.open_connection(
                    k.kernel_addr, 4433, ssl=cctx, server_hostname=NAME)
                assert writer.get_extra_info("tcpcrypt_session_id") is None  # no ENO there
                assert writer.get_extra_info("ssl_object").version() in ("TLSv1.3", "TLSv1.2")
                writer.write(blob)
                assert await reader.readexactly(len(blob)) == blob
                writer.close()
                await writer.wait_closed()
                out = await asyncio.get_running_loop().run_in_executor(
                    None, proc.communicate, None, 20)
                total, version = out[0].split()
                assert int(total) == len(blob) and version.startswith("TLSv1.")
            finally:
                stack.close()
    run_on(loop_kind, main)


@pytest.mark.parametrize("loop_kind", ["asyncio", "uvloop"])
def test_kernel_tls_client_against_a_stack_tls_server(tmp_path, procs, loop_kind):
    certfile, keyfile = make_cert(tmp_path)
    sctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    sctx.load_cert_chain(certfile, keyfile)

    async def main():
        with KernelSide() as k:
            stack = Stack(k.link(), [k.stack_addr])
            try:
                async def handle(reader, writer):
                    line = await reader.readline()
                    assert writer.get_extra_info("ssl_object").server_side
                    writer.write(b"stack echoes: " + line)
                    await writer.drain()
                    writer.close()
                server = await stack.start_server(handle, k.stack_addr, 8443, ssl=sctx)
                r = await k.run(sys.executable, "-c", KERNEL_CLIENT, k.stack_addr, "8443",
                                certfile, NAME, timeout=30)
                assert r.returncode == 0, r.stderr
                assert r.stdout.startswith("stack echoes: kernel says hi TLSv1."), r.stdout
                server.close()
                await server.wait_closed()
            finally:
                stack.close()
    run_on(loop_kind, main)

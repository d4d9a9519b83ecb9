"""tcpstack: a userspace TCP/IP stack (RFC 9293 and extensions), sans-IO core, asyncio edge."""

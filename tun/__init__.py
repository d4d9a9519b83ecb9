"""tun: Linux TUN devices (python-pytun) and network-namespace helpers for the stack."""

"""tcpcrypt: TCP-ENO (RFC 8547) negotiation and tcpcrypt (RFC 8548) as sans-IO transforms."""

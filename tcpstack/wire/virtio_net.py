"""struct virtio_net_hdr, the per-frame header of a TUN device opened with IFF_VNET_HDR: its
layout and constants, the one place they are written down.  tcpstack.wire.tcp builds the
header of a TSO frame with them; tun.vnet parses headers, completes partial checksums and
splits GSO super-packets.

Layout (include/uapi/linux/virtio_net.h, VIRTIO 1.x spec 5.1.6 "Device Operation"):

    u8  flags        VIRTIO_NET_HDR_F_NEEDS_CSUM | _DATA_VALID | _RSC_INFO
    u8  gso_type     VIRTIO_NET_HDR_GSO_NONE/TCPV4/UDP/TCPV6/UDP_L4, | _ECN
    u16 hdr_len      length of the headers (IP + L4, no Ethernet on TUN) to copy per segment
    u16 gso_size     payload bytes per segment (the MSS for TCP)
    u16 csum_start   offset where checksumming starts (the L4 header)
    u16 csum_offset  offset of the checksum field from csum_start (16 TCP, 6 UDP)
    u16 num_buffers  only in the 12-byte variant (TUNSETVNETHDRSZ 12, VIRTIO_NET_F_MRG_RXBUF)

The tun driver uses the host's native byte order for these fields (legacy virtio, unless
TUNSETVNETLE/BE), so they are packed in native order here.

A frame the stack builds for TSO starts with flags = VIRTIO_NET_HDR_F_NEEDS_CSUM (1) where a
plain IP packet has its version nibble (4 or 6) in the high half of the first byte: that first
byte tells the two apart.
"""
from __future__ import annotations

import struct

VNET_HDR_LEN = 10
VNET_HDR_MRG_LEN = 12

VIRTIO_NET_HDR_F_NEEDS_CSUM = 1
VIRTIO_NET_HDR_F_DATA_VALID = 2
VIRTIO_NET_HDR_F_RSC_INFO = 4

VIRTIO_NET_HDR_GSO_NONE = 0
VIRTIO_NET_HDR_GSO_TCPV4 = 1
VIRTIO_NET_HDR_GSO_UDP = 3
VIRTIO_NET_HDR_GSO_TCPV6 = 4
VIRTIO_NET_HDR_GSO_UDP_L4 = 5
VIRTIO_NET_HDR_GSO_ECN = 0x80

HDR = struct.Struct("=BBHHHH")          # the 10-byte header
HDR_MRG = struct.Struct("=BBHHHHH")     # the 12-byte header (num_buffers)

"""The SSH wire format's length-prefixed strings (RFC 4251 §5), for reading public keys.

Only parsing of public parts happens here: which key type a file holds, and the public
key an OpenSSH private key file carries in the clear. rage does the cryptography.
"""

from __future__ import annotations

import struct


def read_string(data: bytes, offset: int) -> tuple[bytes, int]:
    """The string at ``offset`` and the offset after it; ValueError when it overruns."""
    (length,) = struct.unpack_from(">I", data, offset)
    start = offset + 4
    end = start + length
    if end > len(data):
        raise ValueError("a length field points past the end of the key data")
    return data[start:end], end


def read_uint32(data: bytes, offset: int) -> tuple[int, int]:
    (value,) = struct.unpack_from(">I", data, offset)
    return value, offset + 4

"""Recipients (public keys): checked, normalized, fingerprinted, handed to rage.

Two kinds are accepted, as SPEC §6.4 says: age's own X25519 recipients (``age1…``,
bech32) and OpenSSH ``ssh-ed25519`` public keys. Anything else is refused with a
reason: ssh-rsa and other SSH key types, age plugin recipients (``age1yubikey1…``),
and secret keys pasted where a public key belongs. The value itself is never echoed:
the caller prefixes the reason with the key path, and a mistaken secret must not end
up in an error message.

The checks here exist to say *why* a recipient is wrong; rage's own parser is the
authority that accepts it (``parse_recipient``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import struct
from typing import TypeAlias

import pyrage

from .wire import read_string

X25519_PREFIX = "age1"
SSH_ED25519 = "ssh-ed25519"
#: SSH key types someone may reasonably try, named in the refusal; any other type is not echoed.
_OTHER_SSH_TYPES = frozenset({
    "ssh-rsa", "ssh-dss", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com", "sk-ecdsa-sha2-nistp256@openssh.com",
})
_BECH32_CHARSET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
_BECH32_GENERATOR = (0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3)
_X25519_KEY_SIZE = 32

Recipient: TypeAlias = pyrage.x25519.Recipient | pyrage.ssh.Recipient


def check_recipient(text: str) -> str:
    """The normalized recipient; ValueError with a short reason for anything else.

    Normalized: an X25519 recipient in lower case, an SSH key as ``ssh-ed25519 BASE64``
    (its comment dropped: the key alone is the recipient).
    """
    value = text.strip()
    if not value:
        raise ValueError("is empty")
    upper = value.upper()
    if upper.startswith(("AGE-SECRET-KEY-", "AGE-PLUGIN-")) or "PRIVATE KEY" in upper:
        raise ValueError("is a secret key (an identity), not a recipient: give its public key "
                         "instead (age-keygen -y FILE, or the .pub file of an SSH key)")
    if value[:4].lower() == X25519_PREFIX:
        return _check_x25519(value)
    kind = value.split(maxsplit=1)[0]
    if kind == SSH_ED25519:
        return _check_ssh_ed25519(value)
    if kind in _OTHER_SSH_TYPES:
        raise ValueError(f"is an {kind} key: only ssh-ed25519 SSH keys are supported "
                         "(or an age key from age-keygen)")
    raise ValueError("is not an age recipient (age1…) or an ssh-ed25519 public key")


def fingerprint(recipient: str) -> str:
    """A short, stable label for a recipient, checkable with the stock tools.

    ``age1abcdefgh...uvwxyz12`` for an X25519 recipient (compare with ``age-keygen -y``),
    ``ssh-ed25519 SHA256:…`` for an SSH key (what ``ssh-keygen -lf KEY.pub`` prints).
    """
    value = check_recipient(recipient)
    if value.startswith(X25519_PREFIX):
        return f"{value[:12]}...{value[-8:]}"
    blob = base64.b64decode(value.split()[1])
    digest = base64.b64encode(hashlib.sha256(blob).digest()).decode("ascii").rstrip("=")
    return f"{SSH_ED25519} SHA256:{digest}"


def parse_recipient(recipient: str) -> Recipient:
    """The rage recipient object for a recipient check_recipient accepts."""
    value = check_recipient(recipient)
    try:
        if value.startswith(X25519_PREFIX):
            return pyrage.x25519.Recipient.from_str(value)
        return pyrage.ssh.Recipient.from_str(value)
    except pyrage.RecipientError:
        # Our checks passed, rage disagrees: rage is the authority.
        raise ValueError("is not a recipient the age library accepts") from None


def _check_x25519(value: str) -> str:
    if value != value.lower() and value != value.upper():
        raise ValueError("mixes upper and lower case, which bech32 forbids")
    value = value.lower()
    human, _, data = value.rpartition("1")
    if human != "age":
        if human.startswith(X25519_PREFIX):
            raise ValueError("is an age plugin recipient (age1<plugin>1…): plugins are not "
                             "supported; use an X25519 key from age-keygen")
        raise ValueError("is not an age X25519 recipient (age1…)")
    if any(character not in _BECH32_CHARSET for character in data):
        raise ValueError("contains characters that bech32 does not use (a copying error?)")
    values = [_BECH32_CHARSET.index(character) for character in data]
    if len(values) < 6:
        raise ValueError("is too short to be an age recipient")
    if _bech32_polymod(_expand(human) + values) != 1:
        raise ValueError("has a wrong bech32 checksum (a typing or copying error?)")
    key = _five_to_eight(values[:-6])
    if key is None or len(key) != _X25519_KEY_SIZE:
        raise ValueError("does not hold a 32-byte X25519 public key")
    try:
        return str(pyrage.x25519.Recipient.from_str(value))
    except pyrage.RecipientError:
        raise ValueError("is not an X25519 recipient the age library accepts") from None


def _check_ssh_ed25519(value: str) -> str:
    fields = value.split()
    if len(fields) < 2:
        raise ValueError("has no key after ssh-ed25519")
    try:
        blob = base64.b64decode(fields[1], validate=True)
        kind, offset = read_string(blob, 0)
        key, offset = read_string(blob, offset)
    except (binascii.Error, ValueError, struct.error):
        raise ValueError("is not a well-formed ssh-ed25519 key (bad base64 or key data)") from None
    if kind != SSH_ED25519.encode() or len(key) != 32 or offset != len(blob):
        raise ValueError("is not a well-formed ssh-ed25519 key (its key data is of another kind)")
    normalized = f"{SSH_ED25519} {base64.b64encode(blob).decode('ascii')}"
    try:
        pyrage.ssh.Recipient.from_str(normalized)
    except pyrage.RecipientError:
        raise ValueError("is not an ssh-ed25519 key the age library accepts") from None
    return normalized


def _bech32_polymod(values: list[int]) -> int:
    """BIP-173's checksum: an error-detecting code over the 5-bit groups, not cryptography."""
    check = 1
    for value in values:
        top = check >> 25
        check = (check & 0x1FFFFFF) << 5 ^ value
        for index, generator in enumerate(_BECH32_GENERATOR):
            if (top >> index) & 1:
                check ^= generator
    return check


def _expand(human: str) -> list[int]:
    return [ord(c) >> 5 for c in human] + [0] + [ord(c) & 31 for c in human]


def _five_to_eight(values: list[int]) -> bytes | None:
    """Regroup 5-bit values into bytes; None when the padding is not zero bits."""
    accumulator = 0
    bits = 0
    out = bytearray()
    for value in values:
        accumulator = (accumulator << 5) | value
        bits += 5
        while bits >= 8:
            bits -= 8
            out.append((accumulator >> bits) & 0xFF)
    if bits >= 5 or (accumulator & ((1 << bits) - 1)):
        return None
    return bytes(out)

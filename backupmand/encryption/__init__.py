"""age encryption (SPEC §6.4): hosts that can write backups and cannot read them.

The database host holds only recipients (public keys); the identity (the private
key) lives where restores and drills run. Files are in the age v1 format, written
and read by rage (the Rust implementation of age) through its Python binding
pyrage, in process; the stock ``age -d -i IDENTITY`` decrypts them, and files
written by ``age -r RECIPIENT`` decrypt here.

    recipients.py  check_recipient, fingerprint, parse_recipient: public keys
    identities.py  load_identities -> Identities: private keys, read at use, 0600 only
    streams.py     Encryptor, Decryptor, decrypt_stream, is_age: the streams
    bridge.py      pyrage's file-object streaming turned into block-by-block calls
    wire.py        SSH's length-prefixed strings, to read public key data

Why pyrage, and not the stock ``age`` run as a subprocess (measured on this kind of
machine, 2 cores; see the commit that added it): it costs about half the CPU per
byte (no pipe copies in and out of a child), needs no process to supervise, and its
errors arrive as exceptions. It holds the GIL while it encrypts, but returns to
Python every 8 KiB, so the event loop stays responsive.
"""

from __future__ import annotations

from .identities import Identities, load_identities
from .recipients import check_recipient, fingerprint
from .streams import AGE_HEADER, Decryptor, Encryptor, decrypt_stream, is_age

__all__ = [
    "AGE_HEADER",
    "Decryptor",
    "Encryptor",
    "Identities",
    "check_recipient",
    "decrypt_stream",
    "fingerprint",
    "is_age",
    "load_identities",
]

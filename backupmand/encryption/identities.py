"""Identities (private keys): read from their file at use, checked, never shown.

An identity file is what the stock ``age -d -i FILE`` takes: either age identities
(``AGE-SECRET-KEY-1…`` lines, with ``#`` comments and blank lines, several per file,
as ``age-keygen`` writes them) or one unencrypted OpenSSH ``ssh-ed25519`` private key.
The file must be a regular file that only its owner can access (``chmod 600``), as
OpenSSH demands of private keys: a key that others could read is as good as
published, and backups it decrypts are no longer private.

Nothing read here is logged, put in an error message or passed to a subprocess; the
caller gets the secret strings from ``Identities.secrets()`` to redact them should
they ever appear in a tool's output.
"""

from __future__ import annotations

import base64
import binascii
import os
import stat
import struct
from pathlib import Path
from typing import TypeAlias

import pyrage

from ..errors import DecryptionError
from .recipients import SSH_ED25519
from .wire import read_string, read_uint32

#: An identity file is a few hundred bytes; anything this large is the wrong file.
MAX_SIZE = 64 * 1024
_X25519_PREFIX = "AGE-SECRET-KEY-1"
_OPENSSH_BEGIN = "-----BEGIN OPENSSH PRIVATE KEY-----"
_OPENSSH_END = "-----END OPENSSH PRIVATE KEY-----"
_OPENSSH_MAGIC = b"openssh-key-v1\x00"

Identity: TypeAlias = pyrage.x25519.Identity | pyrage.ssh.Identity


class Identities:
    """The identities of one file, with the public recipient of each (safe to show)."""

    __slots__ = ("_keys", "_secrets", "path", "public")

    def __init__(self, path: Path, keys: tuple[Identity, ...], public: tuple[str, ...],
                 secrets: tuple[str, ...]) -> None:
        self.path = path
        self._keys = keys
        #: The recipient (public key) of each identity, in the file's order.
        self.public = public
        self._secrets = secrets

    def __len__(self) -> int:
        return len(self._keys)

    def __repr__(self) -> str:
        return f"<Identities: {len(self._keys)} from {self.path}>"

    def keys(self) -> tuple[Identity, ...]:
        """The rage identity objects (never str() them: that prints the secret key)."""
        return self._keys

    def secrets(self) -> tuple[str, ...]:
        """Every secret string of the file, for redaction."""
        return self._secrets


def load_identities(path: Path) -> Identities:
    """Read and check the identity file at ``path`` (blocking: run it in a thread).

    DecryptionError, in one sentence naming the file, when it is missing, unreadable,
    accessible to group or others, or holds no identity backupmand can use.
    """
    path = path.expanduser()
    data = _read_private_file(path)
    if data.lstrip().startswith((b"age-encryption.org/", b"-----BEGIN AGE ENCRYPTED FILE-----")):
        raise DecryptionError(f"identity file {path} is itself age-encrypted (protected by a "
                              "passphrase), which backupmand cannot ask for: keep an "
                              "unencrypted identity file, mode 0600, where restores run")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise DecryptionError(f"identity file {path} is not a text file: give an age identity "
                              "file (age-keygen) or an ssh-ed25519 private key") from None
    if _OPENSSH_BEGIN in text:
        return _openssh_identity(path, text)
    if text.lstrip().startswith("-----BEGIN "):
        raise DecryptionError(f"identity file {path} holds a PEM key: only age identities and "
                              "ssh-ed25519 keys in OpenSSH format are supported")
    return _age_identities(path, text)


def _read_private_file(path: Path) -> bytes:
    try:
        # O_NONBLOCK: a FIFO given by mistake must not hang the open; it is refused below.
        descriptor = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK)
    except FileNotFoundError:
        raise DecryptionError(f"identity file {path} does not exist") from None
    except PermissionError:
        raise DecryptionError(f"cannot read identity file {path}: permission denied") from None
    except OSError as error:
        raise DecryptionError(f"cannot read identity file {path}: {error.strerror}") from None
    try:
        # fstat of the opened file: the checks apply to what is read, not to a name.
        facts = os.fstat(descriptor)
        if not stat.S_ISREG(facts.st_mode):
            raise DecryptionError(f"identity file {path} is not a regular file")
        mode = stat.S_IMODE(facts.st_mode)
        if mode & 0o077:
            raise DecryptionError(
                f"identity file {path} is accessible to group or others (mode {mode:04o}), "
                f"so its keys must be considered exposed: run chmod 600 {path}")
        os.set_blocking(descriptor, True)
        with open(descriptor, "rb", closefd=False) as handle:
            data = handle.read(MAX_SIZE + 1)
    finally:
        os.close(descriptor)
    if len(data) > MAX_SIZE:
        raise DecryptionError(f"identity file {path} is too large to be an identity file")
    return data


def _age_identities(path: Path, text: str) -> Identities:
    keys: list[Identity] = []
    public: list[str] = []
    secrets: list[str] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        secrets.append(line)  # before any check: a near-miss secret is still secret
        if line.upper().startswith("AGE-PLUGIN-"):
            raise DecryptionError(f"line {number} of identity file {path} is an age plugin "
                                  "identity: plugins are not supported")
        if not line.upper().startswith(_X25519_PREFIX):
            raise DecryptionError(f"line {number} of identity file {path} is not an age "
                                  "identity (AGE-SECRET-KEY-1…)")
        try:
            identity = pyrage.x25519.Identity.from_str(line)
        except pyrage.IdentityError:
            raise DecryptionError(f"line {number} of identity file {path} is not a valid age "
                                  "identity (a copying error?)") from None
        keys.append(identity)
        public.append(str(identity.to_public()))
    if not keys:
        raise DecryptionError(f"identity file {path} holds no identities")
    return Identities(path, tuple(keys), tuple(public), tuple(secrets))


def _openssh_identity(path: Path, text: str) -> Identities:
    body = text.split(_OPENSSH_BEGIN, 1)[1].split(_OPENSSH_END, 1)[0]
    lines = tuple(line.strip() for line in body.splitlines() if line.strip())
    secrets = (*lines, "".join(lines))
    try:
        blob = base64.b64decode("".join(lines), validate=True)
        if not blob.startswith(_OPENSSH_MAGIC):
            raise ValueError("not an openssh-key-v1 file")
        offset = len(_OPENSSH_MAGIC)
        cipher, offset = read_string(blob, offset)
        _kdf, offset = read_string(blob, offset)
        _kdf_options, offset = read_string(blob, offset)
        count, offset = read_uint32(blob, offset)
        public_blob, offset = read_string(blob, offset)
        kind, _ = read_string(public_blob, 0)
    except (binascii.Error, ValueError, struct.error):
        raise DecryptionError(f"identity file {path} is not a well-formed OpenSSH private key") from None
    if kind != SSH_ED25519.encode():
        name = kind.decode("ascii", "replace") if kind.isascii() and len(kind) < 64 else "another"
        raise DecryptionError(f"identity file {path} holds an {name} key: only ssh-ed25519 SSH "
                              "keys are supported (or an age identity from age-keygen)")
    if cipher != b"none":
        raise DecryptionError(f"identity file {path} is a passphrase-protected SSH key, which "
                              "backupmand cannot ask for: use an unencrypted key (mode 0600) "
                              "or an age identity where restores run")
    if count != 1:
        raise DecryptionError(f"identity file {path} holds {count} SSH keys: give one per file")
    try:
        identity = pyrage.ssh.Identity.from_buffer(text.encode("utf-8"))
    except pyrage.IdentityError:
        raise DecryptionError(f"identity file {path} is an SSH key the age library "
                              "cannot use") from None
    recipient = f"{SSH_ED25519} {base64.b64encode(public_blob).decode('ascii')}"
    return Identities(path, (identity,), (recipient,), secrets)

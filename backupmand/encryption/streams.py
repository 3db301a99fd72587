"""The age streams: Encryptor for backups; Decryptor and decrypt_stream for restores.

Both are incremental, constant-memory and meant for worker threads, in the shape of
``compression.Compressor``: ``encrypt(block)`` / ``decrypt(block)`` return the bytes
ready so far, ``flush()`` the last ones (the object is finished after it), and
``close()`` abandons the stream midway, ending its thread. Every failure is an
exception (EncryptionError, DecryptionError); no output ever comes from anywhere but
rage, so a failure can never let plaintext through in place of ciphertext.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import weakref
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from types import TracebackType

import pyrage

from ..errors import DecryptionError, EncryptionError
from .bridge import Bridge, StreamFailure
from .identities import Identities
from .recipients import Recipient, fingerprint, parse_recipient

AGE_HEADER = b"age-encryption.org/v1\n"
#: What the stock ``age --armor`` writes; rage reads it too.
ARMOR_BEGIN = b"-----BEGIN AGE ENCRYPTED FILE-----"
#: decrypt_stream gathers small pieces (a download's) into blocks of this size.
BLOCK_SIZE = 1024 * 1024
#: How much of a file's beginning a Decryptor keeps to explain a failure.
_HEAD_SIZE = 16 * 1024


def is_age(head: bytes) -> bool:
    """True when ``head`` (a stored copy's first bytes) begins with the age header."""
    return head.startswith(AGE_HEADER)


class Encryptor:
    """One age file for ``recipients``, produced block by block.

    ``encrypt`` hands its block to the rage thread and returns at once with the
    output of earlier blocks, so rage seals block N while the caller compresses block
    N + 1 (it waits only when rage has not yet read the previous block). The output
    of all calls, in order, ending with ``flush()``, is the age file.
    """

    def __init__(self, recipients: Sequence[str]) -> None:
        if isinstance(recipients, str):
            raise TypeError("recipients is a sequence of recipients, not one string")
        parsed: list[Recipient] = []
        for number, recipient in enumerate(recipients, start=1):
            try:
                parsed.append(parse_recipient(recipient))
            except ValueError as error:
                raise EncryptionError(f"encryption recipient {number} {error}") from None
        if not parsed:
            raise EncryptionError("encryption needs at least one recipient")

        def encrypt_all(reader: io.BufferedIOBase, writer: io.BufferedIOBase) -> None:
            pyrage.encrypt_io(reader, writer, parsed)

        self._bridge = Bridge(encrypt_all, "age-encrypt")
        # Dropped without close(): the thread still ends (without being waited for).
        self._finalizer = weakref.finalize(self, self._bridge.abandon, wait=False)

    def encrypt(self, data: bytes) -> bytes:
        try:
            return self._bridge.feed(bytes(data))
        except StreamFailure as failure:
            raise EncryptionError(f"age encryption failed: {failure}") from None

    def flush(self) -> bytes:
        try:
            return self._bridge.finish()
        except StreamFailure as failure:
            raise EncryptionError(f"age encryption failed: {failure}") from None
        finally:
            self._finalizer.detach()

    def close(self) -> None:
        """Abandon the file (if unfinished) and wait for the rage thread to end."""
        self._finalizer.detach()
        self._bridge.abandon()

    def __enter__(self) -> Encryptor:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()


class Decryptor:
    """Decrypts one age file block by block with ``identities``.

    ``decrypt(block)`` returns the plaintext of every chunk that block completed, each
    authenticated by age's STREAM before it is returned; an error (a wrong identity,
    a damaged chunk) is raised by the call whose bytes revealed it, and a wrong
    identity is found in the header, before any plaintext. ``flush()`` raises when the
    file ends early. ``recipients`` (the manifest's) only serve to say, when no
    identity matches, whom the file is for.
    """

    def __init__(self, identities: Identities, *, recipients: Sequence[str] = ()) -> None:
        if isinstance(recipients, str):
            raise TypeError("recipients is a sequence of recipients, not one string")
        self._identities = identities
        self._recipients = tuple(recipients)
        self._head = bytearray()
        keys = list(identities.keys())

        def decrypt_all(reader: io.BufferedIOBase, writer: io.BufferedIOBase) -> None:
            pyrage.decrypt_io(reader, writer, keys)

        self._bridge = Bridge(decrypt_all, "age-decrypt")
        self._finalizer = weakref.finalize(self, self._bridge.abandon, wait=False)

    def decrypt(self, data: bytes) -> bytes:
        if len(self._head) < _HEAD_SIZE:
            self._head += data[: _HEAD_SIZE - len(self._head)]
        try:
            return self._bridge.feed(bytes(data), settle=True)
        except StreamFailure as failure:
            raise DecryptionError(self._explain(failure.cause)) from None

    def flush(self) -> bytes:
        try:
            return self._bridge.finish()
        except StreamFailure as failure:
            raise DecryptionError(self._explain(failure.cause)) from None
        finally:
            self._finalizer.detach()

    def close(self) -> None:
        self._finalizer.detach()
        self._bridge.abandon()

    def __enter__(self) -> Decryptor:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()

    def _explain(self, cause: BaseException) -> str:
        """One sentence for rage's error (its messages name no secrets)."""
        head = bytes(self._head)
        message = str(cause)
        if not head:
            return "the file to decrypt is empty"
        if not _may_begin_age(head):
            return "this backup is not an age-encrypted file (it does not begin with the age header)"
        if "No matching keys" in message:
            return self._no_match()
        if "truncated" in message or "fill whole buffer" in message or "Incomplete" in message:
            return "the age file is truncated: it ends before its last chunk"
        if "Header MAC" in message:
            return "the age file's header is damaged or was altered (its MAC does not match)"
        if "header" in message.lower() or "format" in message:
            return "the age file's header is damaged or was altered (it does not parse)"
        if "decryption error" in message:
            return ("the age file is damaged, altered or truncated: a chunk failed "
                    "authentication")
        return f"the age file cannot be decrypted: {message}"

    def _no_match(self) -> str:
        path = self._identities.path
        ours = ", ".join(_label(recipient) for recipient in self._identities.public)
        if self._recipients:
            theirs = "it is encrypted to " + ", ".join(_label(r) for r in self._recipients)
        else:
            theirs = "its header names " + _stanza_summary(bytes(self._head))
        return f"no identity in {path} can decrypt this backup: {theirs}; {path} holds {ours}"


async def decrypt_stream(
    chunks: AsyncIterator[bytes], identities: Identities, *, recipients: Sequence[str] = (),
) -> AsyncIterator[bytes]:
    """The plaintext of the age file arriving as ``chunks``, decrypted in a worker thread.

    Small pieces are gathered into 1 MiB blocks before each hop to the thread. Raises
    DecryptionError (see Decryptor) where the stream reveals the problem; closing the
    generator early ends the decrypting thread.
    """
    decryptor = Decryptor(identities, recipients=recipients)
    try:
        pending = bytearray()
        async for chunk in chunks:
            pending += chunk
            if len(pending) >= BLOCK_SIZE:
                block = bytes(pending)
                pending.clear()
                if plaintext := await asyncio.to_thread(decryptor.decrypt, block):
                    yield plaintext
        if pending and (plaintext := await asyncio.to_thread(decryptor.decrypt, bytes(pending))):
            yield plaintext
        if plaintext := await asyncio.to_thread(decryptor.flush):
            yield plaintext
    finally:
        await asyncio.to_thread(decryptor.close)
        with contextlib.suppress(Exception):
            await chunks.aclose()  # type: ignore[attr-defined]


def _may_begin_age(head: bytes) -> bool:
    """Whether ``head`` is (the beginning of) a binary or armored age file."""
    return any(head[: len(prefix)] == prefix[: len(head)] for prefix in (AGE_HEADER, ARMOR_BEGIN))


def _label(recipient: str) -> str:
    try:
        return fingerprint(recipient)
    except ValueError:
        return "an unrecognized recipient"


def _stanza_summary(head: bytes) -> str:
    """What the header says about the recipients: their kinds, never who (age hides that)."""
    kinds: Counter[str] = Counter()
    for line in head.split(b"\n")[1:]:
        if line.startswith(b"---"):
            break
        if line.startswith(b"-> "):
            fields = line[3:].split()
            kind = fields[0].decode("ascii", "replace") if fields else "?"
            if not kind.endswith("-grease"):  # rage's decoy stanzas
                kinds[kind] += 1
    if not kinds:
        return "no recipient backupmand can read"
    names = {"X25519": "X25519 recipient", "ssh-ed25519": "ssh-ed25519 key",
             "ssh-rsa": "ssh-rsa key", "scrypt": "passphrase"}
    parts = []
    for kind, count in kinds.items():
        name = names.get(kind, "recipient of another kind")
        parts.append(f"{count} {name}{'s' if count > 1 else ''}")
    return " and ".join(parts)

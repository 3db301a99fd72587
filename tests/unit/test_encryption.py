"""age encryption in process: recipients, identity files, the streams and their failures.

The stock ``age`` and ``ssh-keygen`` tools are exercised in
tests/integration/test_age_interop.py; here every key comes from rage itself.
"""

from __future__ import annotations

import asyncio
import gc
import os
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pyrage
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backupmand.encryption import (
    AGE_HEADER,
    Decryptor,
    Encryptor,
    Identities,
    check_recipient,
    decrypt_stream,
    fingerprint,
    is_age,
    load_identities,
)
from backupmand.encryption.bridge import Bridge, StreamFailure
from backupmand.errors import DecryptionError, DumpError, EncryptionError, RestoreError

#: age's STREAM seals plaintext in chunks of this size.
CHUNK = 64 * 1024


def new_key() -> tuple[str, str]:
    """(identity, recipient) of a fresh X25519 key."""
    identity = pyrage.x25519.Identity.generate()
    return str(identity), str(identity.to_public())


def identity_file(path: Path, *secrets: str, mode: int = 0o600) -> Path:
    lines = []
    for secret in secrets:
        public = pyrage.x25519.Identity.from_str(secret).to_public()
        lines += ["# created: 2026-12-01T10:00:00Z", f"# public key: {public}", secret, ""]
    path.write_text("\n".join(lines))
    path.chmod(mode)
    return path


def encrypt_all(recipients: list[str], blocks: list[bytes]) -> bytes:
    encryptor = Encryptor(recipients)
    return b"".join(encryptor.encrypt(block) for block in blocks) + encryptor.flush()


def decrypt_all(identities: Identities, data: bytes, piece: int = 100_003, **kwargs: object) -> bytes:
    decryptor = Decryptor(identities, **kwargs)  # type: ignore[arg-type]
    try:
        out = b"".join(decryptor.decrypt(data[i:i + piece]) for i in range(0, len(data), piece))
        return out + decryptor.flush()
    finally:
        decryptor.close()


def age_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("age-")]


def native_thread_count() -> int:
    return len(os.listdir("/proc/self/task"))


@pytest.fixture
def key(tmp_path: Path) -> tuple[Identities, str]:
    secret, recipient = new_key()
    return load_identities(identity_file(tmp_path / "identity.txt", secret)), recipient


@pytest.fixture(autouse=True)
def _no_thread_left_behind() -> Iterator[None]:
    yield
    gc.collect()
    assert not age_threads(), "an age thread outlived its test"


# ---------------------------------------------------------------------------- recipients


RECIPIENT = "age19un7mkm7nzf373u5lx80dhrshxg26jlkzd4crgr3szdz5ctfhs2ssy3fgx"


def test_an_age_recipient_is_normalized_to_lower_case():
    assert check_recipient(RECIPIENT) == RECIPIENT
    assert check_recipient(f"  {RECIPIENT.upper()}\n") == RECIPIENT


def test_recipients_generated_by_rage_all_pass():
    for _ in range(50):
        _, recipient = new_key()
        assert check_recipient(recipient) == recipient


@pytest.mark.parametrize(("text", "reason"), [
    (RECIPIENT[:-1] + ("q" if RECIPIENT[-1] != "q" else "p"), "checksum"),
    (RECIPIENT[:20] + RECIPIENT[21:], "checksum"),  # one character lost
    (RECIPIENT[:-1], "checksum"),
    ("age1", "too short"),
    (RECIPIENT[:12] + RECIPIENT[12].upper() + RECIPIENT[13:], "mixes upper and lower case"),
    (RECIPIENT[:10] + "b" + RECIPIENT[11:], "bech32 does not use"),  # b, i, o, 1: never bech32
    ("bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq", "is not an age recipient"),
    ("agf1" + RECIPIENT[4:], "is not an age recipient"),
    ("age1yubikey1qwt50d05nh5vutpdzmlg5wn80xq5negm4uj9ghv0snvdd3yysf5yw3rhl3t", "plugin"),
    ("", "is empty"),
    ("   ", "is empty"),
    ("hello world", "is not an age recipient"),
    ("ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQ", "ssh-rsa key: only ssh-ed25519"),
    ("ecdsa-sha2-nistp256 AAAAE2VjZHNh", "ecdsa-sha2-nistp256 key: only ssh-ed25519"),
    ("ssh-ed25519", "has no key"),
    ("ssh-ed25519 not*base64", "not a well-formed ssh-ed25519 key"),
    ("ssh-ed25519 AAAAB3NzaC1yc2EAAAADAQABAAABAQ==", "not a well-formed ssh-ed25519 key"),
])
def test_malformed_recipients_are_refused_with_a_reason(text, reason):
    with pytest.raises(ValueError, match=reason) as caught:
        check_recipient(text)
    if len(text.strip()) > 12:  # longer than a key type name
        assert text.strip() not in str(caught.value), "the value must never be echoed"


def test_a_secret_key_given_as_recipient_is_refused_without_being_echoed():
    secret, _ = new_key()
    for text in (secret, secret.lower(), "AGE-PLUGIN-YUBIKEY-1QQQQQ",
                 "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjE="):
        with pytest.raises(ValueError, match="is a secret key") as caught:
            check_recipient(text)
        assert text not in str(caught.value)
        assert text.split("-")[-1] not in str(caught.value)


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=4, max_value=len(RECIPIENT) - 1),
       st.sampled_from("qpzry9x8gf2tvdw0s3jn54khce6mua7l"))
def test_any_one_character_substitution_is_caught(position, character):
    """bech32 detects every single-character error: none of them is another valid key."""
    if RECIPIENT[position] == character:
        return
    changed = RECIPIENT[:position] + character + RECIPIENT[position + 1:]
    with pytest.raises(ValueError, match="checksum"):
        check_recipient(changed)
    with pytest.raises(pyrage.RecipientError):
        pyrage.x25519.Recipient.from_str(changed)  # rage agrees


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=120))
def test_arbitrary_text_is_either_refused_with_value_error_or_a_real_recipient(text):
    try:
        normalized = check_recipient(text)
    except ValueError:
        return
    if normalized.startswith("age1"):
        pyrage.x25519.Recipient.from_str(normalized)
    else:
        pyrage.ssh.Recipient.from_str(normalized)


def test_fingerprints_are_short_and_stable():
    assert fingerprint(RECIPIENT) == "age19un7mkm7...2ssy3fgx"
    assert fingerprint(RECIPIENT.upper()) == fingerprint(RECIPIENT)
    _, other = new_key()
    assert fingerprint(other) != fingerprint(RECIPIENT)
    with pytest.raises(ValueError):
        fingerprint("nonsense")


# ---------------------------------------------------------------------------- identities


def test_an_identity_file_with_comments_and_several_keys(tmp_path):
    (first, first_public), (second, second_public) = new_key(), new_key()
    path = identity_file(tmp_path / "keys.txt", first, second)
    identities = load_identities(path)
    assert len(identities) == 2
    assert identities.public == (first_public, second_public)
    assert set(identities.secrets()) >= {first, second}
    assert first not in repr(identities) and second not in repr(identities)
    # either key decrypts what was encrypted to it
    for recipient in (first_public, second_public):
        assert decrypt_all(identities, encrypt_all([recipient], [b"row 1\n"])) == b"row 1\n"


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o620, 0o700 | 0o010])
def test_an_identity_file_others_can_access_is_refused(tmp_path, mode):
    secret, _ = new_key()
    path = identity_file(tmp_path / "identity.txt", secret, mode=mode)
    with pytest.raises(DecryptionError, match=rf"mode {mode:04o}.*chmod 600 {path}") as caught:
        load_identities(path)
    assert secret not in str(caught.value)


def test_an_owner_only_identity_file_is_accepted_read_only_too(tmp_path):
    secret, _ = new_key()
    assert len(load_identities(identity_file(tmp_path / "identity.txt", secret, mode=0o400))) == 1


def test_identity_file_problems_are_one_clear_sentence(tmp_path):
    with pytest.raises(DecryptionError, match="does not exist"):
        load_identities(tmp_path / "missing.txt")
    folder = tmp_path / "folder"
    folder.mkdir(mode=0o700)
    with pytest.raises(DecryptionError, match="not a regular file"):
        load_identities(folder)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo, 0o600)
    with pytest.raises(DecryptionError, match="not a regular file"):
        load_identities(fifo)  # refused at once, not waited on
    empty = tmp_path / "empty.txt"
    empty.write_text("# only a comment\n\n")
    empty.chmod(0o600)
    with pytest.raises(DecryptionError, match="holds no identities"):
        load_identities(empty)
    binary = tmp_path / "binary"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    binary.chmod(0o600)
    with pytest.raises(DecryptionError, match="not a text file"):
        load_identities(binary)
    huge = tmp_path / "huge"
    huge.write_text("#" * 100_000)
    huge.chmod(0o600)
    with pytest.raises(DecryptionError, match="too large"):
        load_identities(huge)


def test_a_bad_line_is_named_by_number_never_echoed(tmp_path):
    secret, _ = new_key()
    damaged = secret[:-3] + ("QQQ" if not secret.endswith("QQQ") else "PPP")
    cases = {
        "not an age identity": f"# keys\n{secret}\n{RECIPIENT}\n",
        "not a valid age identity": f"{secret}\n\n{damaged}\n",
        "plugin identity": "AGE-PLUGIN-YUBIKEY-1QQQQQQQQQQQQQQQ\n",
    }
    for reason, text in cases.items():
        path = tmp_path / "identity.txt"
        path.write_text(text)
        path.chmod(0o600)
        with pytest.raises(DecryptionError, match=rf"line \d of identity file {path} .*{reason}") as caught:
            load_identities(path)
        for line in text.splitlines():
            if len(line) > 10:
                assert line not in str(caught.value)


def test_a_passphrase_protected_age_identity_file_is_refused(tmp_path):
    secret, _ = new_key()
    path = tmp_path / "identity.age"
    path.write_bytes(pyrage.passphrase.encrypt(secret.encode(), "correct horse"))
    path.chmod(0o600)
    with pytest.raises(DecryptionError, match="itself age-encrypted"):
        load_identities(path)


# ---------------------------------------------------------------------------- streams


def test_header_check():
    assert AGE_HEADER == b"age-encryption.org/v1\n"
    assert is_age(AGE_HEADER + b"-> X25519 abc\n")
    assert not is_age(b"age-encryption.org/v")
    assert not is_age(b"-- PostgreSQL database dump\n")
    assert not is_age(b"")
    _, recipient = new_key()
    assert is_age(encrypt_all([recipient], [b"x"]))


@pytest.mark.parametrize("sizes", [
    [],
    [0],
    [1],
    [CHUNK],
    [CHUNK + 1],
    [CHUNK - 1, 1, CHUNK],
    [7] * 1000,
    [1_000_000, 3, 2_500_000],
])
def test_round_trip_at_every_chunk_boundary(key, sizes):
    identities, recipient = key
    blocks = [os.urandom(size) for size in sizes]
    encrypted = encrypt_all([recipient], blocks)
    assert is_age(encrypted)
    for piece in (1, 4096, CHUNK + 16, 10_000_000):
        if piece == 1 and len(encrypted) > 3_000:
            piece = 997  # byte by byte costs a thread hand-over per byte: only for small files
        assert decrypt_all(identities, encrypted, piece=piece) == b"".join(blocks)


def test_the_ciphertext_holds_no_plaintext(key):
    _, recipient = key
    marker = b"INSERT INTO secrets VALUES ('the launch code');\n"
    encrypted = encrypt_all([recipient], [marker * 5000])
    assert marker[:16] not in encrypted
    assert len(encrypted) > len(marker) * 5000


def test_the_same_input_never_encrypts_the_same_way(key):
    _, recipient = key
    assert encrypt_all([recipient], [b"abc"]) != encrypt_all([recipient], [b"abc"])


def test_two_recipients_either_identity_decrypts(tmp_path):
    (first, first_public), (second, second_public) = new_key(), new_key()
    encrypted = encrypt_all([first_public, second_public], [b"both\n" * 10_000])
    for name, secret in (("a", first), ("b", second)):
        identities = load_identities(identity_file(tmp_path / name, secret))
        assert decrypt_all(identities, encrypted) == b"both\n" * 10_000


def test_bad_recipients_raise_before_anything_is_produced():
    with pytest.raises(EncryptionError, match="recipient 2 has a wrong bech32 checksum"):
        Encryptor([RECIPIENT, RECIPIENT[:-1] + "q"])
    with pytest.raises(EncryptionError, match="at least one recipient"):
        Encryptor([])
    with pytest.raises(TypeError):
        Encryptor(RECIPIENT)
    assert issubclass(EncryptionError, DumpError), "the pipeline fails the backup with the reason"
    assert issubclass(DecryptionError, RestoreError)


def test_a_finished_encryptor_refuses_more(key):
    _, recipient = key
    encryptor = Encryptor([recipient])
    encryptor.encrypt(b"abc")
    encryptor.flush()
    with pytest.raises(RuntimeError):
        encryptor.encrypt(b"more")
    encryptor.close()  # harmless after flush


def test_close_midway_ends_the_thread(key):
    _, recipient = key
    before = native_thread_count()
    encryptor = Encryptor([recipient])
    encryptor.encrypt(os.urandom(3_000_000))
    encryptor.encrypt(os.urandom(3_000_000))
    assert age_threads()
    encryptor.close()
    encryptor.close()
    assert not age_threads()
    assert native_thread_count() == before
    with pytest.raises(RuntimeError):
        encryptor.encrypt(b"x")


def test_an_encryptor_dropped_midway_still_ends_its_thread(key):
    _, recipient = key
    encryptor = Encryptor([recipient])
    encryptor.encrypt(os.urandom(1_000_000))
    (thread,) = age_threads()
    del encryptor
    gc.collect()
    thread.join(10)
    assert not thread.is_alive()


def test_a_wrong_identity_fails_clearly_and_yields_nothing(tmp_path):
    _, recipient = new_key()
    other_secret, other_public = new_key()
    wrong = load_identities(identity_file(tmp_path / "wrong.txt", other_secret))
    encrypted = encrypt_all([recipient, RECIPIENT], [b"secret rows\n" * 100_000])
    produced = []
    decryptor = Decryptor(wrong, recipients=[recipient, RECIPIENT])
    with pytest.raises(DecryptionError) as caught:
        for start in range(0, len(encrypted), 50_000):
            produced.append(decryptor.decrypt(encrypted[start:start + 50_000]))
        produced.append(decryptor.flush())
    decryptor.close()
    assert not any(produced)
    assert len(produced) == 0, "the header alone tells: the first block fails"
    message = str(caught.value)
    assert message == (f"no identity in {wrong.path} can decrypt this backup: it is encrypted to "
                       f"{fingerprint(recipient)}, {fingerprint(RECIPIENT)}; {wrong.path} holds "
                       f"{fingerprint(other_public)}")
    assert other_secret not in message


def test_a_wrong_identity_without_the_manifest_names_the_header_stanzas(tmp_path):
    _, first = new_key()
    _, second = new_key()
    other_secret, _ = new_key()
    wrong = load_identities(identity_file(tmp_path / "wrong.txt", other_secret))
    with pytest.raises(DecryptionError, match="its header names 2 X25519 recipients;"):
        decrypt_all(wrong, encrypt_all([first, second], [b"x"]))


@pytest.fixture
def sealed(key) -> tuple[Identities, bytes, bytes]:
    identities, recipient = key
    plaintext = os.urandom(5 * CHUNK + 1234)
    return identities, encrypt_all([recipient], [plaintext]), plaintext


def body_start(encrypted: bytes) -> int:
    """Where the payload begins: after the header's MAC line and the 16-byte nonce."""
    mac_line = encrypted.index(b"\n---")
    return encrypted.index(b"\n", mac_line + 1) + 1 + 16


@pytest.mark.parametrize("where", ["at a chunk boundary", "inside a chunk", "by one byte",
                                   "inside the header", "after the header"])
def test_truncated_files_fail(sealed, where):
    identities, encrypted, _ = sealed
    start = body_start(encrypted)
    cut = {
        "at a chunk boundary": start + 2 * (CHUNK + 16),
        "inside a chunk": start + 2 * (CHUNK + 16) + 500,
        "by one byte": len(encrypted) - 1,
        "inside the header": 40,
        "after the header": start,
    }[where]
    with pytest.raises(DecryptionError, match="truncated"):
        decrypt_all(identities, encrypted[:cut])


def test_altered_files_fail(sealed):
    identities, encrypted, _ = sealed
    start = body_start(encrypted)
    for position, reason in ((start + 10, "a chunk failed authentication"),
                             (len(encrypted) - 5, "a chunk failed authentication"),
                             (encrypted.index(b"\n---") + 8, "header is damaged or was altered")):
        altered = bytearray(encrypted)
        altered[position] ^= 0x01
        with pytest.raises(DecryptionError, match=reason):
            decrypt_all(identities, bytes(altered))
    with pytest.raises(DecryptionError, match="failed authentication"):
        decrypt_all(identities, encrypted + b"trailing bytes")
    # An altered recipient stanza names another key: no identity matches it.
    altered = bytearray(encrypted)
    altered[encrypted.index(b"\n", len(AGE_HEADER)) - 5] ^= 0x01
    with pytest.raises(DecryptionError, match="no identity in"):
        decrypt_all(identities, bytes(altered))


def test_nothing_unauthenticated_comes_out_of_a_damaged_chunk(sealed):
    identities, encrypted, plaintext = sealed
    start = body_start(encrypted)
    altered = bytearray(encrypted)
    altered[start + 3 * (CHUNK + 16) + 7] ^= 0x80  # inside the fourth chunk
    decryptor = Decryptor(identities)
    produced = bytearray()
    with pytest.raises(DecryptionError):
        for position in range(0, len(altered), 10_000):
            produced += decryptor.decrypt(bytes(altered[position:position + 10_000]))
    decryptor.close()
    assert len(produced) <= 3 * CHUNK
    assert bytes(produced) == plaintext[:len(produced)]


def test_a_file_that_is_not_age_is_named_so(key):
    identities, _ = key
    with pytest.raises(DecryptionError, match="not an age-encrypted file"):
        decrypt_all(identities, b"-- PostgreSQL database dump\n" * 1000)
    with pytest.raises(DecryptionError, match="empty"):
        decrypt_all(identities, b"")


# ---------------------------------------------------------------------------- decrypt_stream


async def pieces(data: bytes, size: int) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start:start + size]
        await asyncio.sleep(0)


async def test_decrypt_stream_round_trip(sealed):
    identities, encrypted, plaintext = sealed
    out = [chunk async for chunk in decrypt_stream(pieces(encrypted, 15_000), identities)]
    assert b"".join(out) == plaintext


async def test_decrypt_stream_wrong_identity_yields_nothing(tmp_path, sealed):
    _, encrypted, _ = sealed
    other_secret, _ = new_key()
    wrong = load_identities(identity_file(tmp_path / "wrong.txt", other_secret))
    out = []
    with pytest.raises(DecryptionError, match=f"no identity in {wrong.path}.*encrypted to age1"):
        async for chunk in decrypt_stream(pieces(encrypted, 15_000), wrong, recipients=[RECIPIENT]):
            out.append(chunk)
    assert out == []


async def test_decrypt_stream_closed_midway_ends_its_thread(key):
    identities, recipient = key
    plaintext = os.urandom(8_000_000)
    encrypted = await asyncio.to_thread(encrypt_all, [recipient], [plaintext])
    stream = decrypt_stream(pieces(encrypted, 1_000_000), identities)
    first = await anext(stream)
    assert first == plaintext[:len(first)]
    assert age_threads()
    await stream.aclose()
    assert not age_threads()


# ---------------------------------------------------------------------------- the bridge


def test_a_failure_of_the_call_is_raised_from_every_later_feed():
    def half_then_fail(reader, writer):
        writer.write(reader.read(10))
        raise OSError("the disk went away")

    bridge = Bridge(half_then_fail, "age-test")
    with pytest.raises(StreamFailure, match="the disk went away"):
        bridge.feed(b"0123456789abcdef", settle=True)
    with pytest.raises(StreamFailure):
        bridge.feed(b"more")
    with pytest.raises(StreamFailure):
        bridge.finish()
    bridge.abandon()


def test_a_call_that_ends_before_its_input_is_a_failure():
    bridge = Bridge(lambda reader, writer: None, "age-test")
    with pytest.raises(StreamFailure, match="ended before its input"):
        bridge.feed(b"abc", settle=True)
    bridge.abandon()

"""backupmand's age files and the stock tools: Debian's ``age`` 1.1 and OpenSSH's keys.

Every file backupmand writes must decrypt with ``age -d -i IDENTITY``; every file
``age -r RECIPIENT`` writes must decrypt here. Big streams keep memory flat, and the
event loop stays free while they run.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import shutil
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from blockbuster import BlockBuster

from backupmand import compression
from backupmand.encryption import (
    Decryptor,
    Encryptor,
    Identities,
    check_recipient,
    decrypt_stream,
    fingerprint,
    is_age,
    load_identities,
)
from backupmand.errors import DecryptionError

MIB = 1024 * 1024
AGE = shutil.which("age")
AGE_KEYGEN = shutil.which("age-keygen")
SSH_KEYGEN = shutil.which("ssh-keygen")


@pytest.fixture(scope="module", autouse=True)
def _stock_tools() -> None:
    # The tools are part of the test environment (.ci/run installs age and openssh-client):
    # without them these tests fail, they never skip.
    assert AGE and AGE_KEYGEN, "the stock age tool (Debian package age) is required"
    assert SSH_KEYGEN, "ssh-keygen (Debian package openssh-client) is required"


class AgeKey:
    """A key made by the stock age-keygen: its identity file and its recipient."""

    def __init__(self, folder: Path, name: str) -> None:
        self.identity = folder / f"{name}.txt"
        subprocess.run([AGE_KEYGEN, "-o", str(self.identity)], check=True, capture_output=True)
        self.recipient = subprocess.run([AGE_KEYGEN, "-y", str(self.identity)], check=True,
                                        capture_output=True, text=True).stdout.strip()


class SshKey:
    """An ssh-ed25519 key made by ssh-keygen, as a user's ~/.ssh/id_ed25519 would be."""

    def __init__(self, folder: Path, name: str, *, kind: str = "ed25519", passphrase: str = "") -> None:
        self.identity = folder / name
        subprocess.run([SSH_KEYGEN, "-q", "-t", kind, "-N", passphrase, "-C", f"{name}@host",
                        "-f", str(self.identity)], check=True, capture_output=True)
        self.public = Path(f"{self.identity}.pub").read_text().strip()


@pytest.fixture
def age_key(tmp_path: Path) -> AgeKey:
    return AgeKey(tmp_path, "identity")


def encrypt(recipients: list[str], blocks: list[bytes]) -> bytes:
    encryptor = Encryptor(recipients)
    try:
        return b"".join(encryptor.encrypt(block) for block in blocks) + encryptor.flush()
    finally:
        encryptor.close()


def decrypt(identities: Identities, data: bytes, **kwargs: object) -> bytes:
    decryptor = Decryptor(identities, **kwargs)  # type: ignore[arg-type]
    try:
        return decryptor.decrypt(data) + decryptor.flush()
    finally:
        decryptor.close()


def stock_decrypt(identity: Path, data: bytes) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([AGE, "-d", "-i", str(identity)], input=data, capture_output=True)


def stock_encrypt(data: bytes, *options: str) -> bytes:
    return subprocess.run([AGE, *options], input=data, capture_output=True, check=True).stdout


def dump_like(size: int) -> bytes:
    rows = b"".join(b"%d\tuser%d@example.com\t2026-12-01 10:00:00\t%s\n"
                    % (i, i, os.urandom(8).hex().encode()) for i in range(size // 60 + 1))
    return rows[:size]


# ---------------------------------------------------------------------------- both directions


def test_backupmand_files_decrypt_with_stock_age(age_key, tmp_path):
    plaintext = dump_like(3 * MIB + 17)
    blocks = [plaintext[i:i + 1_000_000] for i in range(0, len(plaintext), 1_000_000)]
    encrypted = encrypt([age_key.recipient], blocks)
    assert is_age(encrypted)
    path = tmp_path / "main.sql.zst.age"
    path.write_bytes(encrypted)
    result = subprocess.run([AGE, "-d", "-i", str(age_key.identity), str(path)], capture_output=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout == plaintext


def test_compress_encrypt_hash_as_the_pipeline_chains_them(age_key, tmp_path):
    """zstd -> age -> SHA-256 in one worker's calls; by hand: age -d -i id | zstd -d."""
    plaintext = dump_like(6 * MIB)
    compressor = compression.compressor("zstd", 3, 2)
    encryptor = Encryptor([age_key.recipient])
    digest = hashlib.sha256()
    stored = bytearray()
    for start in range(0, len(plaintext), MIB):
        sealed = encryptor.encrypt(compressor.compress(plaintext[start:start + MIB]))
        digest.update(sealed)
        stored += sealed
    sealed = encryptor.encrypt(compressor.flush()) + encryptor.flush()
    digest.update(sealed)
    stored += sealed
    assert digest.hexdigest() == hashlib.sha256(stored).hexdigest()
    path = tmp_path / "main.sql.zst.age"
    path.write_bytes(stored)
    by_hand = subprocess.run(f"{AGE} -d -i {age_key.identity} {path} | zstd -d", shell=True,
                             capture_output=True, check=True)
    assert by_hand.stdout == plaintext


def test_stock_age_files_decrypt_here(age_key):
    plaintext = dump_like(2 * MIB + 5)
    identities = load_identities(age_key.identity)
    for options in (["-r", age_key.recipient], ["-R", str(recipients_file(age_key))],
                    ["--armor", "-r", age_key.recipient]):
        encrypted = stock_encrypt(plaintext, *options)
        assert decrypt(identities, encrypted) == plaintext, options


def recipients_file(key: AgeKey) -> Path:
    path = key.identity.with_suffix(".recipients")
    path.write_text(f"# the restore host\n{key.recipient}\n")
    return path


async def test_stock_age_files_decrypt_through_decrypt_stream(age_key):
    plaintext = dump_like(5 * MIB)
    encrypted = stock_encrypt(plaintext, "-r", age_key.recipient)
    identities = await asyncio.to_thread(load_identities, age_key.identity)

    async def download() -> AsyncIterator[bytes]:
        for start in range(0, len(encrypted), 16 * 1024):  # as pieces arrive from a drive
            yield encrypted[start:start + 16 * 1024]

    out = bytearray()
    async for chunk in decrypt_stream(download(), identities, recipients=[age_key.recipient]):
        out += chunk
    assert out == plaintext


def test_empty_stream_both_ways(age_key):
    encrypted = encrypt([age_key.recipient], [])
    result = stock_decrypt(age_key.identity, encrypted)
    assert result.returncode == 0 and result.stdout == b""
    assert decrypt(load_identities(age_key.identity), stock_encrypt(b"", "-r", age_key.recipient)) == b""


# ---------------------------------------------------------------------------- recipients


def test_two_recipients_either_identity_decrypts(tmp_path):
    first, second = AgeKey(tmp_path, "first"), AgeKey(tmp_path, "second")
    plaintext = dump_like(MIB)
    ours = encrypt([first.recipient, second.recipient], [plaintext])
    theirs = stock_encrypt(plaintext, "-r", first.recipient, "-r", second.recipient)
    for key in (first, second):
        result = stock_decrypt(key.identity, ours)
        assert result.returncode == 0 and result.stdout == plaintext
        identities = load_identities(key.identity)
        assert decrypt(identities, ours) == plaintext
        assert decrypt(identities, theirs) == plaintext


def test_an_ssh_ed25519_recipient_decrypts_with_stock_age_and_the_private_key(tmp_path):
    ssh = SshKey(tmp_path, "id_ed25519")
    normalized = check_recipient(ssh.public)
    assert normalized == " ".join(ssh.public.split()[:2])  # comment dropped
    printed = subprocess.run([SSH_KEYGEN, "-lf", f"{ssh.identity}.pub"], capture_output=True,
                             text=True, check=True).stdout.split()[1]
    assert fingerprint(ssh.public) == f"ssh-ed25519 {printed}"
    plaintext = dump_like(MIB + 3)
    encrypted = encrypt([ssh.public], [plaintext])
    result = stock_decrypt(ssh.identity, encrypted)
    assert result.returncode == 0, result.stderr
    assert result.stdout == plaintext
    # and the other way: stock age to the SSH key, decrypted here with the private key
    identities = load_identities(ssh.identity)
    assert identities.public == (normalized,)
    assert decrypt(identities, stock_encrypt(plaintext, "-R", f"{ssh.identity}.pub")) == plaintext
    assert decrypt(identities, encrypted) == plaintext


def test_an_age_key_and_an_ssh_key_together(tmp_path):
    age_key, ssh = AgeKey(tmp_path, "age"), SshKey(tmp_path, "id_ed25519")
    plaintext = dump_like(300_000)
    encrypted = encrypt([age_key.recipient, ssh.public], [plaintext])
    for identity in (age_key.identity, ssh.identity):
        result = stock_decrypt(identity, encrypted)
        assert result.returncode == 0 and result.stdout == plaintext


def test_other_ssh_keys_are_refused_with_a_reason(tmp_path):
    rsa = SshKey(tmp_path, "id_rsa", kind="rsa")
    with pytest.raises(ValueError, match="ssh-rsa key: only ssh-ed25519"):
        check_recipient(rsa.public)
    with pytest.raises(DecryptionError, match="holds an ssh-rsa key: only ssh-ed25519"):
        load_identities(rsa.identity)
    ecdsa = SshKey(tmp_path, "id_ecdsa", kind="ecdsa")
    with pytest.raises(ValueError, match="ecdsa-sha2-nistp256 key"):
        check_recipient(ecdsa.public)
    protected = SshKey(tmp_path, "id_protected", passphrase="correct horse")
    assert check_recipient(protected.public)  # its public half is a fine recipient
    with pytest.raises(DecryptionError, match="passphrase-protected SSH key"):
        load_identities(protected.identity)


# ---------------------------------------------------------------------------- identities


def test_a_0644_identity_from_age_keygen_is_refused(age_key):
    age_key.identity.chmod(0o644)
    with pytest.raises(DecryptionError) as caught:
        load_identities(age_key.identity)
    assert str(caught.value) == (
        f"identity file {age_key.identity} is accessible to group or others (mode 0644), so its "
        f"keys must be considered exposed: run chmod 600 {age_key.identity}")
    secret = next(line for line in age_key.identity.read_text().splitlines() if line.startswith("AGE-"))
    assert secret not in str(caught.value)


def test_secrets_cover_what_a_tool_could_print(tmp_path, age_key):
    secret = next(line for line in age_key.identity.read_text().splitlines() if line.startswith("AGE-"))
    assert secret in load_identities(age_key.identity).secrets()
    ssh = SshKey(tmp_path, "id_ed25519")
    body = [line for line in ssh.identity.read_text().splitlines() if not line.startswith("-----")]
    assert set(body) <= set(load_identities(ssh.identity).secrets())


# ---------------------------------------------------------------------------- failures


def test_a_wrong_identity_fails_clearly_and_yields_no_plaintext(tmp_path):
    owner, stranger = AgeKey(tmp_path, "owner"), AgeKey(tmp_path, "stranger")
    encrypted = stock_encrypt(dump_like(MIB), "-r", owner.recipient)
    identities = load_identities(stranger.identity)
    decryptor = Decryptor(identities, recipients=[owner.recipient])
    with pytest.raises(DecryptionError) as caught:
        decryptor.decrypt(encrypted[:4096])
    decryptor.close()
    assert str(caught.value) == (
        f"no identity in {stranger.identity} can decrypt this backup: it is encrypted to "
        f"{fingerprint(owner.recipient)}; {stranger.identity} holds {fingerprint(stranger.recipient)}")
    # stock age agrees, for what it is worth
    assert stock_decrypt(stranger.identity, encrypted).returncode != 0


def test_stock_age_refuses_what_we_refuse(age_key):
    encrypted = encrypt([age_key.recipient], [dump_like(3 * MIB)])
    identities = load_identities(age_key.identity)
    truncated = encrypted[: len(encrypted) - 70_000]
    altered = bytearray(encrypted)
    altered[len(encrypted) // 2] ^= 0x04
    for damaged, reason in ((truncated, "truncated|failed authentication"),
                            (bytes(altered), "failed authentication")):
        with pytest.raises(DecryptionError, match=reason):
            decrypt(identities, damaged)
        assert stock_decrypt(age_key.identity, damaged).returncode != 0


# ---------------------------------------------------------------------------- big streams


def resident_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_a_160_mib_stream_keeps_memory_flat_and_decrypts_with_stock_age(age_key):
    """Encrypt 160 MiB straight into a stock ``age -d`` and back out, never holding it."""
    process = subprocess.Popen([AGE, "-d", "-i", str(age_key.identity)],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert process.stdin is not None and process.stdout is not None
    stdout = process.stdout
    decrypted = hashlib.sha256()
    counted = [0]

    def drain() -> None:
        while chunk := stdout.read(MIB):
            decrypted.update(chunk)
            counted[0] += len(chunk)

    reader = threading.Thread(target=drain)
    reader.start()
    original = hashlib.sha256()
    encryptor = Encryptor([age_key.recipient])
    block = os.urandom(MIB)
    start = peak = resident_bytes()
    for index in range(160):
        piece = block[index:] + block[:index]  # every block different
        original.update(piece)
        process.stdin.write(encryptor.encrypt(piece))
        peak = max(peak, resident_bytes())
    process.stdin.write(encryptor.flush())
    process.stdin.close()
    reader.join()
    assert process.wait() == 0
    assert counted[0] == 160 * MIB
    assert decrypted.digest() == original.digest()
    assert peak - start < 40 * MIB, f"RSS grew by {(peak - start) / MIB:.0f} MiB"


def test_a_160_mib_decryption_keeps_memory_flat(age_key, tmp_path):
    path = tmp_path / "big.age"
    with path.open("wb") as sink:
        subprocess.run(f"head -c {160 * MIB} /dev/urandom | {AGE} -r {age_key.recipient}",
                       shell=True, stdout=sink, check=True)
    identities = load_identities(age_key.identity)
    decryptor = Decryptor(identities)
    produced = 0
    start = peak = resident_bytes()
    with path.open("rb") as source:
        while block := source.read(MIB):
            produced += len(decryptor.decrypt(block))
            peak = max(peak, resident_bytes())
    produced += len(decryptor.flush())
    assert produced == 160 * MIB
    assert peak - start < 40 * MIB, f"RSS grew by {(peak - start) / MIB:.0f} MiB"


@contextlib.contextmanager
def no_blocking_on_the_loop() -> Iterator[None]:
    blockbuster = BlockBuster()
    blockbuster.activate()  # any blocking call made on the loop's thread now raises
    try:
        yield
    finally:
        blockbuster.deactivate()


async def test_the_event_loop_stays_free_while_a_big_stream_encrypts_and_decrypts(age_key):
    """A 1 ms sleep loop runs beside 256 MiB of encryption, then of decrypt_stream.

    rage holds the GIL while it seals a chunk but returns to Python every 8 KiB; the
    loop's longest wait is bounded by the interpreter's switch interval (5 ms), plus
    noise from the other sessions on this machine: the bound is generous.
    """
    identities = await asyncio.to_thread(load_identities, age_key.identity)
    gaps: list[float] = []
    done = asyncio.Event()

    async def ticker() -> None:
        while not done.is_set():
            started = time.perf_counter()
            await asyncio.sleep(0.001)
            gaps.append(time.perf_counter() - started)

    block = os.urandom(MIB)
    encrypted = bytearray()
    with no_blocking_on_the_loop():
        tick = asyncio.create_task(ticker())
        encryptor = Encryptor([age_key.recipient])
        for _ in range(256):
            encrypted += await asyncio.to_thread(encryptor.encrypt, block)
        encrypted += await asyncio.to_thread(encryptor.flush)

        async def chunks() -> AsyncIterator[bytes]:
            for start in range(0, len(encrypted), MIB):
                yield bytes(encrypted[start:start + MIB])

        produced = 0
        async for piece in decrypt_stream(chunks(), identities):
            produced += len(piece)
        done.set()
        await tick
    assert produced == 256 * MIB
    assert len(gaps) > 100
    gaps.sort()
    longest, p99 = gaps[-1], gaps[int(len(gaps) * 0.99)]
    # Generous: the machine is shared (other test processes run beside this one); what
    # is caught is the loop stalling for a whole chunk or stream, not jitter.
    assert p99 < 0.150 and longest < 1.0, f"p99 {p99 * 1000:.1f} ms, longest {longest * 1000:.1f} ms"


async def test_closing_decrypt_stream_midway_does_not_block_the_loop(age_key):
    identities = await asyncio.to_thread(load_identities, age_key.identity)
    encrypted = await asyncio.to_thread(encrypt, [age_key.recipient], [os.urandom(MIB)] * 8)

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(encrypted), MIB):
            yield encrypted[start:start + MIB]

    with no_blocking_on_the_loop():
        stream = decrypt_stream(chunks(), identities)
        assert len(await anext(stream)) > 0
        await stream.aclose()  # the decrypting thread is stopped and joined off the loop
    assert not [t for t in threading.enumerate() if t.name.startswith("age-")]

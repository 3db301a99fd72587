"""An S3 bucket (AWS or any S3-compatible service) through aioboto3.

Uploads
    The stage file is followed as it grows (backupmand.growing). A file that is
    complete before its first part is full (``part_size``, 16 MiB by default) is sent
    with one ``PutObject``; a bigger one with a multipart upload whose parts go out as
    soon as each is in the file, ``part_concurrency`` (4) at a time, part sizes growing
    with the part number (s3_parts) so that no upload needs more than 10,000 parts.
    Bodies are read from the stage file while they are sent, never held in memory. A
    hashing pass just ahead of the senders computes each part's SHA-256
    (``ChecksumSHA256``, checked by S3 on arrival; ``Content-MD5`` with
    ``checksums: false``) and the whole file's SHA-256; nothing is completed unless the
    whole file matches ``expected()``. Each part is retried on its own, with backoff
    (503 SlowDown, 429, 5xx, dropped connections, damaged bytes); a part that fails for
    good fails the upload, which is then aborted.

The whole file's SHA-256
    S3 keeps no SHA-256 of a multipart object (only the composite of its parts'), and
    metadata can be set only when an upload starts, before the stream's SHA-256 is
    known. So: a single ``PutObject`` carries ``x-amz-meta-sha256``; a multipart object
    carries its part layout instead (``x-amz-meta-part-size``,
    ``x-amz-meta-parts-per-step``), from which its composite checksum can be computed
    again from a local copy, and the whole file's SHA-256 is in the manifest the
    pipeline stores beside every dump. Rewriting the object to add the metadata (a
    server-side copy) would double the work S3 does for every dump, and a sidecar
    object per dump would be one more thing to list, prune and keep consistent.

Verification
    After the upload, ``HeadObject`` must report the expected size, this upload's
    ``x-amz-meta-upload`` (a random id: the object is this upload's, not a concurrent
    writer's), the ``sha256`` metadata of a single PUT, and, when the service reports
    one, the expected ``ChecksumSHA256``: the file's own for a single PUT, the
    composite of the part checksums for a multipart object.

Never overwriting
    The key must not exist before the upload (``HeadObject`` → 404), and the final
    request carries ``If-None-Match: *`` (``conditional_writes``), so that a concurrent
    writer cannot be overwritten on services that support conditional writes (AWS S3
    since August 2024; moto). A final request resent after it got no answer may find
    its own object there (412): the upload id in the metadata tells. With ``adopt`` an
    existing object of the same size and SHA-256 (its ``sha256`` metadata, or its
    composite checksum computed again from the stage file, or, for an object with
    neither, its bytes downloaded and hashed) counts as this upload's own.

Nothing left behind
    A multipart upload that fails, or whose task is cancelled, is aborted in a
    shielded task; an object that landed although its final request failed is deleted
    when it carries this upload's id. When an abort itself fails (the service is
    unreachable), the upload id is remembered and the abort retried before the next
    upload and at ``aclose()``; ``sweep`` aborts the unfinished multipart uploads of
    dead processes under the prefix. (A lifecycle rule
    ``AbortIncompleteMultipartUpload`` on the bucket is still a good idea.)

Clients
    One client for listings, downloads, deletes and the multipart calls (retries in
    botocore's standard mode, ``request_attempts`` attempts); one for request bodies
    (``PutObject``, ``UploadPart``: no botocore retries, the drive retries them itself
    with a fresh body; unsigned payloads, since the checksum headers protect them and
    signing would read every body on the event loop); one for health checks (short
    timeouts, at most two attempts). All are created at first use and closed by
    ``aclose()``. Without ``access_key`` / ``secret_key`` botocore's default credential
    chain applies (environment, shared files, instance metadata).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import hashlib
import os
import random
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import AsyncExitStack
from typing import Any

import aioboto3
import aiohttp
import structlog
from botocore.config import Config as BotoConfig
from botocore.exceptions import BotoCoreError, ClientError

from ..config import S3Drive
from ..errors import DriveError, HealthError, VerificationError
from ..growing import GrowingFile, in_thread
from .base import Drive, RemoteFile, StoredFile, already_exists, check_name
from .locations import Location
from .s3_errors import (
    code,
    describe,
    drive_error,
    is_not_found,
    is_precondition_failed,
    is_transient,
    status,
)
from .s3_parts import (
    MAX_OBJECT_SIZE,
    MAX_PART_SIZE,
    MAX_PARTS,
    MIN_PART_SIZE,
    PARTS_PER_STEP,
    PartBody,
    PartDigests,
    composite_sha256,
    part_bounds,
)

log = structlog.get_logger("backupmand.drives.s3")

MiB = 1024 * 1024
#: Download blocks.
DOWNLOAD_BLOCK = MiB
#: The metadata keys (sent as ``x-amz-meta-<key>``).
SHA256_METADATA = "sha256"
PART_SIZE_METADATA = "part-size"
PARTS_PER_STEP_METADATA = "parts-per-step"
UPLOAD_METADATA = "upload"


def _b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode("ascii")


def _first_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The error that ended a task group (not the cancellations it caused)."""
    errors = [error for error in _leaves(group) if not isinstance(error, asyncio.CancelledError)]
    return next((error for error in errors if isinstance(error, DriveError)),
                errors[0] if errors else asyncio.CancelledError())


def _leaves(error: BaseException) -> list[BaseException]:
    if isinstance(error, BaseExceptionGroup):
        return [leaf for inner in error.exceptions for leaf in _leaves(inner)]
    return [error]


class S3Bucket(Drive[S3Drive]):
    provider = "s3"

    #: Attempts per request in botocore's standard retry mode (listings, downloads, deletes).
    request_attempts: int = 3
    #: Attempts per part (and per PutObject), each with a fresh body.
    part_attempts: int = 5
    #: Seconds before the second attempt of a part; doubled each time, at most max_backoff.
    backoff_base: float = 0.5
    max_backoff: float = 16.0
    #: Seconds: health checks must answer in seconds.
    health_timeout: float = 5.0
    connect_timeout: float = 10.0
    read_timeout: float = 60.0

    def __init__(self, config: S3Drive, host: str = "localhost", *,
                 request_attempts: int | None = None, part_attempts: int | None = None,
                 sleep: Callable[[float], Awaitable[object]] = asyncio.sleep) -> None:
        super().__init__(config, host)
        if request_attempts is not None:
            self.request_attempts = request_attempts
        if part_attempts is not None:
            self.part_attempts = part_attempts
        self.sleep = sleep
        self.location = Location.parse(config.prefix)
        self._stack: AsyncExitStack | None = None
        self._session: Any = None
        self._clients: dict[str, Any] = {}
        self._client_lock = asyncio.Lock()
        #: Multipart uploads whose abort failed: (key, upload id), aborted again later.
        self._unaborted: list[tuple[str, str]] = []
        #: Multipart uploads running in this process (sweep leaves them alone).
        self._active: set[str] = set()
        self._cleanups: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------------ plumbing

    @property
    def prefix(self) -> str:
        return "/".join(self.location.for_host(self.host))

    def key_for(self, name: str) -> str:
        return f"{self.prefix}/{name}" if self.prefix else name

    def _where(self, key: str) -> str:
        return f"s3://{self.config.bucket}/{key}"

    def secrets(self) -> tuple[str, ...]:
        return tuple(
            secret.get_secret_value()
            for secret in (self.config.access_key, self.config.secret_key)
            if secret is not None and secret.get_secret_value()
        )

    def _boto_config(self, kind: str) -> BotoConfig:
        health = kind == "health"
        options: dict[str, Any] = {
            "s3": {"addressing_style": "path" if self.config.force_path_style else "auto"},
            "connect_timeout": 3.0 if health else self.connect_timeout,
            "read_timeout": self.health_timeout if health else self.read_timeout,
            "retries": {"mode": "standard",
                        "total_max_attempts": 2 if health else self.request_attempts},
        }
        if kind == "transfer":
            options["retries"] = {"mode": "standard", "total_max_attempts": 1}
            options["s3"]["payload_signing_enabled"] = False
            options["max_pool_connections"] = max(10, self.config.part_concurrency + 2)
        if not self.config.checksums:
            # S3-compatible services without flexible checksums: send none unless required.
            options["request_checksum_calculation"] = "when_required"
            options["response_checksum_validation"] = "when_required"
        return BotoConfig(**options)

    async def client(self, kind: str = "main") -> Any:
        """The drive's aioboto3 S3 client: ``main``, ``transfer`` (request bodies) or
        ``health``, created at first use and kept until ``aclose()``."""
        client = self._clients.get(kind)
        if client is not None:
            return client
        async with self._client_lock:
            if kind not in self._clients:
                if self._stack is None:
                    self._stack = AsyncExitStack()
                config = self.config
                if self._session is None:
                    # One session for the drive's clients: a session loads botocore's
                    # service models once (about 13 MB), its clients share them.
                    self._session = aioboto3.Session(
                        aws_access_key_id=(config.access_key.get_secret_value()
                                           if config.access_key else None),
                        aws_secret_access_key=(config.secret_key.get_secret_value()
                                               if config.secret_key else None),
                        region_name=config.region or None,
                    )
                self._clients[kind] = await self._stack.enter_async_context(
                    self._session.client("s3", endpoint_url=config.endpoint or None,
                                         config=self._boto_config(kind)))
            return self._clients[kind]

    async def aclose(self) -> None:
        if self._cleanups:
            await asyncio.gather(*self._cleanups, return_exceptions=True)
        if self._unaborted and "main" in self._clients:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(self.health_timeout * 2):
                    await self._abort_leftovers()
        stack, self._stack = self._stack, None
        self._clients.clear()
        if stack is not None:
            await stack.aclose()

    def _backoff(self, failures: int) -> float:
        ceiling = min(self.max_backoff, self.backoff_base * 2 ** (failures - 1))
        return random.uniform(ceiling / 2, ceiling)  # noqa: S311 - jitter, not cryptography

    # ------------------------------------------------------------------ upload

    async def upload_stream(
        self, source: GrowingFile, name: str, *, adopt: bool = False
    ) -> StoredFile:
        check_name(name)
        key = self.key_for(name)
        where = self._where(key)
        client = await self.client()
        if self._unaborted:
            await self._abort_leftovers()
        try:
            descriptor = await in_thread(source.open_reader)
        except OSError as error:
            raise DriveError(f"cannot read {source.path}: {error.strerror or error}",
                             retryable=False) from None
        try:
            head = await self._head(client, key, where)
            if head is not None:
                return await self._existing(head, key, where, adopt, source, descriptor)
            first = self.config.part_size
            await source.available(first)
            digests = PartDigests(md5=not self.config.checksums)
            if source.complete and source.size <= first:
                return await self._put_stream(source, descriptor, key, where, digests)
            return await self._multipart(source, descriptor, key, where, digests, first)
        finally:
            await self._shielded(in_thread(os.close, descriptor))

    async def put_bytes(self, data: bytes, name: str, *, adopt: bool = False) -> StoredFile:
        check_name(name)
        key = self.key_for(name)
        where = self._where(key)
        client = await self.client()
        sha256 = hashlib.sha256(data)
        head = await self._head(client, key, where)
        if head is not None:
            if adopt and await self._holds_bytes(head, key, len(data), sha256.hexdigest()):
                return StoredFile(path=key, size=len(data))
            raise already_exists(where)
        md5 = None if self.config.checksums else hashlib.md5(data, usedforsecurity=False).digest()
        return await self._put(key, where, lambda: data, len(data), sha256.hexdigest(),
                               sha256.digest(), md5)

    async def _head(self, client: Any, key: str, where: str) -> dict[str, Any] | None:
        """The object's HeadObject answer, None when there is none."""
        options = {"ChecksumMode": "ENABLED"} if self.config.checksums else {}
        try:
            head: dict[str, Any] = await client.head_object(
                Bucket=self.config.bucket, Key=key, **options)
        except Exception as error:
            if is_not_found(error) and not (isinstance(error, ClientError)
                                            and code(error) == "NoSuchBucket"):
                return None
            raise drive_error(error, f"checking {where}") from None
        return head

    async def _existing(
        self, head: dict[str, Any], key: str, where: str, adopt: bool, source: GrowingFile,
        descriptor: int,
    ) -> StoredFile:
        """An object is already under the key: this upload's own only with ``adopt`` and
        the same size and SHA-256."""
        if not adopt:
            raise already_exists(where)
        size, sha256 = await source.completed()
        metadata = head.get("Metadata") or {}
        if head.get("ContentLength") != size:
            raise already_exists(where)
        reported = str(head.get("ChecksumSHA256") or "").split("-")[0]
        if SHA256_METADATA not in metadata and reported and PART_SIZE_METADATA in metadata:
            try:
                first = int(metadata[PART_SIZE_METADATA])
                per_step = int(metadata.get(PARTS_PER_STEP_METADATA) or PARTS_PER_STEP)
            except ValueError:
                first = per_step = 0
            # Anybody can write metadata: a layout no upload of ours makes is not computed.
            if MIN_PART_SIZE <= first <= MAX_PART_SIZE and 1 <= per_step <= MAX_PARTS:
                # The stage file, read again in the object's part layout: its SHA-256 must
                # be the expected one, and its composite checksum the object's.
                whole, composite = await composite_sha256(descriptor, size, first, per_step,
                                                          source.path)
                if (whole, composite) == (sha256, reported):
                    return StoredFile(path=key, size=size)
                raise already_exists(where)
        if await self._holds_bytes(head, key, size, sha256):
            return StoredFile(path=key, size=size)
        raise already_exists(where)

    async def _holds_bytes(self, head: dict[str, Any], key: str, size: int, sha256: str) -> bool:
        """Whether the object is ``size`` bytes with this SHA-256: by its metadata, by the
        checksum of a single-part object, else by its bytes."""
        if head.get("ContentLength") != size:
            return False
        metadata = head.get("Metadata") or {}
        if SHA256_METADATA in metadata:
            return bool(metadata[SHA256_METADATA] == sha256)
        reported = str(head.get("ChecksumSHA256") or "")
        if reported and "-" not in str(head.get("ETag") or ""):
            return reported == _b64(bytes.fromhex(sha256))
        digest = hashlib.sha256()
        async for block in self.download(key):
            await asyncio.to_thread(digest.update, block)
        return digest.hexdigest() == sha256

    async def _put_stream(
        self, source: GrowingFile, descriptor: int, key: str, where: str, digests: PartDigests
    ) -> StoredFile:
        size, sha256 = source.expected()
        part_sha256, md5 = await in_thread(digests.hash_part, descriptor, 0, size, source.path)
        _check_whole(source, digests, size, sha256)
        return await self._put(key, where, lambda: PartBody(source, descriptor, 0, size), size,
                               sha256, part_sha256, md5)

    async def _put(
        self, key: str, where: str, body: Callable[[], Any], size: int, sha256: str,
        sha256_digest: bytes, md5: bytes | None,
    ) -> StoredFile:
        """One PutObject, retried with a fresh body, then verified."""
        transfer = await self.client("transfer")
        upload = uuid.uuid4().hex
        options: dict[str, Any] = ({"ChecksumSHA256": _b64(sha256_digest)} if md5 is None
                                   else {"ContentMD5": _b64(md5)})
        options.update(self._conditions())
        failures = 0
        unanswered = False
        try:
            while True:
                sent = body()
                try:
                    await transfer.put_object(
                        Bucket=self.config.bucket, Key=key, Body=sent, ContentLength=size,
                        Metadata={SHA256_METADATA: sha256, UPLOAD_METADATA: upload}, **options)
                    break
                except Exception as error:
                    if isinstance(sent, PartBody) and sent.error is not None:
                        raise sent.error from None
                    if is_precondition_failed(error):
                        if unanswered and await self._landed(key, upload):
                            break  # an earlier attempt got no answer, but it is there
                        raise already_exists(where) from None
                    failures += 1
                    if not is_transient(error, part=True) or failures >= self.part_attempts:
                        raise drive_error(error, f"uploading {where}") from None
                    unanswered = unanswered or not isinstance(error, ClientError)
                    log.info("s3.put_retry", drive=self.label, key=key, attempt=failures,
                             error=describe(error))
                    await self.sleep(self._backoff(failures))
        except BaseException:
            # No answer may still mean stored: remove what carries this upload's id.
            await self._shielded(self._delete_if_ours(key, upload))
            raise
        await self._verify(key, where, size, sha256, upload,
                           checksum=_b64(sha256_digest) if md5 is None else None, parts=None)
        return StoredFile(path=key, size=size)

    def _conditions(self) -> dict[str, str]:
        return {"IfNoneMatch": "*"} if self.config.conditional_writes else {}

    async def _multipart(
        self, source: GrowingFile, descriptor: int, key: str, where: str, digests: PartDigests,
        first: int,
    ) -> StoredFile:
        client = await self.client()
        bucket = self.config.bucket
        upload = uuid.uuid4().hex
        options: dict[str, Any] = {"ChecksumAlgorithm": "SHA256"} if self.config.checksums else {}
        metadata = {PART_SIZE_METADATA: str(first), PARTS_PER_STEP_METADATA: str(PARTS_PER_STEP),
                    UPLOAD_METADATA: upload}
        try:
            created = await client.create_multipart_upload(
                Bucket=bucket, Key=key, Metadata=metadata, **options)
        except Exception as error:
            raise drive_error(error, f"starting the upload of {where}") from None
        upload_id: str = created["UploadId"]
        self._active.add(upload_id)
        completing = False
        try:
            parts = await self._send_parts(source, descriptor, key, upload_id, where, digests,
                                           first)
            size, sha256 = source.expected()
            _check_whole(source, digests, size, sha256)
            completing = True
            await self._complete(key, upload_id, where, parts, upload)
        except BaseException as error:
            await self._shielded(self._abort(key, upload_id))
            if completing:
                await self._shielded(self._delete_if_ours(key, upload))
            if isinstance(error, Exception):
                raise drive_error(error, f"uploading {where}") from None
            raise
        finally:
            self._active.discard(upload_id)
        checksum = None
        if self.config.checksums:
            checksum = _b64(hashlib.sha256(b"".join(
                base64.b64decode(part["ChecksumSHA256"]) for part in parts)).digest())
        await self._verify(key, where, size, sha256, upload, checksum=checksum, parts=len(parts))
        return StoredFile(path=key, size=size)

    async def _send_parts(
        self, source: GrowingFile, descriptor: int, key: str, upload_id: str, where: str,
        digests: PartDigests, first: int,
    ) -> list[dict[str, Any]]:
        """Every part of the stream, each sent as soon as it is in the stage file, at most
        ``part_concurrency`` at once; the parts for CompleteMultipartUpload, in order."""
        transfer = await self.client("transfer")
        sent: dict[int, dict[str, Any]] = {}
        slots = asyncio.Semaphore(self.config.part_concurrency)
        try:
            async with asyncio.TaskGroup() as group:
                number = 1
                while True:
                    start, end = part_bounds(number, first)
                    await source.available(end - 1)
                    if source.complete:
                        if start >= source.size:
                            break
                        end = min(end, source.size)
                    if number > MAX_PARTS or end > MAX_OBJECT_SIZE:
                        raise DriveError(f"{where}: the stream is larger than S3's 5 TiB "
                                         "object limit", retryable=False)
                    sha256, md5 = await in_thread(digests.hash_part, descriptor, start, end,
                                                  source.path)
                    await slots.acquire()
                    task = group.create_task(self._send_part(
                        transfer, functools.partial(PartBody, source, descriptor, start, end),
                        key, upload_id, number, sha256, md5, where, sent))
                    task.add_done_callback(lambda _: slots.release())
                    if source.complete and end >= source.size:
                        break
                    number += 1
        except BaseExceptionGroup as errors:
            raise _first_error(errors) from None
        return [sent[number] for number in sorted(sent)]

    async def _send_part(
        self, transfer: Any, body: Callable[[], PartBody], key: str, upload_id: str,
        number: int, sha256: bytes, md5: bytes | None, where: str,
        sent: dict[int, dict[str, Any]],
    ) -> None:
        """One part, retried on its own with a fresh body."""
        options: dict[str, Any] = ({"ChecksumSHA256": _b64(sha256)} if md5 is None
                                   else {"ContentMD5": _b64(md5)})
        failures = 0
        while True:
            attempt = body()
            try:
                answer = await transfer.upload_part(
                    Bucket=self.config.bucket, Key=key, UploadId=upload_id, PartNumber=number,
                    Body=attempt, ContentLength=len(attempt), **options)
            except Exception as error:
                if attempt.error is not None:
                    raise attempt.error from None
                failures += 1
                if not is_transient(error, part=True) or failures >= self.part_attempts:
                    raise drive_error(error, f"uploading part {number} of {where}") from None
                log.info("s3.part_retry", drive=self.label, key=key, part=number,
                         attempt=failures, error=describe(error))
                await self.sleep(self._backoff(failures))
                continue
            part: dict[str, Any] = {"PartNumber": number, "ETag": answer["ETag"]}
            if md5 is None:
                part["ChecksumSHA256"] = options["ChecksumSHA256"]
            sent[number] = part
            return

    async def _complete(
        self, key: str, upload_id: str, where: str, parts: list[dict[str, Any]], upload: str
    ) -> None:
        client = await self.client()
        try:
            await client.complete_multipart_upload(
                Bucket=self.config.bucket, Key=key, UploadId=upload_id,
                MultipartUpload={"Parts": parts}, **self._conditions())
        except Exception as error:
            # No answer, or a resent completion (botocore retries it) refused because the
            # first one went through: the object may be there all the same.
            if await self._landed(key, upload):
                return
            if is_precondition_failed(error):
                raise already_exists(where) from None
            raise drive_error(error, f"completing the upload of {where}") from None

    async def _landed(self, key: str, upload: str) -> bool:
        """Whether ``key`` holds this upload's object (best effort)."""
        with contextlib.suppress(Exception):
            client = await self.client()
            head = await client.head_object(Bucket=self.config.bucket, Key=key)
            return bool((head.get("Metadata") or {}).get(UPLOAD_METADATA) == upload)
        return False

    async def _delete_if_ours(self, key: str, upload: str) -> None:
        """Delete ``key`` if it holds this upload's object (best effort)."""
        if await self._landed(key, upload):
            with contextlib.suppress(Exception):
                client = await self.client()
                await client.delete_object(Bucket=self.config.bucket, Key=key)

    # ------------------------------------------------------------------ aborts

    async def _shielded(self, work: Coroutine[Any, Any, Any]) -> None:
        """Run clean-up work to its end even if the calling task is cancelled meanwhile
        (a second cancellation still interrupts the caller; ``aclose`` waits for the work)."""
        task = asyncio.ensure_future(work)
        self._cleanups.add(task)
        task.add_done_callback(self._cleanups.discard)
        await asyncio.shield(task)

    async def _abort(self, key: str, upload_id: str) -> None:
        client = await self.client()
        try:
            await client.abort_multipart_upload(
                Bucket=self.config.bucket, Key=key, UploadId=upload_id)
        except ClientError as error:
            if status(error) != 404:  # NoSuchUpload: already gone
                self._unaborted.append((key, upload_id))
        except Exception:
            self._unaborted.append((key, upload_id))

    async def _abort_leftovers(self) -> None:
        """Retry the aborts that failed earlier (best effort)."""
        leftovers, self._unaborted = self._unaborted, []
        for key, upload_id in leftovers:
            await self._abort(key, upload_id)

    async def sweep(self, is_stale: Callable[[str], bool]) -> list[str]:
        """Abort the unfinished multipart uploads under this host's prefix whose name
        ``is_stale`` (and that are not running here): those of dead processes."""
        client = await self.client()
        prefix = f"{self.prefix}/" if self.prefix else ""
        aborted: list[str] = []
        markers: dict[str, str] = {}
        while True:
            try:
                answer = await client.list_multipart_uploads(
                    Bucket=self.config.bucket, Prefix=prefix, **markers)
            except Exception as error:
                raise drive_error(error, f"listing the unfinished uploads of "
                                  f"{self._where(prefix)}", on_bucket=True) from None
            for upload in answer.get("Uploads") or ():
                key, upload_id = str(upload["Key"]), str(upload["UploadId"])
                name = key[len(prefix):]
                if not name or "/" in name or upload_id in self._active or not is_stale(name):
                    continue
                try:
                    await client.abort_multipart_upload(
                        Bucket=self.config.bucket, Key=key, UploadId=upload_id)
                except ClientError as error:
                    if status(error) != 404:
                        raise drive_error(error, f"aborting the upload of {self._where(key)}"
                                          ) from None
                aborted.append(f"{key} (multipart upload {upload_id})")
            if not answer.get("IsTruncated"):
                return aborted
            markers = {"KeyMarker": answer["NextKeyMarker"],
                       "UploadIdMarker": answer["NextUploadIdMarker"]}

    # ------------------------------------------------------------------ verify

    async def _verify(
        self, key: str, where: str, size: int, sha256: str, upload: str, *,
        checksum: str | None, parts: int | None,
    ) -> None:
        """What HeadObject reports must be what was sent (``parts`` None: a single PUT)."""
        try:
            head = await self._head(await self.client(), key, where)
        except asyncio.CancelledError:
            await self._shielded(self._delete_if_ours(key, upload))
            raise
        if head is None:
            raise VerificationError(f"{where} is not there after its upload")
        problems = []
        metadata = head.get("Metadata") or {}
        if metadata.get(UPLOAD_METADATA) != upload:
            raise VerificationError(f"{where} is not the object this upload stored (another "
                                    "writer replaced it?)")
        if head.get("ContentLength") != size:
            problems.append(f"holds {head.get('ContentLength')} bytes, expected {size}")
        if parts is None and metadata.get(SHA256_METADATA) != sha256:
            problems.append(f"its sha256 metadata is {metadata.get(SHA256_METADATA)!r}, "
                            f"expected {sha256[:12]}…")
        reported = head.get("ChecksumSHA256")
        if reported and checksum and reported.split("-")[0] != checksum:
            problems.append(f"reports ChecksumSHA256 {reported}, expected {checksum}")
        etag = str(head.get("ETag") or "").strip('"')
        if parts is not None and "-" in etag and etag.rsplit("-", 1)[1] != str(parts):
            problems.append(f"has ETag {etag}, expected {parts} parts")
        if problems:
            await self._shielded(self._delete_if_ours(key, upload))
            raise VerificationError(f"{where} " + "; ".join(problems))

    # ------------------------------------------------------------------ the rest

    async def download(
        self, path: str, *, start: int = 0, end: int | None = None
    ) -> AsyncIterator[bytes]:
        if end is not None and end <= start:
            return
        where = self._where(path)
        client = await self.client()
        options: dict[str, Any] = {}
        if start or end is not None:
            options["Range"] = f"bytes={start}-{'' if end is None else end - 1}"
        try:
            answer = await client.get_object(Bucket=self.config.bucket, Key=path, **options)
        except ClientError as error:
            if code(error) == "InvalidRange" or status(error) == 416:
                return  # start is past the end: nothing to send
            if is_not_found(error) and code(error) != "NoSuchBucket":
                raise DriveError(f"{where} does not exist", retryable=False) from None
            raise drive_error(error, f"downloading {where}") from None
        except Exception as error:
            raise drive_error(error, f"downloading {where}") from None
        try:
            async with answer["Body"] as body:
                while block := await body.content.read(DOWNLOAD_BLOCK):
                    yield block
        except (aiohttp.ClientError, OSError, TimeoutError, BotoCoreError) as error:
            raise drive_error(error, f"downloading {where}") from None

    async def size(self, path: str) -> int | None:
        client = await self.client()
        try:
            head = await client.head_object(Bucket=self.config.bucket, Key=path)
        except Exception as error:
            if is_not_found(error):
                return None
            raise drive_error(error, f"reading the size of {self._where(path)}") from None
        return int(head["ContentLength"])

    async def delete(self, path: str) -> None:
        client = await self.client()
        try:
            await client.delete_object(Bucket=self.config.bucket, Key=path)
        except ClientError as error:
            if code(error) != "NoSuchBucket" and is_not_found(error):
                return
            raise drive_error(error, f"deleting {self._where(path)}") from None
        except Exception as error:
            raise drive_error(error, f"deleting {self._where(path)}") from None

    async def list_files(self, *, all_hosts: bool = False) -> list[RemoteFile]:
        """ListObjectsV2, 1,000 keys a page: this host's prefix (its direct children), or
        with ``all_hosts`` everything under the part before ``{host}``, kept where it
        sits exactly at ``<before>/<host>/<after>/<name>``."""
        found: list[RemoteFile] = []
        if all_hosts and self.location.has_host:
            base = "/".join(self.location.before)
            async for key, size in self._objects(f"{base}/" if base else "", delimiter=None):
                *folder, name = key.split("/")
                host = self.location.host_of(folder)
                if host is not None and name:
                    found.append(RemoteFile(name=name, path=key, size=size, host=host))
            return found
        prefix = f"{self.prefix}/" if self.prefix else ""
        host = self.host if self.location.has_host else None
        async for key, size in self._objects(prefix, delimiter="/"):
            name = key[len(prefix):]
            if name:
                found.append(RemoteFile(name=name, path=key, size=size, host=host))
        return found

    async def _objects(self, prefix: str, *, delimiter: str | None
                       ) -> AsyncIterator[tuple[str, int]]:
        client = await self.client()
        options: dict[str, Any] = {"Delimiter": delimiter} if delimiter else {}
        while True:
            try:
                answer = await client.list_objects_v2(
                    Bucket=self.config.bucket, Prefix=prefix, **options)
            except Exception as error:
                raise drive_error(error, f"listing {self._where(prefix)}", on_bucket=True
                                  ) from None
            for item in answer.get("Contents") or ():
                yield str(item["Key"]), int(item["Size"])
            token = answer.get("NextContinuationToken")
            if not answer.get("IsTruncated") or not token:
                return
            options["ContinuationToken"] = token

    async def health(self) -> None:
        bucket = self.config.bucket
        try:
            client = await self.client("health")
            async with asyncio.timeout(self.health_timeout):
                await client.head_bucket(Bucket=bucket)
        except TimeoutError:
            raise HealthError(
                f"bucket {bucket}: no answer within {self.health_timeout:g} s") from None
        except Exception as error:
            raise HealthError(
                str(drive_error(error, f"bucket {bucket}: head bucket", on_bucket=True))) from None


def _check_whole(source: GrowingFile, digests: PartDigests, size: int, sha256: str) -> None:
    """What was read and hashed is the whole file the writer reported."""
    if digests.hashed != size or digests.whole.hexdigest() != sha256:
        raise VerificationError(
            f"{source.path} does not match what its writer reported: expected {size} bytes "
            f"with SHA-256 {sha256[:12]}…, read {digests.hashed} bytes with "
            f"{digests.whole.hexdigest()[:12]}…", retryable=False)

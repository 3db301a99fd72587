"""An S3 bucket (AWS or any S3-compatible service) through aioboto3.

Uploads
    A file of at most one part (8 MiB) is sent with one ``PutObject``; a bigger one
    with a multipart upload whose parts are read from the file in a thread, one part
    ahead of the part being sent, so memory stays at two or three parts whatever the
    file size (about 25 MiB of Python allocations for 8 MiB parts). The part size is
    8 MiB, or larger when needed so that a file of up to 5 TiB fits in S3's 10,000
    parts.

    Each part carries its own SHA-256 (``ChecksumSHA256``, checked by S3 on arrival)
    unless ``checksums: false``; the whole file's SHA-256 is computed while reading
    and stored as object metadata (``x-amz-meta-sha256``), because S3 keeps no
    whole-object SHA-256 for a multipart object. Nothing is completed unless the
    bytes read match the expected size and SHA-256.

    After the upload, ``HeadObject`` must report the expected size and metadata (and,
    when the service reports one, the expected ``ChecksumSHA256``: the file's own for
    a single PUT, the composite of the part checksums for a multipart object).

Never overwriting
    The key must not exist before the upload (``HeadObject`` → 404), and the final
    request carries ``If-None-Match: *`` (``conditional_writes``), so that a
    concurrent writer cannot be overwritten on services that support conditional
    writes (AWS S3 since August 2024; moto). ``conditional_writes: false`` leaves the
    header out for services that reject it.

Nothing left behind
    A multipart upload that fails, or whose task is cancelled, is aborted in a
    shielded task; when the final request (PutObject, CompleteMultipartUpload) got no
    answer, an object that carries this upload's SHA-256 is deleted, so that a retry
    under the same name is not refused. When the abort itself fails (the service is
    unreachable), the upload id is remembered and the abort retried before the next
    upload and at ``aclose()``. (A lifecycle rule ``AbortIncompleteMultipartUpload``
    on the bucket is still a good idea, for a process that dies mid-upload.)

Clients
    One client for uploads, downloads and deletes (retries in botocore's standard
    mode, ``request_attempts`` attempts), and one for health checks (short connect /
    read timeouts, at most two attempts); both created at first use and closed by
    ``aclose()``. Without ``access_key`` / ``secret_key`` botocore's default
    credential chain applies (environment, shared files, instance metadata).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import math
from collections.abc import AsyncIterator, Coroutine
from contextlib import AsyncExitStack
from pathlib import Path
from typing import IO, Any

import aioboto3
import aiohttp
from botocore.config import Config as BotoConfig
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    CredentialRetrievalError,
    HTTPClientError,
    NoCredentialsError,
    ParamValidationError,
    PartialCredentialsError,
)
from botocore.exceptions import (
    ConnectionError as BotoConnectionError,
)

from ..config import S3Drive
from ..errors import DriveError, HealthError, VerificationError
from .base import Drive, StoredFile, open_for_upload

MiB = 1024 * 1024
#: The smallest part this drive sends (S3's own minimum is 5 MiB).
MIN_PART_SIZE = 8 * MiB
#: S3's limits.
MAX_PARTS = 10_000
MAX_OBJECT_SIZE = 5 * 1024**4
#: Download blocks.
DOWNLOAD_BLOCK = MiB
#: The metadata key holding the whole file's SHA-256 (sent as ``x-amz-meta-sha256``).
SHA256_METADATA = "sha256"

_RETRYABLE_CODES = frozenset({
    "InternalError", "ServiceUnavailable", "SlowDown", "RequestTimeout", "RequestTimeTooSkewed",
    "Throttling", "ThrottlingException", "RequestLimitExceeded", "OperationAborted",
})


def part_size_for(size: int) -> int:
    """The part size for a file: at least 8 MiB, whole MiBs, at most 10,000 parts."""
    needed = math.ceil(size / MAX_PARTS) if size > 0 else 0
    return max(MIN_PART_SIZE, math.ceil(needed / MiB) * MiB)


def _b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode("ascii")


def _status(error: ClientError) -> int:
    return int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)


def _code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code") or "")


def _is_not_found(error: BaseException) -> bool:
    return isinstance(error, ClientError) and (
        _status(error) == 404 or _code(error) in ("404", "NoSuchKey", "NotFound")
    )


def _describe(error: BaseException) -> str:
    if isinstance(error, ClientError):
        message = error.response.get("Error", {}).get("Message") or ""
        text = f"{_code(error) or 'HTTP ' + str(_status(error))}"
        return f"{text}: {message}" if message and message != _code(error) else text
    return str(error) or type(error).__name__


def drive_error(error: BaseException, doing: str, *, on_bucket: bool = False) -> DriveError:
    """A botocore / transport failure as a DriveError, retryable when retrying may help.

    ``on_bucket``: the request addressed the bucket itself, so a bare 404 means no bucket.
    """
    if isinstance(error, DriveError):
        return error
    if isinstance(error, ClientError):
        status, code = _status(error), _code(error)
        retryable = status >= 500 or status in (408, 429) or code in _RETRYABLE_CODES
        if code == "NoSuchBucket" or (status == 404 and on_bucket):
            detail = "the bucket does not exist"
        elif status == 403 or code in ("AccessDenied", "InvalidAccessKeyId",
                                       "SignatureDoesNotMatch"):
            detail = f"access denied ({_describe(error)})"
        else:
            detail = _describe(error)
        return DriveError(f"{doing} failed: {detail}", retryable=retryable)
    if isinstance(error, (NoCredentialsError, PartialCredentialsError, CredentialRetrievalError,
                          ParamValidationError)):
        return DriveError(f"{doing} failed: {error}", retryable=False)
    if isinstance(error, (BotoConnectionError, HTTPClientError, BotoCoreError, aiohttp.ClientError,
                          OSError, TimeoutError)):
        return DriveError(f"{doing} failed: {_describe(error)}", retryable=True)
    return DriveError(f"{doing} failed: {type(error).__name__}: {error}", retryable=True)


def _retrieve(task: asyncio.Future[Any]) -> None:
    """Mark a background task's outcome as seen (no "exception never retrieved")."""
    if not task.cancelled():
        task.exception()


class _PartReader:
    """Reads a file part by part (in a thread), hashing the whole file on the way."""

    def __init__(self, handle: IO[bytes]) -> None:
        self.handle = handle
        self.digest = hashlib.sha256()
        self.read_bytes = 0

    def read(self, size: int) -> bytes:
        data = self.handle.read(size)
        self.digest.update(data)
        self.read_bytes += len(data)
        return data

    def read_part(self, size: int, *, last: bool = False) -> tuple[bytes, bytes]:
        """The next part and its own SHA-256 (``last``: one byte more is asked for, so
        that a file that grew is noticed; that byte is part of the data returned)."""
        data = self.read(size + 1 if last else size)
        return data, hashlib.sha256(data).digest()


class S3Bucket(Drive[S3Drive]):
    provider = "s3"

    #: Attempts per request in botocore's standard retry mode (uploads, downloads, deletes).
    request_attempts: int = 3
    #: Seconds: health checks must answer in seconds.
    health_timeout: float = 5.0
    connect_timeout: float = 10.0
    read_timeout: float = 60.0

    def __init__(self, config: S3Drive, host: str = "localhost", *,
                 request_attempts: int | None = None) -> None:
        super().__init__(config, host)
        if request_attempts is not None:
            self.request_attempts = request_attempts
        self._stack: AsyncExitStack | None = None
        self._clients: dict[str, Any] = {}
        self._client_lock = asyncio.Lock()
        #: Multipart uploads whose abort failed: (key, upload id), aborted again later.
        self._unaborted: list[tuple[str, str]] = []
        self._cleanups: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------------ plumbing

    @property
    def prefix(self) -> str:
        return self.config.prefix.replace("{host}", self.host).strip("/")

    def key_for(self, name: str) -> str:
        return f"{self.prefix}/{name}" if self.prefix else name

    def secrets(self) -> tuple[str, ...]:
        return tuple(
            secret.get_secret_value()
            for secret in (self.config.access_key, self.config.secret_key)
            if secret is not None and secret.get_secret_value()
        )

    def _boto_config(self, *, health: bool) -> BotoConfig:
        options: dict[str, Any] = {
            "s3": {"addressing_style": "path" if self.config.force_path_style else "auto"},
            "connect_timeout": 3.0 if health else self.connect_timeout,
            "read_timeout": self.health_timeout if health else self.read_timeout,
            "retries": {"mode": "standard",
                        "total_max_attempts": 2 if health else self.request_attempts},
        }
        if not self.config.checksums:
            # S3-compatible services without flexible checksums: send none unless required.
            options["request_checksum_calculation"] = "when_required"
            options["response_checksum_validation"] = "when_required"
        return BotoConfig(**options)

    async def client(self, kind: str = "main") -> Any:
        """The drive's aioboto3 S3 client (``main``) or its health-check client (``health``),
        created at first use and kept until ``aclose()``."""
        client = self._clients.get(kind)
        if client is not None:
            return client
        async with self._client_lock:
            if kind not in self._clients:
                if self._stack is None:
                    self._stack = AsyncExitStack()
                config = self.config
                session = aioboto3.Session(
                    aws_access_key_id=(config.access_key.get_secret_value()
                                       if config.access_key else None),
                    aws_secret_access_key=(config.secret_key.get_secret_value()
                                           if config.secret_key else None),
                    region_name=config.region or None,
                )
                self._clients[kind] = await self._stack.enter_async_context(
                    session.client(
                        "s3",
                        endpoint_url=config.endpoint or None,
                        config=self._boto_config(health=kind == "health"),
                    )
                )
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

    # ------------------------------------------------------------------ upload

    async def upload(
        self, source: Path, name: str, *, size: int, sha256: str, adopt: bool = False
    ) -> StoredFile:
        if not name or "/" in name or name in (".", ".."):
            raise DriveError(f"invalid file name {name!r}", retryable=False)
        if size > MAX_OBJECT_SIZE:
            raise DriveError(f"{source} is larger than S3's 5 TiB object limit", retryable=False)
        key = self.key_for(name)
        where = f"s3://{self.config.bucket}/{key}"
        client = await self.client()
        if self._unaborted:
            await self._abort_leftovers()
        try:
            await client.head_object(Bucket=self.config.bucket, Key=key)
        except ClientError as error:
            if not _is_not_found(error):
                raise drive_error(error, f"checking {where}") from None
        except Exception as error:
            raise drive_error(error, f"checking {where}") from None
        else:
            raise DriveError(f"{where} already exists: not overwritten", retryable=False)

        handle = await open_for_upload(source)
        try:
            reader = _PartReader(handle)
            part_size = part_size_for(size)
            if size <= part_size:
                expected_checksum = await self._put(client, reader, key, where, size, sha256)
            else:
                expected_checksum = await self._multipart(
                    client, reader, key, where, size, sha256, part_size)
        finally:
            await asyncio.to_thread(handle.close)
        try:
            await self._verify(client, key, where, size, sha256, expected_checksum)
        except asyncio.CancelledError:
            # Interrupted after the object was stored: remove it, so that a retry under
            # the same name does not find it in its way.
            await self._shielded(self._delete_quietly(key))
            raise
        return StoredFile(path=key, size=size)

    async def _delete_if_ours(self, key: str, sha256: str) -> None:
        """Delete ``key`` if it holds this upload (its sha256 metadata), best effort."""
        with contextlib.suppress(Exception):
            client = await self.client()
            head = await client.head_object(Bucket=self.config.bucket, Key=key)
            if (head.get("Metadata") or {}).get(SHA256_METADATA) == sha256:
                await client.delete_object(Bucket=self.config.bucket, Key=key)

    async def _delete_quietly(self, key: str) -> None:
        with contextlib.suppress(Exception):
            client = await self.client()
            await client.delete_object(Bucket=self.config.bucket, Key=key)

    def _check_read(self, reader: _PartReader, source: str, size: int, sha256: str) -> None:
        if reader.read_bytes != size or reader.digest.hexdigest() != sha256:
            raise VerificationError(
                f"{source} changed: expected {size} bytes with SHA-256 {sha256[:12]}…, "
                f"read {reader.read_bytes} bytes with {reader.digest.hexdigest()[:12]}…",
                retryable=False,
            )

    def _conditions(self) -> dict[str, str]:
        return {"IfNoneMatch": "*"} if self.config.conditional_writes else {}

    async def _put(
        self, client: Any, reader: _PartReader, key: str, where: str, size: int, sha256: str
    ) -> str | None:
        body, body_sha256 = await asyncio.to_thread(reader.read_part, size, last=True)
        self._check_read(reader, str(reader.handle.name), size, sha256)
        options: dict[str, Any] = {}
        checksum = None
        if self.config.checksums:
            checksum = _b64(body_sha256)
            options["ChecksumSHA256"] = checksum
        try:
            await client.put_object(
                Bucket=self.config.bucket, Key=key, Body=body, ContentLength=size,
                Metadata={SHA256_METADATA: sha256}, **options, **self._conditions())
        except ClientError as error:
            if _status(error) == 412 or _code(error) == "PreconditionFailed":
                raise DriveError(f"{where} already exists: not overwritten",
                                 retryable=False) from None
            raise drive_error(error, f"uploading {where}") from None
        except BaseException as error:
            # No answer: the object may have been stored all the same.
            await self._shielded(self._delete_if_ours(key, sha256))
            if isinstance(error, Exception):
                raise drive_error(error, f"uploading {where}") from None
            raise
        return checksum

    async def _multipart(
        self, client: Any, reader: _PartReader, key: str, where: str, size: int, sha256: str,
        part_size: int,
    ) -> str | None:
        bucket = self.config.bucket
        options: dict[str, Any] = {}
        if self.config.checksums:
            options["ChecksumAlgorithm"] = "SHA256"
        try:
            created = await client.create_multipart_upload(
                Bucket=bucket, Key=key, Metadata={SHA256_METADATA: sha256}, **options)
        except Exception as error:
            raise drive_error(error, f"starting the upload of {where}") from None
        upload_id: str = created["UploadId"]
        completing = False
        try:
            parts: list[dict[str, Any]] = []
            part_digests: list[bytes] = []
            count = math.ceil(size / part_size)

            def read_ahead(number: int) -> asyncio.Future[tuple[bytes, bytes]]:
                return asyncio.ensure_future(asyncio.to_thread(
                    reader.read_part, part_size, last=number == count))

            next_read = read_ahead(1)
            try:
                for number in range(1, count + 1):
                    data, digest = await next_read
                    if number < count:
                        next_read = read_ahead(number + 1)
                    else:
                        self._check_read(reader, str(reader.handle.name), size, sha256)
                    if not data:
                        break  # the file shrank: caught by the check after the last part
                    part: dict[str, Any] = {"PartNumber": number}
                    part_options: dict[str, Any] = {}
                    if self.config.checksums:
                        part_digests.append(digest)
                        part["ChecksumSHA256"] = part_options["ChecksumSHA256"] = _b64(digest)
                    answer = await client.upload_part(
                        Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=number,
                        Body=data, ContentLength=len(data), **part_options)
                    part["ETag"] = answer["ETag"]
                    parts.append(part)
                    del data
            finally:
                # A read still running (an error cut the loop short) is not waited for.
                next_read.add_done_callback(_retrieve)
                next_read.cancel()
            self._check_read(reader, str(reader.handle.name), size, sha256)
            completing = True
            try:
                await client.complete_multipart_upload(
                    Bucket=bucket, Key=key, UploadId=upload_id,
                    MultipartUpload={"Parts": parts}, **self._conditions())
            except ClientError as error:
                if _status(error) == 412 or _code(error) == "PreconditionFailed":
                    raise DriveError(f"{where} already exists: not overwritten",
                                     retryable=False) from None
                raise
        except BaseException as error:
            await self._shielded_abort(key, upload_id)
            if completing and not isinstance(error, (ClientError, DriveError)):
                # No answer to the completion: the object may exist all the same.
                await self._shielded(self._delete_if_ours(key, sha256))
            if isinstance(error, Exception):
                raise drive_error(error, f"uploading {where}") from None
            raise
        if not part_digests:
            return None
        composite = _b64(hashlib.sha256(b"".join(part_digests)).digest())
        return f"{composite}-{len(part_digests)}"

    # ------------------------------------------------------------------ aborts

    async def _shielded_abort(self, key: str, upload_id: str) -> None:
        """Abort a multipart upload; survives the cancellation of the calling task."""
        await self._shielded(self._abort(key, upload_id))

    async def _shielded(self, work: Coroutine[Any, Any, None]) -> None:
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
            if _status(error) != 404:  # NoSuchUpload: already gone
                self._unaborted.append((key, upload_id))
        except Exception:
            self._unaborted.append((key, upload_id))

    async def _abort_leftovers(self) -> None:
        """Retry the aborts that failed earlier (best effort)."""
        leftovers, self._unaborted = self._unaborted, []
        for key, upload_id in leftovers:
            await self._abort(key, upload_id)

    # ------------------------------------------------------------------ verify

    async def _verify(
        self, client: Any, key: str, where: str, size: int, sha256: str, checksum: str | None
    ) -> None:
        try:
            head = await client.head_object(
                Bucket=self.config.bucket, Key=key,
                **({"ChecksumMode": "ENABLED"} if self.config.checksums else {}))
        except Exception as error:
            raise drive_error(error, f"verifying {where}") from None
        problems = []
        stored_size = head.get("ContentLength")
        if stored_size != size:
            problems.append(f"holds {stored_size} bytes, expected {size}")
        stored_sha256 = (head.get("Metadata") or {}).get(SHA256_METADATA)
        if stored_sha256 != sha256:
            problems.append(f"its sha256 metadata is {stored_sha256!r}, expected {sha256[:12]}…")
        reported = head.get("ChecksumSHA256")
        if reported and checksum:
            # A composite checksum is reported as "<base64>-<parts>" by AWS, bare by some others.
            if reported.split("-")[0] != checksum.split("-")[0]:
                problems.append(f"reports ChecksumSHA256 {reported}, expected {checksum}")
        if problems:
            await self._delete_quietly(key)
            raise VerificationError(f"{where} " + "; ".join(problems))

    # ------------------------------------------------------------------ the rest

    async def download(
        self, path: str, *, start: int = 0, end: int | None = None
    ) -> AsyncIterator[bytes]:
        if end is not None and end <= start:
            return
        where = f"s3://{self.config.bucket}/{path}"
        client = await self.client()
        options: dict[str, Any] = {}
        if start or end is not None:
            options["Range"] = f"bytes={start}-{'' if end is None else end - 1}"
        try:
            answer = await client.get_object(Bucket=self.config.bucket, Key=path, **options)
        except ClientError as error:
            if _code(error) == "InvalidRange" or _status(error) == 416:
                return  # start is past the end: nothing to send
            if _is_not_found(error) and _code(error) != "NoSuchBucket":
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
            if _is_not_found(error):
                return None
            raise drive_error(error, f"reading the size of s3://{self.config.bucket}/{path}"
                              ) from None
        return int(head["ContentLength"])

    async def delete(self, path: str) -> None:
        client = await self.client()
        try:
            await client.delete_object(Bucket=self.config.bucket, Key=path)
        except ClientError as error:
            if _code(error) != "NoSuchBucket" and _is_not_found(error):
                return
            raise drive_error(error, f"deleting s3://{self.config.bucket}/{path}") from None
        except Exception as error:
            raise drive_error(error, f"deleting s3://{self.config.bucket}/{path}") from None

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

"""What botocore's and aiohttp's failures mean for an S3 drive: DriveErrors, retryable or not."""

from __future__ import annotations

import asyncio

import aiohttp
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

from ..errors import DriveError

RETRYABLE_CODES = frozenset({
    "InternalError", "ServiceUnavailable", "SlowDown", "RequestTimeout", "RequestTimeTooSkewed",
    "Throttling", "ThrottlingException", "RequestLimitExceeded", "OperationAborted",
})
#: Also worth another try for one part: its bytes were damaged on the way.
PART_RETRYABLE_CODES = RETRYABLE_CODES | {"BadDigest", "InvalidDigest", "XAmzContentSHA256Mismatch"}


def status(error: ClientError) -> int:
    return int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)


def code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code") or "")


def is_not_found(error: BaseException) -> bool:
    return isinstance(error, ClientError) and (
        status(error) == 404 or code(error) in ("404", "NoSuchKey", "NotFound")
    )


def is_precondition_failed(error: BaseException) -> bool:
    """``If-None-Match: *`` refused: the key exists."""
    return isinstance(error, ClientError) and (
        status(error) == 412 or code(error) == "PreconditionFailed")


def describe(error: BaseException) -> str:
    if isinstance(error, ClientError):
        message = error.response.get("Error", {}).get("Message") or ""
        text = f"{code(error) or 'HTTP ' + str(status(error))}"
        return f"{text}: {message}" if message and message != code(error) else text
    return str(error) or type(error).__name__


def is_transient(error: BaseException, *, part: bool = False) -> bool:
    """Whether sending the same request again may succeed: throttling, 5xx, a dropped
    connection, a timeout (for a part also damaged bytes)."""
    if isinstance(error, ClientError):
        codes = PART_RETRYABLE_CODES if part else RETRYABLE_CODES
        return status(error) >= 500 or status(error) in (408, 429) or code(error) in codes
    if isinstance(error, (NoCredentialsError, PartialCredentialsError, CredentialRetrievalError,
                          ParamValidationError, DriveError)):
        return False
    return isinstance(error, (BotoConnectionError, HTTPClientError, BotoCoreError,
                              aiohttp.ClientError, OSError, TimeoutError,
                              asyncio.IncompleteReadError))


def drive_error(error: BaseException, doing: str, *, on_bucket: bool = False) -> DriveError:
    """A botocore / transport failure as a DriveError, retryable when retrying may help.

    ``on_bucket``: the request addressed the bucket itself, so a bare 404 means no bucket.
    """
    if isinstance(error, DriveError):
        return error
    if isinstance(error, ClientError):
        retryable = is_transient(error)
        if code(error) == "NoSuchBucket" or (status(error) == 404 and on_bucket):
            detail = "the bucket does not exist"
        elif status(error) == 403 or code(error) in ("AccessDenied", "InvalidAccessKeyId",
                                                     "SignatureDoesNotMatch"):
            detail = f"access denied ({describe(error)})"
        else:
            detail = describe(error)
        return DriveError(f"{doing} failed: {detail}", retryable=retryable)
    if isinstance(error, (NoCredentialsError, PartialCredentialsError, CredentialRetrievalError,
                          ParamValidationError)):
        return DriveError(f"{doing} failed: {error}", retryable=False)
    if isinstance(error, (BotoConnectionError, HTTPClientError, BotoCoreError, aiohttp.ClientError,
                          OSError, TimeoutError)):
        return DriveError(f"{doing} failed: {describe(error)}", retryable=True)
    return DriveError(f"{doing} failed: {type(error).__name__}: {error}", retryable=True)

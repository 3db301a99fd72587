"""Upload retries: flaky drives recover, broken ones fail alone, backoff grows with jitter.

The drives are local folders with injected failures (test-only subclasses put into
the runtime's services, as the pipeline tests do); ``services.sleep`` records the
backoff delays instead of waiting them out.
"""

from __future__ import annotations

import asyncio
import statistics
from pathlib import Path
from typing import Any

import pytest

from backupmand.drives.base import StoredFile
from backupmand.drives.local import LocalFolder
from backupmand.errors import DriveError
from backupmand.models import Status
from backupmand.pipeline import INTERRUPTED, backoff
from tests.faults.support import sha256


class FlakyFolder(LocalFolder):
    """Fails its first ``failures`` uploads with ``error``, then works."""

    def __init__(self, config: Any, failures: int, error: BaseException | None = None) -> None:
        super().__init__(config)
        self.failures = failures
        self.error = error or DriveError("injected: connection reset by peer")
        self.calls = 0

    async def upload(self, source: Path, name: str, *, size: int, sha256: str,
                     adopt: bool = False) -> StoredFile:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error
        return await super().upload(source, name, size=size, sha256=sha256, adopt=adopt)


class BrokenFolder(FlakyFolder):
    def __init__(self, config: Any, error: BaseException | None = None) -> None:
        super().__init__(config, failures=10**9, error=error)


def two_drives(tmp_path: Path, **uploads: Any) -> dict[str, Any]:
    return {
        "drives": [{"provider": "local", "label": "steady", "folder": str(tmp_path / "steady")},
                   {"provider": "local", "label": "shaky", "folder": str(tmp_path / "shaky")}],
        "uploads": {"attempts": 4, "initial_backoff": 1.0, "max_backoff": 3.0, **uploads},
    }


class Sleeps:
    """A stand-in for asyncio.sleep that records what it was asked to wait."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


async def test_a_flaky_drive_finishes_after_retries(tmp_path, make_settings, open_runtime):
    settings = make_settings(**two_drives(tmp_path))
    async with open_runtime(settings) as runtime:
        shaky = FlakyFolder(settings.drive("shaky"), failures=3)
        runtime.services.drives["shaky"] = shaky
        sleeps = Sleeps()
        runtime.services.sleep = sleeps
        (backup,) = await runtime.start_backups()
        (final,) = await runtime.wait([backup.id])
    assert final.status is Status.FINISHED, final.error
    records = {record.drive: record for record in final.drive_files}
    assert records["shaky"].attempts == 4 and shaky.calls == 4
    assert records["steady"].attempts == 1
    assert records["shaky"].error is None
    for record in records.values():
        assert record.status is Status.FINISHED
        assert sha256(Path(record.path)) == final.sha256
    # Exponential, capped at max_backoff, jittered within the upper half of each step.
    assert len(sleeps.delays) == 3
    for delay, ceiling in zip(sleeps.delays, [1.0, 2.0, 3.0], strict=True):
        assert ceiling / 2 <= delay <= ceiling
    assert runtime.services.upload_failures["shaky"] == 3


async def test_a_broken_drive_fails_alone_with_its_error(tmp_path, make_settings, open_runtime):
    settings = make_settings(**two_drives(tmp_path, attempts=3))
    async with open_runtime(settings) as runtime:
        broken = BrokenFolder(settings.drive("shaky"), DriveError("injected: 503 Slow Down"))
        runtime.services.drives["shaky"] = broken
        runtime.services.sleep = Sleeps()
        (backup,) = await runtime.start_backups()
        (final,) = await runtime.wait([backup.id])
    assert final.status is Status.FAILED
    records = {record.drive: record for record in final.drive_files}
    assert records["steady"].status is Status.FINISHED
    assert sha256(Path(records["steady"].path)) == final.sha256
    assert records["shaky"].status is Status.FAILED
    assert records["shaky"].error == "injected: 503 Slow Down"
    assert records["shaky"].attempts == 3 == broken.calls
    assert records["shaky"].path is None
    assert "upload to shaky failed: injected: 503 Slow Down" in final.error
    assert final.dump_path and sha256(Path(final.dump_path)) == final.sha256, "kept for retry"
    assert not list((tmp_path / "shaky").glob("*")), "nothing half-written on the broken drive"


@pytest.mark.parametrize(("error", "expected_calls"), [
    (DriveError("injected: bucket does not exist", retryable=False), 1),
    (RuntimeError("injected: a client library's own error"), 3),
])
async def test_only_retryable_errors_are_retried(
    tmp_path, make_settings, open_runtime, error, expected_calls
):
    settings = make_settings(**two_drives(tmp_path, attempts=3))
    async with open_runtime(settings) as runtime:
        broken = BrokenFolder(settings.drive("shaky"), error)
        runtime.services.drives["shaky"] = broken
        runtime.services.sleep = Sleeps()
        (backup,) = await runtime.start_backups()
        (final,) = await runtime.wait([backup.id])
    assert final.status is Status.FAILED
    assert broken.calls == expected_calls
    assert final.drive_file("shaky").error == str(error)


async def test_a_retried_backup_uploads_only_what_failed_and_counts_attempts(
    tmp_path, make_settings, open_runtime
):
    settings = make_settings(**two_drives(tmp_path, attempts=2))
    async with open_runtime(settings) as runtime:
        shaky = FlakyFolder(settings.drive("shaky"), failures=3)
        steady = FlakyFolder(settings.drive("steady"), failures=0)
        runtime.services.drives.update(shaky=shaky, steady=steady)
        runtime.services.sleep = Sleeps()
        (backup,) = await runtime.start_backups()
        (failed,) = await runtime.wait([backup.id])
        assert failed.status is Status.FAILED and failed.drive_file("shaky").attempts == 2
        await runtime.retry(backup.id)
        (final,) = await runtime.wait([backup.id])
    assert final.status is Status.FINISHED, final.error
    assert final.drive_file("shaky").attempts == 4, "attempts add up across retries"
    assert final.drive_file("steady").attempts == 1 and steady.calls == 1, "not uploaded twice"
    assert final.dump_path is None and not list((tmp_path / "dumps").iterdir())


async def test_shutdown_during_a_backoff_records_the_upload_interrupted(
    tmp_path, make_settings, open_runtime
):
    settings = make_settings(**two_drives(tmp_path, initial_backoff=3600, max_backoff=3600))
    async with open_runtime(settings) as runtime:
        sleeping = asyncio.Event()

        async def sleep(delay: float) -> None:
            sleeping.set()
            await asyncio.sleep(delay)

        runtime.services.drives["shaky"] = BrokenFolder(settings.drive("shaky"))
        runtime.services.sleep = sleep
        (backup,) = await runtime.start_backups()
        await asyncio.wait_for(sleeping.wait(), 30)
        await runtime.stop(grace=0.05)
        (final,) = await runtime.wait([backup.id])
    assert final.status is Status.FAILED and final.error == INTERRUPTED
    assert final.drive_file("steady").status is Status.FINISHED
    assert final.drive_file("shaky").status is Status.FAILED
    assert final.dump_path and Path(final.dump_path).is_file(), "kept for retry"


# ---------------------------------------------------------------------------- backoff


def test_backoff_grows_exponentially_within_bounds() -> None:
    for attempt in range(1, 12):
        ceiling = min(60.0, 2.0 * 2 ** (attempt - 1))
        for _ in range(200):
            assert ceiling / 2 <= backoff(attempt, 2.0, 60.0) <= ceiling


def test_backoff_is_capped() -> None:
    assert max(backoff(attempt, 2.0, 60.0) for attempt in range(1, 100) for _ in range(10)) <= 60.0
    assert backoff(1000, 0.5, 5.0) <= 5.0  # no overflow for absurd attempt numbers


def test_backoff_has_jitter() -> None:
    delays = [backoff(3, 2.0, 60.0) for _ in range(500)]
    assert len(set(delays)) > 450, "concurrent retries must not fall into lockstep"
    assert 3.0 < statistics.mean(delays) < 7.0  # spread over [4, 8], not stuck at an end
    assert min(delays) < 4.5 and max(delays) > 7.5


def test_backoff_zero_means_no_wait() -> None:
    assert backoff(5, 0.0, 60.0) == 0.0

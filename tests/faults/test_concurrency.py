"""Several processes on one catalog: the daemon lock, per-source locks, and recovery
that never mistakes another live process's backup for a dead one."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

from backupmand.models import Backup, Status
from backupmand.notifiers.base import Notifier
from backupmand.pipeline import dump_name
from backupmand.runtime import RECOVERED
from tests.faults.support import check_finished_backup, dump_processes, wait_until
from tests.helpers import base_config, child_env, daemon, free_port, run_cli, write_config


def slow_and_quick(tmp_path: Path, slow_db: Path) -> Path:
    config = base_config(tmp_path)
    config["data_sources"].append({"provider": "sqlite", "label": "slow", "db_path": str(slow_db),
                                   "tmp_folder": str(tmp_path / "dumps")})
    return write_config(tmp_path / "config.yml", config)


def test_a_daemon_starting_beside_a_cli_run_leaves_its_backup_alone(
    tmp_path: Path, slow_db: Path
) -> None:
    config = slow_and_quick(tmp_path, slow_db)
    cli = subprocess.Popen(
        [sys.executable, "-m", "backupmand", "-c", str(config), "run", "--source", "slow"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env())
    try:
        # The CLI's dump is in flight (its record pending, its .work folder in use)...
        wait_until(lambda: dump_processes(str(tmp_path / "dumps")) or cli.poll() is not None)
        assert cli.poll() is None, cli.communicate()
        # ...when a daemon starts on the same catalog and runs its recovery.
        with daemon(config) as server:
            status, body = server.request("GET", "/api/backups?label=slow")
            assert status == 200
            (backup,) = body["Results"]
            assert backup["Status"] == "pending", backup
            status, body = server.request("POST", "/api/backups", {"Sources": ["slow"]})
            assert status == 409 and "in flight" in body["Error"], body
            stdout, stderr = cli.communicate(timeout=120)
            assert cli.returncode == 0, stdout + stderr
            status, final = server.request("GET", f"/api/backups/{backup['Id']}")
            check_finished_backup(final, {"disk": tmp_path / "drive"})
            assert final["Error"] is None
            assert RECOVERED not in server.log()
    finally:
        if cli.poll() is None:
            cli.kill()
            cli.communicate()


def test_one_daemon_per_catalog_and_the_cli_beside_it(tmp_path: Path, slow_db: Path) -> None:
    config = slow_and_quick(tmp_path, slow_db)
    with daemon(config) as server:
        second = run_cli("serve", "--port", str(free_port()), config=config, timeout=60)
        assert second.returncode != 0
        assert "another backupmand daemon" in second.stderr
        assert f"pid {server.process.pid}" in second.stderr
        assert server.process.poll() is None

        status, body = server.request("POST", "/api/backups", {"Sources": ["slow"]})
        assert status == 200, body
        # A CLI run beside the daemon: its own source runs, the busy one is refused.
        busy = run_cli("run", "--source", "slow", config=config)
        assert busy.returncode == 1 and "in flight" in busy.stderr, busy.stderr
        quick = run_cli("run", "--source", "app", config=config)
        assert quick.returncode == 0, quick.stdout + quick.stderr
        status, body = server.request("GET", "/api/backups?label=app")
        (app_backup,) = body["Results"]
        check_finished_backup(app_backup, {"disk": tmp_path / "drive"})
        status, body = server.request("GET", "/api/backups?label=slow")
        (slow,) = body["Results"]
        assert slow["Status"] != "failed", ("the daemon's own backup, untouched", slow)


# ---------------------------------------------------------------------------- in-process


async def test_recovery_never_fails_a_backup_that_ended_meanwhile(
    tmp_path, make_settings, open_runtime
):
    """Recovery lists pending backups, then takes each one's lock: the backup's own
    process may have finished it (and let go of the lock) in between."""
    settings = make_settings()
    async with open_runtime(settings) as runtime:
        (backup,) = await runtime.start_backups()
        stale = await runtime.catalog.pending_backups()  # read while it runs
        assert [b.id for b in stale] == [backup.id]
        (final,) = await runtime.wait([backup.id])
        assert final.status is Status.FINISHED

        async def stale_list() -> list:
            return stale

        runtime.catalog.pending_backups = stale_list  # type: ignore[method-assign]
        await runtime.recover()
        after = await runtime.catalog.get_backup(backup.id)
    assert after.status is Status.FINISHED and after.error is None


async def test_a_dump_published_just_before_a_crash_is_redone(
    tmp_path, make_settings, open_runtime
):
    """Killed between renaming the dump into place and recording it: recovery removes
    the unrecorded file, and a retry dumps again instead of refusing to overwrite."""
    settings = make_settings()
    dumps = tmp_path / "dumps"
    dumps.mkdir()
    async with open_runtime(settings, recover=False) as runtime:
        backup_id = "0123abcd-0000-4000-8000-000000000000"
        crashed = await runtime.catalog.create_backup(
            backup_id=backup_id, label="app", source_provider="sqlite",
            name=dump_name("app", backup_id, ".sqlite", "zstd"), compression="zstd", pid=1)
        (dumps / crashed.name).write_bytes(b"a complete dump nobody recorded")
        # A second one, failed by its own process after publishing (the catalog write
        # failed): no recovery involved, the retry must cope by itself.
        other_id = "4567abcd-0000-4000-8000-000000000000"
        failed = await runtime.catalog.create_backup(
            backup_id=other_id, label="app", source_provider="sqlite",
            name=dump_name("app", other_id, ".sqlite", "zstd"), compression="zstd", pid=1)
        await runtime.catalog.fail_backup(failed.id, "internal error: database is locked")
        (dumps / failed.name).write_bytes(b"another unrecorded dump")
    async with open_runtime(settings) as runtime:
        recovered = await runtime.catalog.get_backup(crashed.id)
        assert recovered.status is Status.FAILED and recovered.error == RECOVERED
        assert not (dumps / crashed.name).exists()
        for identifier in (crashed.id, failed.id):
            await runtime.retry(identifier)
            (final,) = await runtime.wait([identifier])
            assert final.status is Status.FINISHED, final.error
            stored = Path(final.drive_files[0].path)
            assert stored.read_bytes()[:4] == b"\x28\xb5\x2f\xfd", "a real zstd dump"
    assert list(dumps.iterdir()) == []


async def test_a_dump_left_behind_by_a_finished_backup_is_removed(
    tmp_path, make_settings, open_runtime
):
    """Killed between recording "finished" (DumpPath already null) and removing the
    local dump: the next start removes it."""
    settings = make_settings()
    async with open_runtime(settings) as runtime:
        (backup,) = await runtime.start_backups()
        (final,) = await runtime.wait([backup.id])
    assert final.status is Status.FINISHED and final.dump_path is None
    leftover = tmp_path / "dumps" / final.name
    leftover.write_bytes(Path(final.drive_files[0].path).read_bytes())
    async with open_runtime(settings):
        pass
    assert not leftover.exists()
    assert Path(final.drive_files[0].path).is_file(), "the uploaded copy stays"


class SlowToTell(Notifier):
    """A notification channel that hangs until told to go on."""

    name = "slow"

    def __init__(self) -> None:
        self.telling = asyncio.Event()
        self.go_on = asyncio.Event()

    async def backup_finished(self, backup: Backup) -> None:
        self.telling.set()
        await self.go_on.wait()


async def test_a_slow_notification_does_not_hold_the_source(
    tmp_path, make_settings, open_runtime
):
    """Once a backup's outcome is recorded, its source is free: a client that reads the
    outcome may start or retry at once, even while notifications are still going out."""
    settings = make_settings()
    async with open_runtime(settings) as runtime:
        notifier = SlowToTell()
        runtime.services.notifiers = [notifier]
        (first,) = await runtime.start_backups()
        await asyncio.wait_for(notifier.telling.wait(), 30)
        assert (await runtime.catalog.get_backup(first.id)).status is Status.FINISHED
        (second,) = await runtime.start_backups(["app"])  # no ConflictError
        notifier.go_on.set()
        finals = await runtime.wait([first.id, second.id])
    assert [b.status for b in finals] == [Status.FINISHED, Status.FINISHED]

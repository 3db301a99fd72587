"""The command line: argparse commands calling into the package; errors become exit codes.

Exit codes: 0 success, 1 a backup/restore/check failed, 2 usage, 78 (EX_CONFIG) the
config is invalid. Heavy modules are imported inside the commands, so ``--help`` and
``version`` start fast.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .config import Settings
    from .models import Backup

EX_OK, EX_FAILED, EX_USAGE, EX_CONFIG = 0, 1, 2, 78


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="backupmand",
        description="Database backup daemon: scheduled dumps, compressed, uploaded to every "
                    "drive, recorded in a catalog.",
    )
    parser.add_argument("-c", "--config", help="config file (default: $BACKUPMAND_CONFIG, "
                        "/etc/backupmand/config.yml, ./config.yml)")
    parser.add_argument("--log-level", default=os.environ.get("BACKUPMAND_LOG_LEVEL", "info"),
                        choices=["debug", "info", "warning", "error"])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the daemon: schedule and HTTP API")
    serve.add_argument("--port", type=int, help="listen on this port (default: http.port)")
    serve.add_argument("--listen", help="listen on this address (default: http.listen)")

    run = commands.add_parser("run", help="one backup now, in the foreground")
    run.add_argument("--source", action="append", metavar="LABEL",
                     help="back up only this data source (repeatable)")

    listing = commands.add_parser("list", help="the catalog, newest first")
    listing.add_argument("--json", action="store_true", help="the API's JSON")
    listing.add_argument("--status", choices=["pending", "finished", "failed"])
    listing.add_argument("--label")
    listing.add_argument("--limit", type=int)

    show = commands.add_parser("show", help="one backup with its drive files")
    show.add_argument("id")
    show.add_argument("--json", action="store_true")

    retry = commands.add_parser("retry", help="re-run what failed in a backup")
    retry.add_argument("id")

    restore = commands.add_parser("restore", help="fetch, verify and load a backup")
    restore.add_argument("id")
    restore.add_argument("--drive", metavar="LABEL", help="fetch from this drive")
    target = restore.add_mutually_exclusive_group(required=True)
    target.add_argument("--to-file", metavar="PATH", help="write the plain dump here")
    target.add_argument("--to-source", metavar="LABEL", help="load into this data source")
    restore.add_argument("--db-name", metavar="NAME",
                         help="target database (SQLite: file) instead of the source's own")
    restore.add_argument("--force", action="store_true",
                         help="overwrite a target that already holds data")

    prune = commands.add_parser("prune", help="apply retention now")
    prune.add_argument("--dry-run", action="store_true", help="only show what would go")

    health = commands.add_parser("health", help="the health report (exit 0 UP, 1 DOWN)")
    health.add_argument("--json", action="store_true")

    commands.add_parser("check-config", help="validate and print the effective config")

    google = commands.add_parser("auth-google", help="authorize a Google Drive drive")
    google.add_argument("--client-secret-file")
    google.add_argument("--token-file")
    google.add_argument("--no-open-url", action="store_true",
                        help="only print the URL; do not open a browser")

    commands.add_parser("version", help="version, commit and build date")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from .permissions import set_private_umask

    set_private_umask()  # before anything is written: dumps, catalog and keys are 0600 in 0700
    args = build_parser().parse_args(argv)
    if args.command == "version":
        from .version import build_info

        info = build_info()
        print(f"backupmand {info['Version']} (commit {info['CommitSHA']}, "
              f"built {info['BuildDate']})")
        return EX_OK

    from . import logs
    from .errors import BackupmandError, ConfigError

    logs.configure(args.log_level)
    try:
        if args.command == "auth-google":
            return _auth_google(args)
        from .config import load_settings

        settings = load_settings(args.config)
        _start(settings)
        if args.command == "check-config":
            return _check_config(settings)
        return asyncio.run(_dispatch(args, settings))
    except ConfigError as error:
        print(f"backupmand: {error}", file=sys.stderr)
        return EX_CONFIG
    except BackupmandError as error:
        print(f"backupmand: {logs.redact_text(str(error))}", file=sys.stderr)
        return EX_FAILED
    except KeyboardInterrupt:
        return 130


def _start(settings: Settings) -> None:
    """What every command does first with its settings: learn every secret (so that no log
    line, error or notification of this process shows one) and say what looks unwise."""
    import structlog

    from . import logs

    logs.register_settings(settings)
    for warning in settings.warnings():
        structlog.get_logger("backupmand.config").warning("config.warning", problem=warning)


async def _dispatch(args: argparse.Namespace, settings: Settings) -> int:
    from .permissions import prepare_state

    command = args.command
    if settings.database.provider == "sqlite":  # a memory catalog keeps nothing on disk
        # Before the catalog opens: created 0600 in a 0700 folder whatever SQLite would do.
        await asyncio.to_thread(prepare_state, settings.database.db_path,
                                settings.state_directory)
    if command == "serve":
        from .daemon import serve

        return await serve(settings, port=args.port, listen=args.listen)
    if command in ("list", "show"):
        return await _catalog_command(args, settings)
    from .runtime import Runtime

    if command == "health":
        from .health import report

        async with Runtime.open(settings, recover=False) as runtime:
            body = await report(runtime)
        if args.json:
            print(json.dumps(body, indent=2))
        else:
            _print_health(body)
        return EX_OK if body["Status"] == "UP" else EX_FAILED
    if command == "restore":
        from .catalog import Catalog
        from .errors import ConflictError
        from .restore import restore_backup

        lock = None
        if args.to_source and settings.database.provider == "sqlite":
            from .locks import Locks

            # Never load into a source while a backup of it runs (here or in the daemon).
            lock = Locks(settings.state_directory / "locks").source(args.to_source)
            if not lock.try_acquire():
                raise ConflictError(f"a backup of {args.to_source} is in flight; restore when it ends")
        try:
            async with Catalog.open(settings.database.provider, settings.database.db_path) as catalog:
                where = await restore_backup(
                    settings, catalog, args.id, drive=args.drive,
                    to_file=Path(args.to_file) if args.to_file else None,
                    to_source=args.to_source, database=args.db_name, force=args.force,
                )
        finally:
            if lock is not None:
                lock.release()
        print(f"restored {where}")
        return EX_OK
    async with Runtime.open(settings) as runtime:
        if command == "run":
            return await _run(runtime, args.source)
        if command == "retry":
            backup = await runtime.retry(args.id)
            _attach_progress(runtime)
            (final,) = await runtime.wait([backup.id])
            _print_outcome([final])
            return EX_OK if final.status.value == "finished" else EX_FAILED
        if command == "prune":
            from .retention import prune

            if not settings.retention.enabled:
                print("retention is not enabled (retention.enabled: false): nothing to prune")
                return EX_OK
            selected = await prune(runtime.services, dry_run=args.dry_run)
            verb = "would delete" if args.dry_run else "deleted"
            for backup in selected:
                print(f"{verb} {backup.id}  {backup.label}  {backup.status.value}  "
                      f"{_when(backup)}")
            print(f"{len(selected)} backup(s) {'would be deleted' if args.dry_run else 'deleted'}")
            return EX_OK
    raise AssertionError(command)


async def _run(runtime: Any, labels: list[str] | None) -> int:
    _attach_progress(runtime)
    backups = await runtime.start_backups(labels)
    finals = await runtime.wait([backup.id for backup in backups])
    _print_outcome(finals)
    return EX_OK if all(b.status.value == "finished" for b in finals) else EX_FAILED


def _attach_progress(runtime: Any) -> None:
    if not sys.stdout.isatty():
        return

    def show(label: str, step: str) -> None:
        print(f"  {label}: {step}", flush=True)

    runtime.add_progress_listener(show)


def _print_outcome(backups: list[Backup]) -> None:
    for backup in backups:
        size = f"{backup.size} bytes" if backup.size is not None else "-"
        print(f"{backup.status.value:8}  {backup.label}  {backup.id}  {size}")
        for record in backup.drive_files:
            extra = f"  ({record.error})" if record.error else ""
            print(f"    {record.drive}: {record.status.value}  {record.path or ''}{extra}")
        if backup.error and not backup.drive_files:
            print(f"    error: {backup.error}")


def _when(backup: Backup) -> str:
    from .models import rfc3339

    return rfc3339(backup.created_at) or ""


async def _catalog_command(args: argparse.Namespace, settings: Settings) -> int:
    from .catalog import Catalog
    from .models import Status

    async with Catalog.open(settings.database.provider, settings.database.db_path) as catalog:
        if args.command == "show":
            backup = await catalog.get_backup(args.id)
            if args.json:
                print(json.dumps(backup.to_api(), indent=2))
            else:
                _print_backup(backup)
            return EX_OK
        backups = await catalog.list_backups(
            status=Status(args.status) if args.status else None, label=args.label,
            limit=args.limit)
    if args.json:
        print(json.dumps({"Results": [b.to_api() for b in backups]}, indent=2))
        return EX_OK
    rows = [("ID", "STATUS", "LABEL", "CREATED", "SIZE", "DRIVES")]
    for backup in backups:
        drives = ",".join(f"{f.drive}:{f.status.value}" for f in backup.drive_files)
        rows.append((backup.id, backup.status.value, backup.label, _when(backup),
                     "" if backup.size is None else str(backup.size), drives))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    return EX_OK


def _print_backup(backup: Backup) -> None:
    for key, value in backup.to_api().items():
        if key != "DriveFiles":
            print(f"{key:12} {'' if value is None else value}")
    for record in backup.to_api()["DriveFiles"]:
        print(f"- drive file {record['Id']}")
        for key, value in record.items():
            if key != "Id":
                print(f"    {key:10} {'' if value is None else value}")


def _print_health(body: dict[str, Any]) -> None:
    print(f"backupmand {body['Version']}: {body['Status']}")
    for kind, detail in body["Details"].items():
        print(f"  {kind}: {detail['Status']}")
        for name, item in (detail.get("Components") or {}).items():
            print(f"    {name}: {item['Status']}")


def _check_config(settings: Settings) -> int:
    import yaml

    from .config import masked
    from .schedule import next_fire_times, parse_cron, resolve_timezone

    print(yaml.safe_dump(masked(settings), sort_keys=False, allow_unicode=True), end="")
    for warning in settings.warnings():
        print(f"# warning: {warning}")
    job = settings.http.backup_job
    zone = resolve_timezone(job.timezone)
    print("# schedule")
    if not job.enabled:
        print("#   backup_job: disabled")
        return EX_OK
    print(f"#   backup_job: {job.cron!r} in {zone}")
    for moment in next_fire_times(parse_cron(job.cron, job.timezone), 3):
        print(f"#     next: {moment.isoformat()} ({moment.tzname()})")
    return EX_OK


def _auth_google(args: argparse.Namespace) -> int:
    from .drives.google_auth import authorize

    client_secret, token, token_uri = args.client_secret_file, args.token_file, None
    if not (client_secret and token):
        from .config import GoogleDrive, load_settings

        settings = load_settings(args.config)
        _start(settings)
        drives = [d for d in settings.drives if isinstance(d, GoogleDrive)]
        if not drives:
            print("backupmand: no google_drive drive in the config; give --client-secret-file "
                  "and --token-file", file=sys.stderr)
            return EX_USAGE
        client_secret = client_secret or str(drives[0].client_secret_file)
        token = token or str(drives[0].token_file)
        token_uri = drives[0].token_uri
    asyncio.run(authorize(Path(client_secret), Path(token), open_browser=not args.no_open_url,
                          token_uri=token_uri))
    print(f"token written to {token}")
    return EX_OK


if __name__ == "__main__":
    raise SystemExit(main())

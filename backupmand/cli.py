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
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .config import Settings
    from .models import Backup

EX_OK, EX_FAILED, EX_USAGE, EX_CONFIG = 0, 1, 2, 78
_UUID = re.compile(
    r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


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

    restore = commands.add_parser(
        "restore", help="fetch, verify and load a backup",
        description="The backup is an id from the catalog, or (with --drive, needing no "
                    "catalog) an id, a dump's file name or --label L --latest found by the "
                    "manifests on that drive.")
    restore.add_argument("id", nargs="?", metavar="ID_OR_NAME",
                         help="a backup id, or a dump's file name on --drive")
    restore.add_argument("--drive", metavar="LABEL", help="fetch from this drive")
    restore.add_argument("--label", metavar="LABEL", help="with --latest: the data source")
    restore.add_argument("--latest", action="store_true",
                         help="the latest finished backup of --label")
    restore.add_argument("--host", metavar="HOST",
                         help="with --drive: the host whose backups to look at (default: host)")
    target = restore.add_mutually_exclusive_group(required=True)
    target.add_argument("--to-file", metavar="PATH", help="write the plain dump here")
    target.add_argument("--to-source", metavar="LABEL", help="load into this data source")
    restore.add_argument("--db-name", metavar="NAME",
                         help="target database (SQLite: file) instead of the source's own")
    restore.add_argument("--force", action="store_true",
                         help="replace a target that already holds data (after a complete "
                              "load into a side database; the old one is kept)")
    restore.add_argument("--drop-old", action="store_true",
                         help="with --force: drop the replaced database instead of keeping it")
    restore.add_argument("--globals", action="store_true",
                         help="first create the roles / users the backup needs (only those "
                              "missing)")
    restore.add_argument("--identity", metavar="FILE",
                         help="the age identity for an encrypted backup "
                              "(default: encryption.identity_file)")

    verify = commands.add_parser(
        "verify", help="restore drill: load a backup into a scratch target and compare")
    verify.add_argument("id", nargs="?", help="the backup (default: --label L --latest)")
    verify.add_argument("--label", metavar="LABEL")
    verify.add_argument("--latest", action="store_true",
                        help="the latest finished backup of --label (or of every source)")
    verify.add_argument("--drive", metavar="LABEL", help="drill this drive's copy")
    verify.add_argument("--identity", metavar="FILE", help="the age identity, when encrypted")

    pin = commands.add_parser("pin", help="keep a backup whatever retention says")
    pin.add_argument("id")
    pin.add_argument("--note", help="why it is kept")
    unpin = commands.add_parser("unpin", help="let retention decide again")
    unpin.add_argument("id")

    catalog = commands.add_parser("catalog", help="the catalog itself")
    catalog_commands = catalog.add_subparsers(dest="catalog_command", required=True,
                                              metavar="ACTION")
    rebuild = catalog_commands.add_parser(
        "rebuild", help="recreate the catalog's records from the manifests on a drive")
    rebuild.add_argument("--drive", metavar="LABEL", required=True)
    rebuild.add_argument("--host", metavar="HOST", help="whose backups (default: host)")
    rebuild.add_argument("--dry-run", action="store_true", help="only report")

    fleet = commands.add_parser("fleet", help="every host's backups on a shared drive")
    fleet_commands = fleet.add_subparsers(dest="fleet_command", required=True, metavar="ACTION")
    fleet_list = fleet_commands.add_parser("list", help="newest first, and each one's age")
    fleet_list.add_argument("--drive", metavar="LABEL", required=True)
    fleet_list.add_argument("--json", action="store_true")

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
    from . import malloc

    malloc.tune()  # before any thread: big buffers go back to the system when freed
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
        return await _restore(args, settings)
    if command == "catalog":
        return await _rebuild(args, settings)
    if command == "fleet":
        return await _fleet(args, settings)
    if command in ("pin", "unpin"):
        from .catalog import Catalog

        async with Catalog.open(settings.database.provider, settings.database.db_path) as store:
            backup = await store.update_backup(
                args.id, pinned=command == "pin",
                pin_note=(args.note if command == "pin" else None))
        print(f"{'pinned' if backup.pinned else 'unpinned'} {backup.id}  {backup.label}  "
              f"{_when(backup)}" + (f"  ({backup.pin_note})" if backup.pin_note else ""))
        return EX_OK
    if command == "verify":
        return await _verify(args, settings)
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
            if args.dry_run:
                from .retention import plan

                verdicts = await plan(runtime.services, mark=False)
                selected = [verdict.backup for verdict in verdicts if verdict.goes]
                for verdict in verdicts:
                    backup = verdict.backup
                    if verdict.goes:
                        print(f"would delete {backup.id}  {backup.label}  "
                              f"{backup.status.value}  {_when(backup)}")
                    else:
                        print(f"keep         {backup.id}  {backup.label}  "
                              f"{backup.status.value}  {_when(backup)}  "
                              f"({', '.join(verdict.decision.reasons)})")
                print(f"{len(selected)} backup(s) would be deleted")
                return EX_OK
            selected = await prune(runtime.services)
            for backup in selected:
                print(f"deleted {backup.id}  {backup.label}  {backup.status.value}  "
                      f"{_when(backup)}")
            print(f"{len(selected)} backup(s) deleted")
            return EX_OK
    raise AssertionError(command)


async def _run(runtime: Any, labels: list[str] | None) -> int:
    _attach_progress(runtime)
    backups = await runtime.start_backups(labels)
    finals = await runtime.wait([backup.id for backup in backups])
    _print_outcome(finals)
    return EX_OK if all(b.status.value == "finished" for b in finals) else EX_FAILED


async def _restore(args: argparse.Namespace, settings: Settings) -> int:
    from .catalog import Catalog
    from .errors import ConflictError
    from .restore import Request, restore_backup

    backup_id, name = None, None
    if args.id is not None:
        if _UUID.match(args.id):
            backup_id = args.id
        else:
            name = args.id
    request = Request(
        backup_id=backup_id, name=name, label=args.label, latest=args.latest, drive=args.drive,
        host=args.host, to_file=Path(args.to_file) if args.to_file else None,
        to_source=args.to_source, database=args.db_name, force=args.force,
        drop_old=args.drop_old, with_globals=args.globals,
        identity=Path(args.identity) if args.identity else None)
    lock = None
    if args.to_source and settings.database.provider == "sqlite":
        from .locks import Locks

        # Never load into a source while a backup of it runs (here or in the daemon).
        lock = Locks(settings.state_directory / "locks").source(args.to_source)
        if not lock.try_acquire():
            raise ConflictError(f"a backup of {args.to_source} is in flight; restore when it ends")
    try:
        async with Catalog.open(settings.database.provider, settings.database.db_path) as catalog:
            where = await restore_backup(settings, catalog, request=request)
    finally:
        if lock is not None:
            lock.release()
    print(f"restored {where}")
    return EX_OK


async def _verify(args: argparse.Namespace, settings: Settings) -> int:
    from .errors import InvalidInputError
    from .runtime import Runtime

    if args.id is None and not args.latest:
        raise InvalidInputError("give a backup id, or --latest (with --label for one source)")
    identity = Path(args.identity) if args.identity else None
    async with Runtime.open(settings, drop_scratch=True) as runtime:
        if args.id is not None:
            ids = [args.id]
        else:
            latest = await runtime.catalog.last_finished_by_label()
            labels = [args.label] if args.label else list(runtime.services.sources)
            missing = [label for label in labels if label not in latest]
            if args.label and missing:
                raise InvalidInputError(f"no finished backup of {args.label!r}")
            ids = [latest[label].id for label in labels if label in latest]
        results = []
        for backup_id in ids:
            results.append(await runtime.verify(backup_id, drive=args.drive, identity=identity))
    for backup in results:
        line = f"{backup.verification:7}  {backup.label}  {backup.id}"
        print(line + (f"\n    {backup.verify_error}" if backup.verify_error else ""))
    return EX_OK if all(b.verification == "passed" for b in results) else EX_FAILED


async def _rebuild(args: argparse.Namespace, settings: Settings) -> int:
    from . import logs
    from .catalog import Catalog
    from .drives import build_drive
    from .errors import InvalidInputError
    from .rebuild import rebuild

    try:
        config = settings.drive(args.drive)
    except KeyError:
        raise InvalidInputError(f"no drive labelled {args.drive!r} in the config") from None
    host = args.host or settings.host_name
    drive = build_drive(config, host)
    logs.register_secrets(drive.secrets())
    try:
        async with Catalog.open(settings.database.provider, settings.database.db_path) as catalog:
            report = await rebuild(catalog, drive, host=host, dry_run=args.dry_run)
    finally:
        await drive.aclose()
    verb = "would add" if args.dry_run else "added"
    for backup in report.added:
        print(f"{verb} {backup.id}  {backup.label}  {_when(backup)}  {backup.name}")
    for backup in report.completed:
        print(f"{verb} the copy on {args.drive!r} to {backup.id}  {backup.label}")
    for problem in report.problems:
        print(f"problem: {problem}")
    print(f"{len(report.added)} backup(s) {verb}, {len(report.completed)} completed, "
          f"{report.present} already in the catalog, {len(report.problems)} problem(s)")
    return EX_OK


async def _fleet(args: argparse.Namespace, settings: Settings) -> int:
    from . import logs
    from .drives import build_drive
    from .errors import InvalidInputError
    from .fleet import survey

    try:
        config = settings.drive(args.drive)
    except KeyError:
        raise InvalidInputError(f"no drive labelled {args.drive!r} in the config") from None
    drive = build_drive(config, settings.host_name)
    logs.register_secrets(drive.secrets())
    try:
        fleet = await survey(drive)
    finally:
        await drive.aclose()
    body = fleet.to_json()
    if args.json:
        print(json.dumps(body, indent=2))
        return EX_OK
    rows: list[tuple[str, ...]] = [("HOST", "LABEL", "FINISHED", "ID", "SIZE", "FILE")]
    for entry in body["Backups"]:
        rows.append((entry["Host"], entry["Label"], entry["FinishedAt"], entry["BackupId"],
                     str(entry["Size"]), entry["File"]))
    _table(rows)
    print()
    latest: list[tuple[str, ...]] = [("HOST", "LABEL", "LATEST", "AGE")]
    for item in body["Latest"]:
        latest.append((item["Host"], item["Label"], item["FinishedAt"],
                       _age(item["AgeSeconds"])))
    _table(latest)
    for problem in fleet.problems:
        print(f"problem: {problem}")
    return EX_OK


def _age(seconds: int) -> str:
    if seconds < 3600:
        return f"{seconds // 60} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def _table(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


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
    rows: list[tuple[str, ...]] = [
        ("ID", "STATUS", "LABEL", "CREATED", "SIZE", "VERIFIED", "FLAGS", "DRIVES")]
    for backup in backups:
        drives = ",".join(f"{f.drive}:{f.status.value}" + (":missing" if f.missing else "")
                          for f in backup.drive_files)
        flags = ",".join(flag for flag, on in (("pinned", backup.pinned),
                                               ("suspect", backup.suspect)) if on)
        verified = backup.verification or "-"
        if backup.verified_at is not None:
            from .models import rfc3339

            verified += f" {rfc3339(backup.verified_at)}"
        rows.append((backup.id, backup.status.value, backup.label, _when(backup),
                     "" if backup.size is None else str(backup.size), verified, flags or "-",
                     drives))
    _table(rows)
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
    print(f"# host: {settings.host_name}")
    print("# encryption")
    for source in settings.data_sources:
        encryption = settings.encryption_for(source)
        if encryption is None:
            print(f"#   {source.label}: not encrypted")
            continue
        from .encryption import fingerprint

        identity = (f"identity {encryption.identity_file}" if encryption.identity_file
                    else "no identity here (restores and drills need one)")
        print(f"#   {source.label}: age, {identity}")
        for recipient in encryption.all_recipients():
            print(f"#     recipient {fingerprint(recipient)}")
    print("# schedule")
    for name, job in (("backup_job", settings.http.backup_job),
                      ("verify_job", settings.http.verify_job)):
        if not job.enabled:
            print(f"#   {name}: disabled")
            continue
        zone = resolve_timezone(job.timezone)
        print(f"#   {name}: {job.cron!r} in {zone}")
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

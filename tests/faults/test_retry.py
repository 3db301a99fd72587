"""`backupmand retry ID` and `POST /api/backups/{id}/retry`, as real processes.

Two faults at once in one config: a data source whose database file is gone (the
dump fails) and a drive whose folder cannot be created (a regular file sits where a
parent folder should be; root ignores permission bits, so permissions would not do).
Once the faults are repaired, a retry takes each failed backup to finished.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path
from typing import Any

from tests.faults.support import check_finished_backup, leftovers
from tests.helpers import base_config, daemon, make_sqlite, run_cli, write_config


class Faults:
    """A config with a source that can lose its file and a drive that can be blocked."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp = tmp_path
        self.good_db = tmp_path / "good.db"
        self.lost_db = tmp_path / "lost.db"
        make_sqlite(self.good_db, rows=300)
        make_sqlite(self.lost_db, rows=200)
        self.hidden = tmp_path / "lost.db.away"
        self.blocker = tmp_path / "blocked"
        self.drives = {"steady": tmp_path / "steady", "blocked": self.blocker / "drive"}
        self.config = write_config(tmp_path / "config.yml", base_config(
            tmp_path,
            data_sources=[
                {"provider": "sqlite", "label": "good", "db_path": str(self.good_db),
                 "tmp_folder": str(tmp_path / "dumps")},
                {"provider": "sqlite", "label": "lost", "db_path": str(self.lost_db),
                 "tmp_folder": str(tmp_path / "dumps")},
            ],
            drives=[{"provider": "local", "label": label, "folder": str(folder)}
                    for label, folder in self.drives.items()],
        ))

    def break_things(self) -> None:
        self.lost_db.rename(self.hidden)
        self.blocker.write_text("a file where the drive's parent folder should be")

    def repair(self) -> None:
        self.hidden.rename(self.lost_db)
        self.blocker.unlink()

    def records(self) -> dict[str, dict[str, Any]]:
        """The catalog read directly: label -> backup row."""
        with sqlite3.connect(self.tmp / "state" / "catalog.db") as connection:
            connection.row_factory = sqlite3.Row
            rows = connection.execute("SELECT * FROM backups ORDER BY created_at").fetchall()
        return {row["label"]: dict(row) for row in rows}


def test_cli_retry_reruns_the_failed_dump_and_the_failed_upload(tmp_path: Path) -> None:
    faults = Faults(tmp_path)
    faults.break_things()
    result = run_cli("run", config=faults.config)
    assert result.returncode == 1, result.stdout + result.stderr
    records = faults.records()
    good, lost = records["good"], records["lost"]
    assert good["status"] == "failed" and "upload to blocked failed" in good["error"]
    assert good["dump_path"] and Path(good["dump_path"]).is_file()
    assert lost["status"] == "failed" and "does not exist" in lost["error"]
    assert lost["dump_status"] == "failed"

    # Not repaired yet: the retry fails again, honestly.
    result = run_cli("retry", lost["id"], config=faults.config)
    assert result.returncode == 1 and "does not exist" in result.stdout

    faults.repair()
    for label in ("good", "lost"):
        result = run_cli("retry", records[label]["id"], config=faults.config)
        assert result.returncode == 0, result.stdout + result.stderr
        assert result.stdout.startswith("finished"), result.stdout
    shown = run_cli("show", "--json", records["good"]["id"], config=faults.config)
    good_final = json.loads(shown.stdout)
    check_finished_backup(good_final, faults.drives)
    attempts = {f["Drive"]: f["Attempts"] for f in good_final["DriveFiles"]}
    assert attempts["steady"] == 1, "the upload that had succeeded is not repeated"
    lost_final = json.loads(run_cli("show", "--json", lost["id"], config=faults.config).stdout)
    check_finished_backup(lost_final, faults.drives)
    assert leftovers([tmp_path / "dumps"], faults.drives.values()) == []
    assert list((tmp_path / "dumps").iterdir()) == []

    result = run_cli("retry", lost["id"], config=faults.config)
    assert result.returncode == 1
    assert "is finished, not failed" in result.stderr
    result = run_cli("retry", "00000000-0000-0000-0000-000000000000", config=faults.config)
    assert result.returncode == 1 and "no backup with id" in result.stderr


def test_api_retry_reruns_what_failed(tmp_path: Path) -> None:
    faults = Faults(tmp_path)
    faults.break_things()
    with daemon(faults.config) as server:
        status, body = server.request("POST", "/api/backups")
        assert status == 200, body
        finals = {b["Label"]: b for b in (server.wait_backup(i) for i in body["BackupIds"])}
        assert finals["good"]["Status"] == "failed", finals["good"]
        assert finals["lost"]["Status"] == "failed", finals["lost"]
        assert "does not exist" in finals["lost"]["Error"]

        status, body = server.request("POST", "/api/backups/nope/retry")
        assert status == 404 and "Error" in body
        faults.repair()
        for label in ("good", "lost"):
            identifier = finals[label]["Id"]
            status, body = server.request("POST", f"/api/backups/{identifier}/retry")
            assert status == 200 and body["BackupIds"] == [identifier], body
            final = server.wait_backup(identifier)
            check_finished_backup(final, faults.drives)
            status, body = server.request("POST", f"/api/backups/{identifier}/retry")
            assert status == 409 and "not failed" in body["Error"], body
        assert leftovers([tmp_path / "dumps"], faults.drives.values()) == []


def test_retry_when_the_kept_dump_is_gone_says_so(tmp_path: Path) -> None:
    faults = Faults(tmp_path)
    faults.blocker.write_text("blocks the drive")
    result = run_cli("run", "--source", "good", config=faults.config)
    assert result.returncode == 1
    good = faults.records()["good"]
    Path(good["dump_path"]).unlink()
    shutil.rmtree(tmp_path / "dumps")
    faults.blocker.unlink()
    result = run_cli("retry", good["id"], config=faults.config)
    assert result.returncode == 1 and "start a new backup" in result.stderr
    assert faults.records()["good"]["status"] == "failed", "the record is not left pending"

"""The Prometheus exposition, parsed back and compared with the catalog."""

from __future__ import annotations

import datetime as dt
from collections import Counter

from prometheus_client.parser import text_string_to_metric_families

from backupmand.catalog import Catalog
from backupmand.metrics import CONTENT_TYPE, render_metrics
from backupmand.models import Status
from tests.factories import make_backup


def samples(body: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(body.decode("utf-8")):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


async def test_metrics_match_the_catalog() -> None:
    async with Catalog.open("memory") as catalog:
        await make_backup(catalog, label="Main", seconds=30, size=100)
        newest = await make_backup(catalog, label="Main", seconds=65, size=2_000)
        await make_backup(catalog, label="Main", status=Status.FAILED, failed_drive="S3 Drive")
        await make_backup(catalog, label="Main", status=Status.PENDING)
        other = await make_backup(catalog, label="Other", seconds=5, size=7)
        await make_backup(catalog, label="Broken", dump_error="boom")
        next_run = dt.datetime(2030, 1, 2, 3, 0, tzinfo=dt.UTC)

        body = await render_metrics(
            catalog,
            next_runs={"Main": next_run, "Other": None, "Never": next_run},
            upload_failures=Counter({"S3 Drive": 2}),
            drives=["Local Drive", "S3 Drive"],
        )

        counts = await catalog.count_backups()
        last = await catalog.last_finished_by_label()

    assert CONTENT_TYPE.startswith("text/plain")
    found = samples(body)

    def value(name: str, **labels: str) -> float | None:
        return found.get((name, tuple(sorted(labels.items()))))

    assert newest.finished_at is not None and other.finished_at is not None
    assert last["Main"].id == newest.id and set(last) == {"Main", "Other"}
    assert value("backupmand_last_success_timestamp_seconds", label="Main") == (
        newest.finished_at.timestamp())
    assert value("backupmand_last_success_timestamp_seconds", label="Other") == (
        other.finished_at.timestamp())
    assert value("backupmand_last_success_timestamp_seconds", label="Broken") is None
    assert value("backupmand_last_duration_seconds", label="Main") == 65
    assert value("backupmand_last_duration_seconds", label="Other") == 5
    assert value("backupmand_last_size_bytes", label="Main") == 2_000
    assert value("backupmand_last_size_bytes", label="Other") == 7

    for label in ("Main", "Other", "Broken", "Never"):
        for status in Status:
            assert value("backupmand_backups", label=label, status=status.value) == (
                counts.get((label, status.value), 0)), (label, status)
    assert value("backupmand_backups", label="Main", status="finished") == 2
    assert value("backupmand_backups", label="Main", status="failed") == 1
    assert value("backupmand_backups", label="Main", status="pending") == 1
    assert value("backupmand_backups", label="Broken", status="failed") == 1

    assert value("backupmand_upload_failures_total", drive="S3 Drive") == 2
    assert value("backupmand_upload_failures_total", drive="Local Drive") == 0

    assert value("backupmand_next_run_timestamp_seconds", label="Main") == next_run.timestamp()
    assert value("backupmand_next_run_timestamp_seconds", label="Other") is None
    assert [key for key in found if key[0] == "backupmand_build_info"]


async def test_metrics_of_an_empty_catalog() -> None:
    async with Catalog.open("memory") as catalog:
        body = await render_metrics(catalog, next_runs={}, upload_failures={})
    names = {family.name for family in text_string_to_metric_families(body.decode())}
    assert "backupmand_last_success_timestamp_seconds" in names
    assert "backupmand_upload_failures" in names
    assert b"# TYPE backupmand_upload_failures_total counter" in body


async def test_last_finished_ignores_later_failures_and_labels_without_success() -> None:
    async with Catalog.open("memory") as catalog:
        first = await make_backup(catalog, label="A")
        await make_backup(catalog, label="A", status=Status.FAILED, failed_drive="S3 Drive")
        await make_backup(catalog, label="B", status=Status.PENDING)
        last = await catalog.last_finished_by_label()
    assert list(last) == ["A"]
    assert last["A"].id == first.id
    assert last["A"].drive_files == ()

"""GET /metrics: the Prometheus text exposition, built fresh from the catalog.

Each scrape builds a new CollectorRegistry holding one collector that yields the
families below, so nothing is global and nothing can go stale. Every family is
declared even while it has no sample (a label with no drill yet), so that rules and
dashboards can name it from the start:

- ``backupmand_last_success_timestamp_seconds{label}``: when the label's newest
  finished backup ended (absent until the label has one);
- ``backupmand_last_duration_seconds{label}``, ``backupmand_last_size_bytes{label}``:
  that backup's duration (created to finished) and stored size;
- ``backupmand_last_backup_failed{label}``: 1 when the label's newest settled backup
  failed, 0 when it finished;
- ``backupmand_backups{label,status}``: backups in the catalog by status (every
  status is present, zeros included, for every label known);
- ``backupmand_upload_failures_total{drive}``: uploads that failed for good (after
  their retries) since the daemon started; ``backupmand_upload_attempt_failures_total
  {drive}``: failed attempts, retried or not (harmless retries show here only);
- ``backupmand_last_upload_timestamp_seconds{drive}``: the drive's newest verified copy;
- ``backupmand_next_run_timestamp_seconds{label}``: the next scheduled run (absent
  when the label has none); ``backupmand_schedule_interval_seconds{label}``: seconds
  between the schedule's next two runs (staleness alerts scale with it);
- ``backupmand_schedule_failures_total{schedule}``: ticks of backup_job / verify_job
  that could not start their work, since the daemon started;
- ``backupmand_last_verified_timestamp_seconds{label}``: the label's newest passed
  restore drill; ``backupmand_last_verify_failed{label}``: 1 when its latest drill
  failed; ``backupmand_verifications_total{label,result}``: drills since start;
- ``backupmand_suspect_backups{label}``: finished backups flagged suspect;
- ``backupmand_build_info{version,commit}``: always 1.

Because the catalog forgets what retention deletes, ``backupmand_backups`` is a
gauge (it can go down), not a counter.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
from collections.abc import Iterable, Iterator, Mapping

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .catalog import Catalog
from .models import Backup, Status
from .version import build_info

try:  # the text format generate_latest writes is version 0.0.4 in every release
    from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4 as CONTENT_TYPE
except ImportError:  # prometheus-client < 0.22
    from prometheus_client import CONTENT_TYPE_LATEST as CONTENT_TYPE

__all__ = ["CONTENT_TYPE", "render_metrics"]


@dataclasses.dataclass(frozen=True)
class _Facts:
    last: Mapping[str, Backup]
    latest: Mapping[str, Backup]
    verified: Mapping[str, Backup]
    last_passed: Mapping[str, Backup]
    counts: Mapping[tuple[str, str], int]
    suspects: Mapping[str, int]
    uploads: Mapping[str, dt.datetime]
    next_runs: Mapping[str, dt.datetime | None]
    intervals: Mapping[str, float]
    upload_failures: Mapping[str, int]
    upload_attempt_failures: Mapping[str, int]
    schedule_failures: Mapping[str, int]
    verifications: Mapping[tuple[str, str], int]
    build: Mapping[str, str]


def _gauge(name: str, documentation: str, labels: list[str]) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, labels=labels)


class _Snapshot(Collector):
    """A collector over values read once from the catalog."""

    def __init__(self, facts: _Facts) -> None:
        self.facts = facts

    def collect(self) -> Iterator[Metric]:
        facts = self.facts
        success = _gauge("backupmand_last_success_timestamp_seconds",
                         "Unix time when the label's newest finished backup ended.", ["label"])
        duration = _gauge(
            "backupmand_last_duration_seconds",
            "Seconds the label's newest finished backup took, from creation to the end.",
            ["label"])
        size = _gauge("backupmand_last_size_bytes",
                      "Size in bytes of the label's newest finished backup (as stored).",
                      ["label"])
        for label, backup in sorted(facts.last.items()):
            end = backup.finished_at or backup.updated_at or backup.created_at
            success.add_metric([label], end.timestamp())
            duration.add_metric([label], max(0.0, (end - backup.created_at).total_seconds()))
            if backup.size is not None:
                size.add_metric([label], float(backup.size))
        yield success
        yield duration
        yield size

        failed = _gauge("backupmand_last_backup_failed",
                        "1 when the label's newest settled backup failed, 0 when it finished.",
                        ["label"])
        for label, backup in sorted(facts.latest.items()):
            failed.add_metric([label], 1.0 if backup.status is Status.FAILED else 0.0)
        yield failed

        backups = _gauge("backupmand_backups", "Backups in the catalog, by label and status.",
                         ["label", "status"])
        labels = sorted({label for label, _ in facts.counts} | set(facts.next_runs))
        for label in labels:
            for status in Status:
                backups.add_metric([label, status.value],
                                   float(facts.counts.get((label, status.value), 0)))
        yield backups

        for name, documentation, values in (
            ("backupmand_upload_failures",
             "Uploads that failed for good (after their retries) since the daemon started.",
             facts.upload_failures),
            ("backupmand_upload_attempt_failures",
             "Upload attempts that failed (retried or not) since the daemon started.",
             facts.upload_attempt_failures),
        ):
            counter = CounterMetricFamily(name, documentation, labels=["drive"])
            for drive, count in sorted(values.items()):
                counter.add_metric([drive], float(count))
            yield counter

        uploaded = _gauge("backupmand_last_upload_timestamp_seconds",
                          "Unix time of the drive's newest verified copy.", ["drive"])
        for drive, uploaded_at in sorted(facts.uploads.items()):
            uploaded.add_metric([drive], uploaded_at.timestamp())
        yield uploaded

        next_run = _gauge("backupmand_next_run_timestamp_seconds",
                          "Unix time of the label's next scheduled backup.", ["label"])
        for label, moment in sorted(facts.next_runs.items()):
            if moment is not None:
                next_run.add_metric([label], moment.timestamp())
        yield next_run
        interval = _gauge("backupmand_schedule_interval_seconds",
                          "Seconds between the label's next two scheduled backups.", ["label"])
        for label, seconds in sorted(facts.intervals.items()):
            interval.add_metric([label], seconds)
        yield interval
        ticks = CounterMetricFamily(
            "backupmand_schedule_failures",
            "Scheduled ticks that could not start their work since the daemon started.",
            labels=["schedule"])
        for schedule, count in sorted(facts.schedule_failures.items()):
            ticks.add_metric([schedule], float(count))
        yield ticks

        verified = _gauge("backupmand_last_verified_timestamp_seconds",
                          "Unix time when the label's newest passed restore drill ended.",
                          ["label"])
        verify_failed = _gauge("backupmand_last_verify_failed",
                               "1 when the label's latest restore drill failed, 0 when it passed.",
                               ["label"])
        for label, backup in sorted(facts.verified.items()):
            verify_failed.add_metric([label], 1.0 if backup.verification == "failed" else 0.0)
        for label, backup in sorted(facts.last_passed.items()):
            if backup.verified_at is not None:
                verified.add_metric([label], backup.verified_at.timestamp())
        yield verified
        yield verify_failed
        drills = CounterMetricFamily("backupmand_verifications",
                                     "Restore drills since the daemon started, by outcome.",
                                     labels=["label", "result"])
        for (label, result), count in sorted(facts.verifications.items()):
            drills.add_metric([label, result], float(count))
        yield drills

        suspects = _gauge("backupmand_suspect_backups",
                          "Finished backups of the label flagged suspect.", ["label"])
        for label in labels:
            suspects.add_metric([label], float(facts.suspects.get(label, 0)))
        yield suspects

        info = facts.build
        build = _gauge("backupmand_build_info", "Version and commit of the running backupmand.",
                       ["version", "commit"])
        build.add_metric([info["Version"], info["CommitSHA"]], 1.0)
        yield build


async def render_metrics(
    catalog: Catalog, *, next_runs: Mapping[str, dt.datetime | None],
    upload_failures: Mapping[str, int], drives: Iterable[str] = (),
    upload_attempt_failures: Mapping[str, int] | None = None,
    intervals: Mapping[str, float] | None = None,
    schedule_failures: Mapping[str, int] | None = None,
    verifications: Mapping[tuple[str, str], int] | None = None,
) -> bytes:
    """The exposition body; serve it with ``Content-Type: CONTENT_TYPE``.

    ``next_runs`` maps every configured data source's label to its next run (None when
    unscheduled); the failure mappings are the daemon's counters; ``drives`` lists the
    configured drives so that their counters show 0 before a first failure.
    """
    zero = {drive: 0 for drive in drives}
    facts = _Facts(
        last=await catalog.last_finished_by_label(),
        latest=await catalog.latest_by_label(),
        verified=await catalog.latest_verified_by_label(),
        last_passed=await catalog.latest_verified_by_label(passed=True),
        counts=await catalog.count_backups(),
        suspects=await catalog.count_suspects(),
        uploads=await catalog.last_upload_by_drive(),
        next_runs=next_runs,
        intervals=intervals or {},
        upload_failures={**zero, **upload_failures},
        upload_attempt_failures={**zero, **(upload_attempt_failures or {})},
        schedule_failures=schedule_failures or {},
        verifications=verifications or {},
        build=await asyncio.to_thread(build_info),  # cached; the first call may run git
    )
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Snapshot(facts))
    return generate_latest(registry)

"""GET /metrics: the Prometheus text exposition, built fresh from the catalog.

Each scrape builds a new CollectorRegistry holding one collector that yields the
families below, so nothing is global and nothing can go stale:

- ``backupmand_last_success_timestamp_seconds{label}``: when the label's newest
  finished backup ended (absent until the label has one: alert with ``absent()`` or
  on the ``backupmand_backups`` counts);
- ``backupmand_last_duration_seconds{label}``, ``backupmand_last_size_bytes{label}``:
  that backup's duration (created to finished) and compressed size;
- ``backupmand_backups{label,status}``: backups in the catalog by status (every
  status is present, zeros included, for every label known);
- ``backupmand_upload_failures_total{drive}``: uploads that failed for good since
  the daemon started (an in-process counter kept by the pipeline);
- ``backupmand_next_run_timestamp_seconds{label}``: the next scheduled run (absent
  when the label has none);
- ``backupmand_build_info{version,commit}``: always 1.

Because the catalog forgets what retention deletes, ``backupmand_backups`` is a
gauge (it can go down), not a counter.
"""

from __future__ import annotations

import asyncio
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


class _Snapshot(Collector):
    """A collector over values read once from the catalog."""

    def __init__(
        self, *, last: Mapping[str, Backup], counts: Mapping[tuple[str, str], int],
        next_runs: Mapping[str, dt.datetime | None], upload_failures: Mapping[str, int],
        build: Mapping[str, str],
    ) -> None:
        self.build = build
        self.last = last
        self.counts = counts
        self.next_runs = next_runs
        self.upload_failures = upload_failures

    def collect(self) -> Iterator[Metric]:
        success = GaugeMetricFamily(
            "backupmand_last_success_timestamp_seconds",
            "Unix time when the label's newest finished backup ended.", labels=["label"])
        duration = GaugeMetricFamily(
            "backupmand_last_duration_seconds",
            "Seconds the label's newest finished backup took, from creation to the end.",
            labels=["label"])
        size = GaugeMetricFamily(
            "backupmand_last_size_bytes",
            "Size in bytes of the label's newest finished backup (as stored).", labels=["label"])
        for label, backup in sorted(self.last.items()):
            end = backup.finished_at or backup.updated_at or backup.created_at
            success.add_metric([label], end.timestamp())
            duration.add_metric([label], max(0.0, (end - backup.created_at).total_seconds()))
            if backup.size is not None:
                size.add_metric([label], float(backup.size))
        yield success
        yield duration
        yield size

        backups = GaugeMetricFamily(
            "backupmand_backups", "Backups in the catalog, by label and status.",
            labels=["label", "status"])
        labels = sorted({label for label, _ in self.counts} | set(self.next_runs))
        for label in labels:
            for status in Status:
                backups.add_metric([label, status.value],
                                   float(self.counts.get((label, status.value), 0)))
        yield backups

        failures = CounterMetricFamily(
            "backupmand_upload_failures",
            "Uploads that failed for good (after their retries) since the daemon started.",
            labels=["drive"])
        for drive, count in sorted(self.upload_failures.items()):
            failures.add_metric([drive], float(count))
        yield failures

        next_run = GaugeMetricFamily(
            "backupmand_next_run_timestamp_seconds",
            "Unix time of the label's next scheduled backup.", labels=["label"])
        for label, moment in sorted(self.next_runs.items()):
            if moment is not None:
                next_run.add_metric([label], moment.timestamp())
        yield next_run

        info = self.build
        build = GaugeMetricFamily(
            "backupmand_build_info", "Version and commit of the running backupmand.",
            labels=["version", "commit"])
        build.add_metric([info["Version"], info["CommitSHA"]], 1.0)
        yield build


async def render_metrics(
    catalog: Catalog, *, next_runs: Mapping[str, dt.datetime | None],
    upload_failures: Mapping[str, int], drives: Iterable[str] = (),
) -> bytes:
    """The exposition body; serve it with ``Content-Type: CONTENT_TYPE``.

    ``next_runs`` maps every configured data source's label to its next run (None when
    unscheduled); ``upload_failures`` maps drive labels to failure counts; ``drives``
    lists the configured drives so that their counters show 0 before a first failure.
    """
    last = await catalog.last_finished_by_label()
    counts = await catalog.count_backups()
    failures = {drive: 0 for drive in drives}
    failures.update(upload_failures)
    build = await asyncio.to_thread(build_info)  # cached; the first call may run git
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Snapshot(
        last=last, counts=counts, next_runs=next_runs, upload_failures=failures, build=build))
    return generate_latest(registry)

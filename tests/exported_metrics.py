"""The metrics backupmand's /metrics exports (SPEC §6, the second round), and the metric
names a PromQL expression reads: shared by the alert-rule and the dashboard tests."""

from __future__ import annotations

import re

#: Every series name /metrics exports (counters with their _total suffix).
EXPORTED_METRICS = frozenset({
    "backupmand_last_success_timestamp_seconds",
    "backupmand_last_duration_seconds",
    "backupmand_last_size_bytes",
    "backupmand_backups",
    "backupmand_last_backup_failed",
    "backupmand_upload_failures_total",
    "backupmand_upload_attempt_failures_total",
    "backupmand_last_upload_timestamp_seconds",
    "backupmand_next_run_timestamp_seconds",
    "backupmand_schedule_interval_seconds",
    "backupmand_schedule_failures_total",
    "backupmand_last_verified_timestamp_seconds",
    "backupmand_verifications_total",
    "backupmand_last_verify_failed",
    "backupmand_suspect_backups",
    "backupmand_build_info",
})
#: Series Prometheus itself makes for every target.
PROMETHEUS_METRICS = frozenset({"up"})

_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGES = re.compile(r"\[[^\[\]]*\]")
_LABEL_LISTS = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_IDENTIFIER = re.compile(r"(?<![\w.$])[A-Za-z_:][A-Za-z0-9_:]*")
_KEYWORDS = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right", "bool",
                       "and", "or", "unless", "offset", "atan2", "Inf", "NaN", "inf", "nan"})


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (functions, keywords, label names and
    values, durations and Grafana's ``$variables`` left out)."""
    text = _STRINGS.sub(" ", expr)
    text = _MATCHERS.sub(" ", text)
    text = _RANGES.sub(" ", text)
    text = _LABEL_LISTS.sub(" ", text)
    names: set[str] = set()
    for match in _IDENTIFIER.finditer(text):
        rest = text[match.end():].lstrip()
        if rest.startswith("(") or match.group() in _KEYWORDS:
            continue  # a function, an aggregation, or an operator keyword
        names.add(match.group())
    return names


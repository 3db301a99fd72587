"""retention.select_expired: the pure policy, over random histories (SPEC §4.6)."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections import defaultdict
from collections.abc import Iterable

from hypothesis import given, settings
from hypothesis import strategies as st

from backupmand.config import RetentionConfig
from backupmand.models import Backup, Status
from backupmand.retention import select_expired

NOW = dt.datetime(2025, 7, 2, 12, 0, tzinfo=dt.UTC)
#: The policy takes microseconds; a busy 2-core machine must not turn that into a flake.
NO_DEADLINE = settings(deadline=None)
LABELS = ("main", "app", "Logs db")


def backup(index: int, label: str, status: Status, age: dt.timedelta) -> Backup:
    created = NOW - age
    return Backup(
        id=f"{index:08x}-0000-4000-8000-000000000000", label=label, source_provider="sqlite",
        status=status, dump_status=Status.FINISHED if status is Status.FINISHED else status,
        name=f"{label}-{index}.sqlite.zst", dump_path=None, compression="zstd", size=1,
        sha256="0" * 64, error=None if status is not Status.FAILED else "boom",
        created_at=created, updated_at=None, finished_at=None, seq=index + 1,
    )


@st.composite
def histories(draw: st.DrawFn) -> list[Backup]:
    entries = draw(st.lists(st.tuples(
        st.sampled_from(LABELS),
        st.sampled_from(list(Status)),
        # Hours over ~60 days, coarse enough that equal timestamps happen.
        st.integers(min_value=0, max_value=60 * 24).map(lambda h: dt.timedelta(hours=h)),
    ), max_size=40))
    made = [backup(i, label, status, age) for i, (label, status, age) in enumerate(entries)]
    # The catalog's sequence follows creation: here, the recorded times (the clock never
    # went back in these histories; tests/unit/test_retention_policy.py covers that).
    ordered = sorted(made, key=lambda b: (b.created_at, b.id))
    return [dataclasses.replace(b, seq=position) for position, b in enumerate(ordered, start=1)]


policies = st.builds(
    RetentionConfig, enabled=st.just(True), by=st.sampled_from(["age", "count"]),
    value=st.integers(min_value=1, max_value=45), min_keep=st.integers(min_value=0, max_value=6),
)


def newest_first(items: Iterable[Backup]) -> list[Backup]:
    """Newest by the catalog's creation sequence, as retention orders them."""
    return sorted(items, key=lambda b: b.seq, reverse=True)


def per_label(items: Iterable[Backup]) -> dict[str, list[Backup]]:
    groups: dict[str, list[Backup]] = defaultdict(list)
    for item in items:
        groups[item.label].append(item)
    return {label: newest_first(group) for label, group in groups.items()}


def ids(items: Iterable[Backup]) -> set[str]:
    return {item.id for item in items}


# ---------------------------------------------------------------------------- invariants


@NO_DEADLINE
@given(histories(), policies)
def test_never_a_pending_backup(history: list[Backup], policy: RetentionConfig) -> None:
    assert all(b.status is not Status.PENDING for b in select_expired(history, policy, NOW))


@NO_DEADLINE
@given(histories(), policies)
def test_never_the_newest_min_keep_finished_of_a_label(
    history: list[Backup], policy: RetentionConfig
) -> None:
    expired = ids(select_expired(history, policy, NOW))
    for group in per_label(history).values():
        finished = [b for b in group if b.status is Status.FINISHED]
        assert not ids(finished[: policy.min_keep]) & expired


@NO_DEADLINE
@given(histories(), policies)
def test_the_result_is_a_sorted_subset_without_duplicates(
    history: list[Backup], policy: RetentionConfig
) -> None:
    expired = select_expired(history, policy, NOW)
    assert len(ids(expired)) == len(expired)
    assert ids(expired) <= ids(history)
    assert expired == sorted(expired, key=lambda b: (b.created_at, b.id))


@NO_DEADLINE
@given(histories(), policies)
def test_idempotent(history: list[Backup], policy: RetentionConfig) -> None:
    expired = ids(select_expired(history, policy, NOW))
    rest = [b for b in history if b.id not in expired]
    assert select_expired(rest, policy, NOW) == []


@NO_DEADLINE
@given(histories(), policies)
def test_labels_are_independent(history: list[Backup], policy: RetentionConfig) -> None:
    together = ids(select_expired(history, policy, NOW))
    apart: set[str] = set()
    for group in per_label(history).values():
        apart |= ids(select_expired(group, policy, NOW))
    assert together == apart


@NO_DEADLINE
@given(histories(), policies)
def test_the_order_of_the_input_does_not_matter(
    history: list[Backup], policy: RetentionConfig
) -> None:
    assert select_expired(history, policy, NOW) == select_expired(
        list(reversed(history)), policy, NOW)


# ---------------------------------------------------------------------------- by age


@NO_DEADLINE
@given(histories(), policies.filter(lambda p: p.by == "age"))
def test_age_selects_exactly_the_old_unprotected_ones(
    history: list[Backup], policy: RetentionConfig
) -> None:
    cutoff = NOW - dt.timedelta(days=policy.value)
    expired = ids(select_expired(history, policy, NOW))
    for group in per_label(history).values():
        protected = ids([b for b in group if b.status is Status.FINISHED][: policy.min_keep])
        for item in group:
            should_go = (item.created_at < cutoff and item.status is not Status.PENDING
                         and item.id not in protected)
            assert (item.id in expired) == should_go, item


@NO_DEADLINE
@given(histories(), policies.filter(lambda p: p.by == "age"),
       st.integers(min_value=0, max_value=24 * 30))
def test_age_later_means_more(
    history: list[Backup], policy: RetentionConfig, hours: int
) -> None:
    now = ids(select_expired(history, policy, NOW))
    later = ids(select_expired(history, policy, NOW + dt.timedelta(hours=hours)))
    assert now <= later


# ---------------------------------------------------------------------------- by count


@NO_DEADLINE
@given(histories(), policies.filter(lambda p: p.by == "count"))
def test_count_keeps_the_newest_finished(history: list[Backup], policy: RetentionConfig) -> None:
    expired = ids(select_expired(history, policy, NOW))
    keep = max(policy.value, policy.min_keep)
    for group in per_label(history).values():
        finished = [b for b in group if b.status is Status.FINISHED]
        assert not ids(finished[:keep]) & expired
        assert ids(finished[keep:]) <= expired


@NO_DEADLINE
@given(histories(), policies.filter(lambda p: p.by == "count"))
def test_count_drops_failed_ones_superseded_by_kept_finished(
    history: list[Backup], policy: RetentionConfig
) -> None:
    expired = ids(select_expired(history, policy, NOW))
    for group in per_label(history).values():
        finished = [b for b in group if b.status is Status.FINISHED]
        oldest_kept = finished[policy.value - 1] if len(finished) >= policy.value else None
        for failed in (b for b in group if b.status is Status.FAILED):
            superseded = oldest_kept is not None and failed.seq < oldest_kept.seq
            assert (failed.id in expired) == superseded, failed


@NO_DEADLINE
@given(histories(), policies.filter(lambda p: p.by == "count"), st.integers(1, 10))
def test_count_more_kept_means_fewer_deleted(
    history: list[Backup], policy: RetentionConfig, extra: int
) -> None:
    bigger = policy.model_copy(update={"value": policy.value + extra})
    assert ids(select_expired(history, bigger, NOW)) <= ids(select_expired(history, policy, NOW))


@settings(max_examples=50, deadline=None)
@given(histories(), policies)
def test_age_is_ignored_by_count_and_count_by_age(
    history: list[Backup], policy: RetentionConfig
) -> None:
    """Count looks at order only; age looks at time only (and min_keep for both)."""
    shifted = [dataclasses.replace(b, created_at=b.created_at - dt.timedelta(days=400))
               for b in history]
    if policy.by == "count":
        assert ids(select_expired(shifted, policy, NOW)) == ids(select_expired(history, policy, NOW))
    else:  # everything is now older than any cutoff: all but pending and protected go
        expired = ids(select_expired(shifted, policy, NOW))
        for group in per_label(shifted).values():
            protected = ids([b for b in group if b.status is Status.FINISHED][: policy.min_keep])
            assert expired & ids(group) == {
                b.id for b in group if b.status is not Status.PENDING and b.id not in protected}


# ---------------------------------------------------------------------------- examples


def test_age_example() -> None:
    history = [
        backup(1, "main", Status.FINISHED, dt.timedelta(days=40)),
        backup(2, "main", Status.FAILED, dt.timedelta(days=35)),
        backup(3, "main", Status.PENDING, dt.timedelta(days=33)),
        backup(4, "main", Status.FINISHED, dt.timedelta(days=10)),
        backup(5, "app", Status.FINISHED, dt.timedelta(days=90)),  # its label's only one
    ]
    policy = RetentionConfig(enabled=True, by="age", value=30, min_keep=1)
    assert [b.id[:8] for b in select_expired(history, policy, NOW)] == ["00000001", "00000002"]


def test_count_example() -> None:
    history = [
        backup(1, "main", Status.FINISHED, dt.timedelta(days=5)),
        backup(2, "main", Status.FAILED, dt.timedelta(days=4)),
        backup(3, "main", Status.FINISHED, dt.timedelta(days=3)),
        backup(4, "main", Status.FINISHED, dt.timedelta(days=2)),
        backup(5, "main", Status.FAILED, dt.timedelta(days=1)),  # newer than the kept ones
    ]
    policy = RetentionConfig(enabled=True, by="count", value=2, min_keep=1)
    assert [b.id[:8] for b in select_expired(history, policy, NOW)] == ["00000001", "00000002"]
    everything = RetentionConfig(enabled=True, by="count", value=1, min_keep=3)
    assert [b.id[:8] for b in select_expired(history, everything, NOW)] == ["00000002"]


def test_count_orders_equal_timestamps_by_the_catalog_sequence() -> None:
    """A failed backup recorded before a kept finished one at the same instant is superseded."""
    at = dt.timedelta(hours=3)
    failed = backup(0, "main", Status.FAILED, at)
    kept = backup(1, "main", Status.FINISHED, at)
    policy = RetentionConfig(enabled=True, by="count", value=1, min_keep=0)
    assert ids(select_expired([failed, kept], policy, NOW)) == {failed.id}
    assert ids(select_expired([dataclasses.replace(failed, seq=3), kept], policy, NOW)) == set()

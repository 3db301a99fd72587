"""The restore-fidelity contract: every engine's awkward database comes back as it was.

Per engine (``conftest.engine``), one real backup (``backupmand run``) of its awkward
database is restored

- with ``backupmand restore ID --to-source L --db-name OTHER`` into a new database,
- with ``--force`` over the original (which is kept as ``<name>__before_<stamp>``),
- by hand from the stored file with the engine's stock tools,

and each copy's snapshot must equal the original's at backup time, while no other
database changes. A non-empty target is refused without ``--force``. Failure injection
(a dump that loads part-way, then fails) must leave the target exactly as it was and
nothing behind; drills load the dump into a scratch database, count what the dump
facts counted, and always drop it (also when the load fails or is cancelled).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from backupmand.errors import RestoreError
from backupmand.files import read_file
from backupmand.sources.base import OBJECT_KINDS, DumpFacts

from .conftest import LABEL, Case

pytestmark = pytest.mark.slow


async def _chunks(data: bytes, size: int = 256 * 1024) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start:start + size]


def _workdir(case: Case, name: str) -> Path:
    folder = case.root / "work" / name
    folder.mkdir(parents=True)
    return folder


# --------------------------------------------------------------------------- restores (CLI)


def test_restore_under_another_name(case: Case) -> None:
    target = case.name("fidelity_other")
    others = case.others()
    try:
        result = case.cli("restore", case.backup_id, "--to-source", LABEL, "--db-name", target)
        assert result.returncode == 0, result.stderr
        assert case.engine.snapshot(target) == case.expected
        assert case.engine.snapshot(case.original) == case.expected  # never touched
        assert case.others() == others
    finally:
        case.cleanup(target)


def test_a_non_empty_target_is_refused_without_force(case: Case) -> None:
    target = case.name("fidelity_busy")
    try:
        case.engine.build(target)
        case.engine.scribble(target)
        before = case.engine.snapshot(target)
        databases = case.engine.databases()
        result = case.cli("restore", case.backup_id, "--to-source", LABEL, "--db-name", target)
        assert result.returncode == 1, result.stdout
        assert "--force" in result.stderr
        assert case.engine.snapshot(target) == before
        assert case.engine.databases() == databases
    finally:
        case.cleanup(target)


def test_force_replaces_the_original_and_keeps_it(case: Case) -> None:
    case.engine.scribble(case.original)
    scribbled = case.engine.snapshot(case.original)
    assert scribbled != case.expected
    others = case.others()
    kept: list[str] = []
    try:
        result = case.cli("restore", case.backup_id, "--to-source", LABEL, "--force")
        assert result.returncode == 0, result.stderr
        assert case.engine.snapshot(case.original) == case.expected
        kept = sorted(name for name in case.engine.databases()
                      if name.startswith(case.original + "__before_"))
        assert len(kept) == 1, kept
        assert case.engine.snapshot(kept[0]) == scribbled
        assert case.others() == others
    finally:
        for name in kept:
            case.engine.drop(name)
        if case.engine.snapshot(case.original) != case.expected:  # a failed test: put it back
            case.cleanup(case.original)
            case.engine.restore_by_hand(case.stored, case.original, globals_file=case.globals_file,
                                        workdir=_workdir(case, "put-back"))


def test_restore_by_hand_with_stock_tools(case: Case) -> None:
    target = case.name("fidelity_by_hand")
    others = case.others()
    try:
        case.engine.restore_by_hand(case.stored, target, globals_file=case.globals_file,
                                    workdir=_workdir(case, "by-hand"))
        assert case.engine.snapshot(target) == case.expected
        assert case.others() == others
    finally:
        case.cleanup(target)


# --------------------------------------------------------------------------- failures (source)


async def test_a_load_that_fails_leaves_the_target_as_it_was(case: Case) -> None:
    spoiled = case.engine.spoil(case.raw.read_bytes())
    source = case.source()
    missing = case.name("fidelity_never")
    databases = case.engine.databases()
    others = case.others()

    # Over the original, forced: the original stays exactly as it was.
    with pytest.raises(RestoreError):
        await source.restore(_chunks(spoiled), database=case.original, force=True,
                             workdir=_workdir(case, "spoiled-force"))
    assert case.engine.snapshot(case.original) == case.expected
    # Into a target that did not exist: it still does not.
    with pytest.raises(RestoreError):
        await source.restore(_chunks(spoiled), database=missing, force=False,
                             workdir=_workdir(case, "spoiled-new"))
    assert case.engine.databases() == databases  # no side database, no half-loaded target
    assert case.others() == others


async def test_drop_old_keeps_no_copy(case: Case) -> None:
    target = case.name("fidelity_drop_old")
    try:
        case.engine.build(target)
        case.engine.scribble(target)
        databases = case.engine.databases()
        await case.source().restore(read_file(case.raw), database=target, force=True,
                                    workdir=_workdir(case, "drop-old"), drop_old=True)
        assert case.engine.snapshot(target) == case.expected
        assert case.engine.databases() == databases
    finally:
        case.cleanup(target)


# --------------------------------------------------------------------------- drills


async def test_drill_counts_what_the_dump_held_and_leaves_nothing(case: Case) -> None:
    source = case.source()
    facts = DumpFacts()
    async for _chunk in source.dump(_workdir(case, "facts"), facts):
        pass
    assert facts.tables == case.engine.row_counts(case.original)
    assert sorted(facts.objects) == sorted(OBJECT_KINDS)
    # Every table with rows of its own is a table; not every table has rows of its own
    # (a partitioned table's rows are its partitions').
    assert len(facts.tables) <= facts.objects["tables"]
    assert facts.server_version and facts.tool and facts.tool_version

    scratch = case.name("backupmand_verify_fidelity")
    databases = case.engine.databases()
    others = case.others()
    workdir = _workdir(case, "drill")
    inventory = await source.drill(read_file(case.raw), scratch=scratch, workdir=workdir)
    assert inventory.tables == facts.tables
    assert inventory.objects == facts.objects
    assert inventory.problems == ()
    assert case.engine.databases() == databases
    assert case.others() == others
    assert list(workdir.iterdir()) == []


async def test_drill_of_an_unloadable_dump_fails_and_leaves_nothing(case: Case) -> None:
    spoiled = case.engine.spoil(case.raw.read_bytes())
    scratch = case.name("backupmand_verify_spoiled")
    databases = case.engine.databases()
    workdir = _workdir(case, "drill-spoiled")
    try:
        inventory = await case.source().drill(_chunks(spoiled), scratch=scratch, workdir=workdir)
    except RestoreError:
        pass
    else:  # SQLite's file loads; its own check must then say what is wrong with it
        assert inventory.problems, inventory
    assert case.engine.databases() == databases
    assert list(workdir.iterdir()) == []


async def test_a_cancelled_drill_leaves_nothing(case: Case) -> None:
    raw = case.raw.read_bytes()
    halfway = asyncio.Event()

    async def slow_half() -> AsyncIterator[bytes]:
        """The first half of the dump, then a stream that never ends: the load is underway."""
        async for chunk in _chunks(raw[: len(raw) // 2]):
            yield chunk
        halfway.set()
        await asyncio.Event().wait()
        yield b""  # pragma: no cover - never reached

    scratch = case.name("backupmand_verify_cancelled")
    databases = case.engine.databases()
    workdir = _workdir(case, "drill-cancelled")
    drill = asyncio.create_task(case.source().drill(slow_half(), scratch=scratch, workdir=workdir))
    waiter = asyncio.create_task(halfway.wait())
    done, _ = await asyncio.wait({drill, waiter}, return_when=asyncio.FIRST_COMPLETED)
    assert waiter in done, drill.result() if drill.done() else "drill ended early"
    drill.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await drill
    assert drill.cancelled()
    assert case.engine.databases() == databases
    assert list(workdir.iterdir()) == []

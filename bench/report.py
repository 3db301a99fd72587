"""The report's pieces: figure rows, sections, Markdown tables, ratios and units."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence

from measure import Summary

GIB = 1024**3
MIB = 1024**2
MB = 1000**2


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


@dataclasses.dataclass
class Row:
    """One line of the figures table."""

    key: str
    figure: str
    summary: Summary | None
    fmt: str
    unit: str
    target: str
    passed: bool | None  # None: not measured
    note: str = ""  # why it was not measured

    def measured(self) -> str:
        if self.summary is not None:
            return self.summary.text(self.fmt, self.unit)
        return "not measured" + (f": {self.note}" if self.note else "")

    def cells(self) -> list[str]:
        measured = self.measured()
        verdict = "—" if self.passed is None else ("PASS" if self.passed else "MISS")
        return [self.key, self.figure, measured, self.target, verdict]


@dataclasses.dataclass
class Section:
    title: str
    lines: list[str] = dataclasses.field(default_factory=list)


class Report:
    def __init__(self) -> None:
        self.rows: list[Row] = []
        self.sections: list[Section] = []

    def row(self, row: Row) -> None:
        self.rows.append(row)
        log(f"  {row.key} {row.figure}: {row.measured()} (target {row.target})")

    def section(self, title: str, *lines: str) -> Section:
        section = Section(title, list(lines))
        self.sections.append(section)
        return section


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |"
              for row in rows]
    return lines


def ratio_summary(numerators: Sequence[float], denominators: Sequence[float]) -> Summary:
    """Round by round ratios (each pair was measured side by side)."""
    return Summary(tuple(n / d for n, d in zip(numerators, denominators, strict=True)))


def size_label(size: int) -> str:
    return f"{size / GIB:.2f} GiB" if size >= GIB / 2 else f"{size / MIB:.0f} MiB"

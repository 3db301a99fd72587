"""A drive's location as path segments, with an optional ``{host}`` segment.

``backups/{host}/nightly`` is this host's ``backups/db1/nightly``; listing every host
means listing under ``backups/`` and keeping what sits exactly at
``backups/<host>/nightly/<name>``. (config.py makes sure ``{host}`` is a whole segment,
once at most.)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from .base import HOST_PLACEHOLDER


@dataclasses.dataclass(frozen=True)
class Location:
    #: The segments before ``{host}`` (all of them when there is no ``{host}``).
    before: tuple[str, ...]
    #: The segments after ``{host}``.
    after: tuple[str, ...] = ()
    has_host: bool = False

    @classmethod
    def parse(cls, template: str) -> Location:
        segments = [segment for segment in template.split("/") if segment]
        if HOST_PLACEHOLDER not in segments:
            return cls(tuple(segments))
        index = segments.index(HOST_PLACEHOLDER)
        return cls(tuple(segments[:index]), tuple(segments[index + 1:]), has_host=True)

    def for_host(self, host: str) -> tuple[str, ...]:
        """The segments of one host's location."""
        if not self.has_host:
            return self.before
        return (*self.before, host, *self.after)

    def host_of(self, segments: Sequence[str]) -> str | None:
        """The host whose location ``segments`` is, or None when it is nobody's (without
        ``{host}``: "" for the one location)."""
        if not self.has_host:
            return "" if tuple(segments) == self.before else None
        if len(segments) != len(self.before) + 1 + len(self.after):
            return None
        host = segments[len(self.before)]
        if (tuple(segments[:len(self.before)]) != self.before
                or tuple(segments[len(self.before) + 1:]) != self.after
                or not is_host_segment(host)):
            return None
        return host


def is_host_segment(text: str) -> bool:
    """What may stand for ``{host}`` in a listing: one visible path segment."""
    return bool(text) and not text.startswith(".") and "/" not in text and "\0" not in text

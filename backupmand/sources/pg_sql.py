"""SQL text helpers for the PostgreSQL source: quoting, and a small lexer for the
statements pg_dump writes (enough to split them and find the identifiers in them)."""

from __future__ import annotations

import re
from collections.abc import Iterator

_BARE_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_$]*")


def quote_ident(name: str) -> str:
    """An identifier, always double-quoted (never mistaken for a keyword)."""
    return '"' + name.replace('"', '""') + '"'


def quote_literal(value: str) -> str:
    """A string literal for a session with standard_conforming_strings on (the default)."""
    if "\0" in value:
        raise ValueError("PostgreSQL text cannot contain NUL")
    return "'" + value.replace("'", "''") + "'"


def unquote_ident(token: str) -> str:
    """The name an identifier token stands for: a quoted one as written, a bare one
    folded to lower case, as PostgreSQL does."""
    if token.startswith('"') and token.endswith('"') and len(token) >= 2:
        return token[1:-1].replace('""', '"')
    return token.lower()


# One token of SQL as pg_dump writes it: whitespace, a quoted identifier, a string
# literal (standard, or E'' with backslash escapes), a dollar-quoted body, a word or
# number, a psql variable (:"NAME" / :'NAME' / :NAME), or one other character.
_TOKEN = re.compile(
    r"""
      (?P<space>\s+)
    | (?P<ident>"(?:[^"]|"")*")
    | (?P<estring>[Ee]'(?:[^'\\]|\\.|'')*')
    | (?P<string>'(?:[^']|'')*')
    | (?P<dollar>\$(?P<tag>[A-Za-z_][A-Za-z0-9_]*)?\$.*?\$(?P=tag)?\$)
    | (?P<variable>:(?:"[^"]*"|'[^']*'|[A-Za-z_][A-Za-z0-9_]*))
    | (?P<word>[A-Za-z_][A-Za-z0-9_$]*|[0-9][0-9.]*)
    | (?P<other>.)
    """,
    re.VERBOSE | re.DOTALL,
)


def tokens(text: str, position: int = 0) -> Iterator[tuple[str, str]]:
    """(kind, text) for each token of ``text`` from ``position``; kind is one of the
    group names above."""
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None:  # an unterminated quote: the rest is one token
            yield "other", text[position:]
            return
        kind = match.lastgroup or "other"
        if kind == "tag":
            kind = "dollar"
        yield kind, match.group()
        position = match.end()


def next_statement(text: str, position: int) -> tuple[str, int] | None:
    """The statement starting at ``position`` (up to its ``;``, quotes respected) and
    where it ends; None when the text ends first."""
    end = position
    for kind, piece in tokens(text, position):
        end += len(piece)
        if kind == "other" and piece == ";":
            return text[position:end], end
    return None

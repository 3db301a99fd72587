"""A window over a byte stream that arrives in chunks: search it, edit it, pass it on.

A filter that reads a dump as it streams needs to look at statements that straddle
chunks, to change a few of them, and to let everything else through untouched. This
window keeps the chunks that have not been passed on yet, answers ``find``/``count``
/``piece`` across their seams at absolute offsets, records edits (a range replaced,
or bytes inserted), and ``release``s every chunk that lies wholly before a limit —
the very chunk objects it was given when no edit touches them, so the common case
copies nothing.
"""

from __future__ import annotations

import collections

#: Chunks are joined while together they stay this small.
_SMALL = 64 * 1024


class ChunkWindow:
    """Chunks not yet passed on, addressed by absolute offsets in the stream."""

    def __init__(self) -> None:
        self._chunks: collections.deque[bytes] = collections.deque()
        #: Absolute offset of the first chunk held.
        self.base = 0
        #: Absolute offset of the end of what has arrived.
        self.end = 0
        #: (start, end, replacement), ascending and disjoint; start == end inserts.
        self._edits: collections.deque[tuple[int, int, bytes]] = collections.deque()
        self._skip_to = 0  # output resumes here (an edit reaching past a released chunk)

    def append(self, chunk: bytes) -> None:
        if not chunk:
            return
        if self._chunks and len(self._chunks[-1]) + len(chunk) <= _SMALL:
            # Small pieces are joined: lookups stay proportional to the bytes held.
            self._chunks[-1] += chunk
        else:
            self._chunks.append(chunk)
        self.end += len(chunk)

    # ------------------------------------------------------------------ reading

    def _locate(self, position: int) -> tuple[int, int]:
        """(index of the chunk holding ``position``, that chunk's absolute offset)."""
        offset = self.base
        for index, chunk in enumerate(self._chunks):
            if position < offset + len(chunk):
                return index, offset
            offset += len(chunk)
        return len(self._chunks), offset

    def piece(self, start: int, stop: int) -> bytes:
        """The bytes in [start, stop) that have arrived (a copy)."""
        start, stop = max(start, self.base), min(stop, self.end)
        if start >= stop:
            return b""
        index, offset = self._locate(start)
        parts: list[bytes] = []
        while start < stop:
            chunk = self._chunks[index]
            low, high = start - offset, min(stop - offset, len(chunk))
            parts.append(chunk[low:high])
            start = offset + high
            offset += len(chunk)
            index += 1
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def find(self, needle: bytes, start: int, stop: int | None = None) -> int:
        """The absolute offset of ``needle`` at or after ``start`` (wholly before
        ``stop``), or -1."""
        stop = self.end if stop is None else min(stop, self.end)
        start = max(start, self.base)
        if stop - start < len(needle):
            return -1
        index, offset = self._locate(start)
        seam = len(needle) - 1
        while index < len(self._chunks) and offset < stop:
            chunk = self._chunks[index]
            low = max(start - offset, 0)
            high = min(stop - offset, len(chunk))
            found = chunk.find(needle, low, high)
            if found >= 0:
                return offset + found
            following = offset + len(chunk)
            if seam and following < stop:
                # The needle may straddle this chunk and the next ones.
                around = self.piece(max(following - seam, start), min(following + seam, stop))
                found = around.find(needle)
                if found >= 0:
                    return max(following - seam, start) + found
            offset = following
            index += 1
        return -1

    def count(self, byte: bytes, start: int, stop: int) -> int:
        """How often the single byte ``byte`` occurs in [start, stop)."""
        assert len(byte) == 1
        start, stop = max(start, self.base), min(stop, self.end)
        total = 0
        index, offset = self._locate(start)
        while index < len(self._chunks) and offset < stop:
            chunk = self._chunks[index]
            total += chunk.count(byte, max(start - offset, 0), min(stop - offset, len(chunk)))
            offset += len(chunk)
            index += 1
        return total

    # ------------------------------------------------------------------ writing

    def edit(self, start: int, stop: int, replacement: bytes) -> None:
        """Replace [start, stop) by ``replacement`` in the output (insert when equal)."""
        if self._edits and start < self._edits[-1][1]:
            raise ValueError("edits must come in stream order and not overlap")
        if start < self.base:
            raise ValueError("that part of the stream was passed on already")
        self._edits.append((start, stop, replacement))

    def release(self, limit: int) -> list[bytes]:
        """Pass on every chunk that ends at or before ``limit``, with its edits applied."""
        output: list[bytes] = []
        while self._chunks and self.base + len(self._chunks[0]) <= limit:
            chunk = self._chunks.popleft()
            start, stop = self.base, self.base + len(chunk)
            position = max(start, self._skip_to)
            while self._edits and (self._edits[0][0] < stop or (
                    self._edits[0][0] == stop == self._edits[0][1])):
                edit_start, edit_stop, replacement = self._edits.popleft()
                if edit_start > position:
                    output.append(chunk[position - start:edit_start - start])
                if replacement:
                    output.append(replacement)
                position = max(position, edit_stop)
                if edit_stop > stop:
                    self._skip_to = edit_stop
                    break
            if position == start:
                output.append(chunk)  # untouched: the very object, no copy
            elif position < stop:
                output.append(chunk[position - start:])
            self.base = stop
        return output

    def release_all(self) -> list[bytes]:
        """Everything left, edits applied (insertions at the very end included)."""
        output = self.release(self.end)
        while self._edits:
            start, _stop, replacement = self._edits.popleft()
            assert start >= self.end
            output.append(replacement)
        return output

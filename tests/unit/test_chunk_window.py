"""ChunkWindow: searches across chunk seams, edits, and zero-copy release."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from backupmand.sources.chunk_window import ChunkWindow

BIG = 70_000  # above the size under which chunks are joined


def window_of(*chunks: bytes) -> ChunkWindow:
    window = ChunkWindow()
    for chunk in chunks:
        window.append(chunk)
    return window


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet="ab;)\n", max_size=60).map(str.encode),
       st.lists(st.integers(min_value=0, max_value=60), max_size=8),
       st.sampled_from([b";", b");\n", b"\n", b"ab;", b"b)"]),
       st.integers(min_value=0, max_value=60))
def test_find_count_piece_match_the_joined_bytes(data: bytes, cuts: list[int], needle: bytes,
                                                 start: int) -> None:
    positions = [0, *sorted(min(cut, len(data)) for cut in cuts), len(data)]
    window = window_of(*(data[a:b] for a, b in itertools.pairwise(positions)))
    assert window.find(needle, start) == data.find(needle, start)
    assert window.count(b"\n", start, len(data)) == data.count(b"\n", start)
    assert window.piece(start, start + 7) == data[start:start + 7]


def test_untouched_chunks_are_released_as_they_are() -> None:
    first, second, third = b"a" * BIG, b"b" * BIG, b"c" * BIG
    window = window_of(first, second, third)
    released = window.release(2 * BIG + 10)  # the third is cut by the limit: held
    assert released[0] is first and released[1] is second and len(released) == 2
    assert window.release_all()[0] is third


def test_edits_replace_and_insert_across_seams() -> None:
    first, second = b"0123456789" * 7000, b"abcdefghij" * 7000
    window = window_of(first, second)
    window.edit(0, 0, b"<start>")
    window.edit(BIG - 3, BIG + 3, b"|")  # straddles the seam
    window.edit(2 * BIG, 2 * BIG, b"<end>")
    out = b"".join(window.release(BIG)) + b"".join(window.release_all())
    assert out == b"<start>" + first[:-3] + b"|" + second[3:] + b"<end>"


def test_edits_must_come_in_order() -> None:
    window = window_of(b"x" * 100)
    window.edit(50, 60, b"")
    for start, stop in ((55, 70), (10, 20)):
        try:
            window.edit(start, stop, b"")
        except ValueError:
            continue
        raise AssertionError((start, stop))

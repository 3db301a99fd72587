"""Turns pyrage's file-object streaming into an incremental ``feed(block) -> bytes``.

pyrage streams only through ``encrypt_io(reader, writer, …)`` / ``decrypt_io``: one
call that reads its input and writes its output through file objects until the end.
The pipeline, though, hands over one block at a time from a worker thread, the way
it drives a compressor. So the call runs in a thread of its own whose "files" are a
Channel: ``read()`` hands out the block the caller gave and waits for the next one,
``write()`` collects what rage produced; the caller takes that output back.

rage holds the GIL while it encrypts (pyrage never releases it), but it calls our
Python ``read`` every 8 KiB, and at each call the interpreter may pass the GIL to
another thread: the event loop waits at most one switch interval (5 ms), as for any
Python thread.

Memory stays bounded: the caller gives a block only once the previous one was read
(at most one block waits), and rage writes out each 64 KiB chunk as it seals it.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer


class StreamFailure(Exception):
    """Raised in the caller's thread when the rage call failed; ``cause`` is rage's error."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


class Abandoned(OSError):
    """Raised inside rage's read when the caller gave up: it unwinds the rage call."""


class Channel:
    """The meeting point of the caller and the rage thread; every field under ``changed``."""

    def __init__(self) -> None:
        self.changed = threading.Condition()
        self.block = b""
        self.offset = 0
        self.ended = False  # the caller gave its last block
        self.abandoned = False
        self.idle = False  # rage waits in read() for a block
        self.finished = False  # the rage call returned
        self.error: BaseException | None = None
        self.output = bytearray()

    def consumed(self) -> bool:
        return self.offset >= len(self.block)


class _Input(io.BufferedIOBase):
    """What rage reads: the caller's blocks, one after the other."""

    def __init__(self, channel: Channel) -> None:
        super().__init__()
        self._channel = channel

    def read(self, size: int | None = -1, /) -> bytes:
        channel = self._channel
        with channel.changed:
            while channel.consumed() and not channel.ended and not channel.abandoned:
                channel.idle = True
                channel.changed.notify_all()
                channel.changed.wait()
            channel.idle = False
            if channel.abandoned:
                raise Abandoned("the stream was abandoned")
            start = channel.offset
            end = len(channel.block) if size is None or size < 0 else min(start + size, len(channel.block))
            channel.offset = end
            channel.changed.notify_all()  # the caller may wait to give the next block
            return channel.block[start:end]

    def readable(self) -> bool:
        return True


class _Output(io.BufferedIOBase):
    """Where rage writes: collected until the caller takes it."""

    def __init__(self, channel: Channel) -> None:
        super().__init__()
        self._channel = channel

    def write(self, data: ReadableBuffer, /) -> int:
        with self._channel.changed:
            self._channel.output += data
            return len(memoryview(data))

    def writable(self) -> bool:
        return True


#: The rage call, given its reader and writer.
Call = Callable[[io.BufferedIOBase, io.BufferedIOBase], None]


class Bridge:
    """One rage streaming call in its own thread, fed block by block.

    ``feed(block, settle=False)`` returns as soon as the block is handed over (the
    previous one having been read), with whatever output is ready: rage works on the
    block while the caller goes on. ``feed(block, settle=True)`` also waits until rage
    has taken in the whole block and asks for more, so that its output, or its error,
    belongs to this call. ``finish()`` ends the input and waits for the last bytes;
    ``abandon()`` stops the thread at once and joins it.

    An error of the rage call is kept and raised as StreamFailure from every later call.
    """

    def __init__(self, call: Call, name: str) -> None:
        self._channel = Channel()
        self._thread = threading.Thread(target=self._run, args=(call,), name=name, daemon=True)
        self._thread.start()

    def _run(self, call: Call) -> None:
        channel = self._channel
        try:
            call(_Input(channel), _Output(channel))
        except BaseException as error:  # a rage panic is a BaseException too
            with channel.changed:
                channel.error = error
        finally:
            with channel.changed:
                channel.finished = True
                channel.changed.notify_all()

    def feed(self, block: bytes, *, settle: bool = False) -> bytes:
        channel = self._channel
        with channel.changed:
            self._check_open()
            while not channel.consumed() and not channel.finished:
                channel.changed.wait()
            self._raise_failure()
            if block:
                channel.block = block
                channel.offset = 0
                channel.changed.notify_all()
            if settle:
                while not channel.finished and not (channel.idle and channel.consumed()):
                    channel.changed.wait()
                self._raise_failure()
            return self._take()

    def finish(self) -> bytes:
        channel = self._channel
        with channel.changed:
            self._check_open()
            channel.ended = True
            channel.changed.notify_all()
            while not channel.finished:
                channel.changed.wait()
        self._thread.join()  # it has returned: this only waits for the thread to exit
        with channel.changed:
            self._raise_failure()
            return self._take()

    def abandon(self, *, wait: bool = True) -> None:
        """Stop the rage call at its next read and (with ``wait``) join its thread; idempotent.

        rage reads every 8 KiB, so the thread ends within one chunk's work.
        """
        channel = self._channel
        with channel.changed:
            channel.abandoned = True
            channel.changed.notify_all()
        if wait and self._thread is not threading.current_thread():
            self._thread.join()

    def _check_open(self) -> None:
        if self._channel.abandoned or self._channel.ended:
            raise RuntimeError("the stream is already finished or abandoned")

    def _raise_failure(self) -> None:
        error = self._channel.error
        if error is not None:
            raise StreamFailure(error)
        if self._channel.finished and not self._channel.ended:
            raise StreamFailure(RuntimeError("the age stream ended before its input did"))

    def _take(self) -> bytes:
        output = bytes(self._channel.output)
        self._channel.output.clear()
        return output

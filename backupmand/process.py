"""The one place where backupmand starts subprocesses.

Every child runs in its own session (so its whole process group can be stopped),
is killed by the kernel if backupmand itself dies (so a `kill -9` of the daemon
leaves no dump running on, orphaned, while the next start cleans up after it),
gets its secrets through its environment or a file descriptor, never argv, and has
its stderr collected into a bounded tail that is redacted before it is logged or
recorded. A child that exits non-zero, dies by a signal or outlives its deadline
raises ProcessError with that tail as the reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import dataclasses
import fcntl
import os
import select
import shutil
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import structlog

from .errors import ProcessError

log = structlog.get_logger("backupmand.process")

STDERR_TAIL = 64 * 1024
READ_LIMIT = 8 * 1024 * 1024
KILL_GRACE = 3.0
#: stream_output yields blocks of this size (the last one may be shorter).
BLOCK_SIZE = 1024 * 1024
#: The stdout pipe's capacity asked of the kernel (F_SETPIPE_SZ; Linux's default is 64 KiB).
PIPE_SIZE = 1024 * 1024
#: A read shorter than this drained the pipe: with a roomy pipe, wait a little before the next.
_SHORT_READ = 64 * 1024
_PAUSE = 0.002

#: The only variables a child inherits from the daemon: where tools are, the locale and
#: time zone its messages and timestamps use, and where it may keep temporary files.
#: Everything else stays with the daemon: other sources' passwords, the API key, tokens
#: given as ${VAR}, AWS_*/PG*/MYSQL* variables that would silently change which server
#: or credentials a tool uses, and systemd's NOTIFY_SOCKET (a child must not speak for
#: the daemon). A child's own credentials come in its Command's env.
INHERITED_NAMES = frozenset({"PATH", "LANG", "LANGUAGE", "TZ", "HOME", "TMPDIR"})
INHERITED_PREFIXES = ("LC_",)


@dataclasses.dataclass(frozen=True)
class Command:
    """A subprocess as data: what to run, with what environment, hiding which secrets."""

    argv: tuple[str, ...]
    env: Mapping[str, str] = dataclasses.field(default_factory=dict)
    secrets: tuple[str, ...] = ()
    pass_fds: tuple[int, ...] = ()
    cwd: Path | None = None

    def display(self) -> str:
        return redact(" ".join(self.argv), self.secrets)


def redact(text: str, secrets: Iterable[str]) -> str:
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        text = text.replace(secret, "********")
    return text


def find_tool(*names: str) -> str:
    """The first of ``names`` found on PATH; ProcessError naming them all otherwise."""
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    raise ProcessError(f"{' or '.join(names)} not found on PATH: install it on this host")


async def locate(*names: str) -> str:
    """find_tool off the event loop (PATH lookups stat the file system)."""
    return await asyncio.to_thread(find_tool, *names)


def child_environment(extra: Mapping[str, str]) -> dict[str, str]:
    """What a child sees: the few inherited variables, then its own ``extra``."""
    env = {name: value for name, value in os.environ.items()
           if name in INHERITED_NAMES or name.startswith(INHERITED_PREFIXES)}
    env.setdefault("PATH", os.defpath)
    env.update(extra)
    return env


class _Tail:
    """The last bytes of a stream, collected without blocking the child."""

    def __init__(self, limit: int = STDERR_TAIL) -> None:
        self.limit = limit
        self.data = bytearray()

    async def drain(self, stream: asyncio.StreamReader | None) -> None:
        if stream is None:
            return
        while chunk := await stream.read(65536):
            self.data += chunk
            if len(self.data) > self.limit:
                del self.data[: len(self.data) - self.limit]

    def text(self, secrets: Iterable[str], lines: int = 20) -> str:
        decoded = self.data.decode("utf-8", "replace").strip().splitlines()
        return redact("\n".join(decoded[-lines:]), secrets)


class Running:
    """A started child: its process, its stderr tail, and how to stop its whole group."""

    def __init__(self, command: Command, process: asyncio.subprocess.Process) -> None:
        self.command = command
        self.process = process
        self.stderr = _Tail()
        self._stderr_task = asyncio.ensure_future(self.stderr.drain(process.stderr))
        self.started = time.monotonic()

    @property
    def name(self) -> str:
        return Path(self.command.argv[0]).name

    async def stop(self) -> None:
        """SIGTERM to the process group, SIGKILL after a grace period; idempotent."""
        if self.process.returncode is not None:
            await self._reap_group()
            return
        _signal_group(self.process.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(asyncio.shield(self.process.wait()), KILL_GRACE)
        except TimeoutError:
            _signal_group(self.process.pid, signal.SIGKILL)
            await self.process.wait()
        await self._reap_group()

    async def _reap_group(self) -> None:
        # Children of the tool (a shell pipeline, a compressor) die with the group.
        _signal_group(self.process.pid, signal.SIGKILL)
        with contextlib.suppress(TimeoutError, asyncio.CancelledError):
            await asyncio.wait_for(asyncio.shield(self._stderr_task), 1.0)

    async def wait(self) -> int:
        code = await self.process.wait()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._stderr_task), 5.0)
        return code

    def failure(self, code: int) -> ProcessError:
        if code < 0:
            try:
                how = f"was killed by {signal.Signals(-code).name}"
            except ValueError:
                how = f"was killed by signal {-code}"
            meaning = signal.strsignal(-code)  # SIGXFSZ alone tells few operators anything
            if meaning:
                how += f" ({meaning})"
        else:
            how = f"exited with status {code}"
        tail = self.stderr.text(self.command.secrets)
        return ProcessError(f"{self.name} {how}" + (f": {tail}" if tail else ""))


_PR_SET_PDEATHSIG = 1


def _load_prctl() -> Callable[[int, int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl: Callable[[int, int], int] = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    return prctl


#: Resolved once, here: the child may only make the call between fork and exec.
_PRCTL = _load_prctl()


def _dies_with(parent: int) -> Callable[[], None] | None:
    """A preexec_fn that makes the kernel SIGKILL the child when ``parent`` dies.

    The signal follows the thread that forked: children are started from the event
    loop's thread, which lives as long as the process.
    """
    prctl = _PRCTL
    if prctl is None:
        return None

    def arrange() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # died before the request was made
            os._exit(1)

    return arrange


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


async def start(
    command: Command, *, stdin: int | None = asyncio.subprocess.DEVNULL,
    stdout: int | None = asyncio.subprocess.PIPE,
) -> Running:
    log.debug("process.start", command=command.display())
    try:
        process = await asyncio.create_subprocess_exec(
            *command.argv,
            stdin=stdin,
            stdout=stdout,
            stderr=asyncio.subprocess.PIPE,
            env=child_environment(command.env),
            cwd=command.cwd,
            pass_fds=command.pass_fds,
            start_new_session=True,
            preexec_fn=_dies_with(os.getpid()),  # one prctl call, no lock taken
            limit=READ_LIMIT,
        )
    except FileNotFoundError:
        raise ProcessError(f"{command.argv[0]} not found: install it on this host") from None
    except PermissionError as error:
        raise ProcessError(f"cannot run {command.argv[0]}: {error.strerror}") from None
    return Running(command, process)


class _PipeReader:
    """Reads a child's stdout pipe in a thread of its own, one block ahead of its consumer.

    asyncio's pipe transport wakes the event loop for every write the child makes, and
    pg_dump writes a few KiB at a time: some 60,000 wake-ups (about 3 s of CPU) per GiB,
    taken from the compressor on a small machine. Here one thread reads the pipe into
    BLOCK_SIZE blocks; when a read drains it, the thread pauses a couple of
    milliseconds so that the (1 MiB) pipe fills meanwhile. The child never waits for
    that: 1 MiB takes longer than the pause to write. The next block is read while the
    consumer handles the current one.
    """

    def __init__(self, fd: int, name: str) -> None:
        self._fd = fd
        self._roomy = _pipe_capacity(fd) >= PIPE_SIZE
        os.set_blocking(fd, False)
        self._buffer = bytearray(BLOCK_SIZE)
        self._closing = False
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"read-{name}")
        self._ahead: asyncio.Future[bytes] | None = None

    def _fill(self) -> bytes:
        view = memoryview(self._buffer)
        poller = select.poll()
        poller.register(self._fd, select.POLLIN)
        got = 0
        while got < BLOCK_SIZE and not self._closing:
            try:
                count = os.readv(self._fd, [view[got:]])
            except BlockingIOError:
                poller.poll(100)  # returns at once when data (or the end) arrives
                continue
            if count == 0:
                break  # every writer is gone
            got += count
            if count < _SHORT_READ and self._roomy:
                time.sleep(_PAUSE)
        return bytes(view[:got])

    async def read(self) -> bytes:
        """The next block; b"" at the end of the stream."""
        loop = asyncio.get_running_loop()
        if self._ahead is None:
            self._ahead = loop.run_in_executor(self._executor, self._fill)
        block = await asyncio.shield(self._ahead)
        self._ahead = loop.run_in_executor(self._executor, self._fill) if block else None
        return block

    def close(self) -> None:
        """Stop reading; the descriptor is closed once the thread is done with it."""
        self._closing = True
        if self._ahead is not None:
            self._ahead.cancel()
        self._executor.submit(os.close, self._fd)
        self._executor.shutdown(wait=False)


def _pipe_capacity(fd: int) -> int:
    """Grow a pipe to PIPE_SIZE where the kernel allows it; its capacity in bytes."""
    with contextlib.suppress(OSError):
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
    try:
        return fcntl.fcntl(fd, fcntl.F_GETPIPE_SZ)
    except OSError:
        return 0


async def stream_output(command: Command, *, timeout: float) -> AsyncIterator[bytes]:
    """Run ``command`` and yield its stdout as it comes, in blocks of about 1 MiB.

    Raises ProcessError after the last chunk when the child failed, and when the
    deadline passes. Closing or cancelling the generator stops the process group.
    """
    read_end, write_end = os.pipe2(os.O_CLOEXEC)
    try:
        running = await start(command, stdout=write_end)
    except BaseException:
        os.close(read_end)
        raise
    finally:
        os.close(write_end)  # the child holds its own copy: the end of the stream is its exit
    reader = _PipeReader(read_end, running.name)
    deadline = time.monotonic() + timeout
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ProcessError(f"{running.name} timed out after {timeout:g} s")
            try:
                chunk = await asyncio.wait_for(reader.read(), remaining)
            except TimeoutError:
                raise ProcessError(f"{running.name} timed out after {timeout:g} s") from None
            if not chunk:
                break
            yield chunk
        try:
            code = await asyncio.wait_for(running.wait(), max(deadline - time.monotonic(), 1.0))
        except TimeoutError:
            raise ProcessError(f"{running.name} timed out after {timeout:g} s") from None
        if code != 0:
            raise running.failure(code)
    finally:
        try:
            await running.stop()
        finally:
            reader.close()


@dataclasses.dataclass(frozen=True)
class Completed:
    code: int
    stdout: bytes
    stderr: str


async def run(
    command: Command,
    *,
    timeout: float,
    input_chunks: AsyncIterator[bytes] | None = None,
    check: bool = True,
    stdout_limit: int = 1024 * 1024,
) -> Completed:
    """Run ``command`` to completion, feeding ``input_chunks`` to its stdin as a stream.

    Stdout is kept up to ``stdout_limit`` bytes (for small answers such as a health
    query); a loader's output beyond that is discarded, never buffered.
    """
    running = await start(
        command, stdin=asyncio.subprocess.PIPE if input_chunks is not None else
        asyncio.subprocess.DEVNULL,
    )
    output = bytearray()

    async def collect() -> None:
        assert running.process.stdout is not None
        while chunk := await running.process.stdout.read(65536):
            if len(output) < stdout_limit:
                output.extend(chunk[: stdout_limit - len(output)])

    async def feed() -> None:
        stdin = running.process.stdin
        assert stdin is not None and input_chunks is not None
        try:
            async for chunk in input_chunks:
                stdin.write(chunk)
                await stdin.drain()
        except (BrokenPipeError, ConnectionResetError):
            pass  # the child stopped reading: its exit status tells why
        finally:
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                stdin.close()
                await stdin.wait_closed()

    async def whole() -> int:
        tasks = [collect()]
        if input_chunks is not None:
            tasks.append(feed())
        await asyncio.gather(*tasks)
        return await running.wait()

    try:
        code = await asyncio.wait_for(whole(), timeout)
    except TimeoutError:
        raise ProcessError(f"{running.name} timed out after {timeout:g} s") from None
    finally:
        await running.stop()
    if check and code != 0:
        raise running.failure(code)
    return Completed(code, bytes(output), running.stderr.text(command.secrets))

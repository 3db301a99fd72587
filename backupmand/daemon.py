"""`backupmand serve`: the API and the schedule in one process, with an orderly stop.

Start order: open-file limit raised -> catalog and recovery (Runtime) -> HTTP listener
(idle connections closed, connections capped: connections.py) -> schedule -> READY=1.
Stop (SIGTERM or SIGINT): STOPPING=1 -> no new ticks -> in-flight backups get
``shutdown_grace`` seconds, then are stopped and recorded failed -> listener closed
-> exit 0. SIGHUP is logged and ignored: the config is read at start only, so a
changed config takes effect with `systemctl restart backupmand`.
"""

from __future__ import annotations

import asyncio
import contextlib
import faulthandler
import signal

import structlog
from aiohttp import web

from . import systemd
from .api import SCHEDULE, create_app
from .config import Settings
from .connections import (
    ConnectionGuard,
    connection_limit,
    open_listener,
    quiet_client_errors,
    raise_open_file_limit,
)
from .runtime import Runtime
from .scheduler import Schedule

log = structlog.get_logger("backupmand.daemon")


async def serve(settings: Settings, *, port: int | None = None, listen: str | None = None) -> int:
    host = listen or settings.http.listen
    chosen_port = settings.http.port if port is None else port
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(
        signal.SIGHUP,
        lambda: log.warning("signal.sighup_ignored",
                            reason="the config is read at start; restart to apply changes"))
    faulthandler.enable()  # a watchdog SIGABRT then leaves every thread's stack in the journal
    guard = ConnectionGuard(connection_limit(settings.http.max_connections,
                                             raise_open_file_limit()))
    quiet_client_errors()
    systemd.status("starting: opening the catalog and recovering interrupted backups")
    async with Runtime.open(settings, daemon=True) as runtime:
        schedule = Schedule(runtime)
        app = create_app(runtime)
        app[SCHEDULE] = schedule
        app.middlewares.insert(0, guard.middleware)  # outermost: sees every request
        runner = web.AppRunner(app, access_log=None, handle_signals=False,
                               keepalive_timeout=settings.http.idle_timeout)
        await runner.setup()
        guard.server = runner.server
        listener = await open_listener(guard, host, chosen_port)
        schedule.start()

        def describe() -> str:
            if runtime.running:
                steps = ", ".join(f"{label} ({step})" for label, step in runtime.running.items())
                return f"backing up {steps}"
            return f"idle; next backup {schedule.next_run_text()}"

        def report(_label: str, _step: str) -> None:
            systemd.status(describe())

        runtime.add_progress_listener(report)
        watchdog = asyncio.create_task(systemd.watchdog_loop())
        log.info("daemon.ready", listen=host, port=chosen_port, next_run=schedule.next_run_text())
        systemd.ready(describe())
        try:
            await stop.wait()
        finally:
            log.info("daemon.stopping", in_flight=runtime.in_flight)
            systemd.stopping(f"stopping: {runtime.in_flight} backup(s) in flight")
            if settings.shutdown_grace > 20:
                systemd.extend_timeout(settings.shutdown_grace + 10)
            schedule.shutdown()
            await runtime.stop(settings.shutdown_grace)
            listener.close()
            await runner.cleanup()
            watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watchdog
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        loop.remove_signal_handler(sig)
    log.info("daemon.stopped")
    return 0

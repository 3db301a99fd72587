"""Notifications from the real pipeline: sent after the outcome is recorded, in order,
and never able to change a backup's status."""

from __future__ import annotations

import json

from backupmand.models import Status


async def test_reports_pings_and_a_failing_webhook_leave_the_backup_finished(
    tmp_path, make_settings, open_runtime, webhook_receiver, smtp_server
):
    webhook_receiver.fail(None, status=500)  # this receiver always fails
    settings = make_settings(notifiers={
        "mail": {"enabled": True, "smtp_host": smtp_server.host, "smtp_port": smtp_server.port,
                 "smtp_crypto": "none", "destinations": [{"name": "Ops", "email": "ops@example.com"}]},
        "webhook": {"enabled": True, "attempts": 2, "backoff": 0.01, "endpoints": [
            {"name": "broken", "url": webhook_receiver.url("/hook"), "token": "tok-123"}]},
        "ping": {"enabled": True, "url": webhook_receiver.url("/ping"), "attempts": 1},
    })
    async with open_runtime(settings) as runtime:
        (backup,) = await runtime.start_backups()
        (final,) = await runtime.wait([backup.id])
        requests = await webhook_receiver.wait_for(4)
    assert final.status is Status.FINISHED, "a failing notifier never changes the status"
    pings = [r.path for r in requests if r.path.startswith("/ping")]
    assert pings == ["/ping/start", "/ping"], "start first, then success"
    hooks = [r for r in requests if r.path == "/hook"]
    assert len(hooks) == 2 and all(r.answered == 500 for r in hooks)
    body = json.loads(hooks[0].body)
    assert body["Event"] == "backup_report" and body["Payload"]["Id"] == backup.id
    assert body["Payload"]["Status"] == "finished", "sent after the outcome was recorded"
    assert hooks[0].headers["X-Webhook-Token"] == "tok-123"
    (mail,) = smtp_server.messages
    assert "finished" in mail.message["Subject"] and "app" in mail.message["Subject"]


async def test_a_failed_backup_pings_fail(tmp_path, make_settings, open_runtime, webhook_receiver):
    settings = make_settings(
        data_sources=[{"provider": "sqlite", "label": "gone", "db_path": str(tmp_path / "no.db"),
                       "tmp_folder": str(tmp_path / "dumps")}],
        notifiers={"ping": {"enabled": True, "url": webhook_receiver.url("/ping"), "attempts": 1}})
    async with open_runtime(settings) as runtime:
        (backup,) = await runtime.start_backups()
        (final,) = await runtime.wait([backup.id])
        requests = await webhook_receiver.wait_for(2)
    assert final.status is Status.FAILED
    assert [r.path for r in requests] == ["/ping/start", "/ping/fail"]

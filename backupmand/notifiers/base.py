"""The notifier contract: telling people about backups.

The pipeline calls ``backup_started`` when a backup begins and ``backup_finished``
once its outcome (finished or failed) is recorded; a restore drill calls
``verify_finished`` once its outcome (``backup.verification``: passed or failed) is
recorded; ``backup_suspect`` follows a finished backup flagged suspicious (SPEC §6.3);
the schedule calls ``schedule_failed`` when a tick could not even start its work. A
notifier's failure is logged by the caller with its channel and never changes a
backup. ``health`` checks reachability without sending anything.

Every method but ``backup_finished`` does nothing by default: a channel says only
what it has something to say about.
"""

from __future__ import annotations

import abc

from ..models import Backup


class Notifier(abc.ABC):
    #: The channel's name in logs and in /health (mail, webhook, ping, apprise, ...).
    name: str

    async def backup_started(self, backup: Backup) -> None:
        """A backup began."""

    @abc.abstractmethod
    async def backup_finished(self, backup: Backup) -> None:
        """A backup's outcome is recorded (``backup.status`` is finished or failed)."""

    async def verify_finished(self, backup: Backup) -> None:
        """A restore drill's outcome is recorded (``backup.verification``)."""

    async def backup_suspect(self, backup: Backup) -> None:
        """A finished backup was flagged suspect (``backup.suspect_reason``)."""

    async def schedule_failed(self, job: str, reason: str) -> None:
        """A scheduled tick (``job``: backup_job or verify_job) failed to start its work."""

    async def health(self) -> None:
        """Return when the channel looks usable; raise HealthError otherwise."""

    async def aclose(self) -> None:
        """Release clients and connections."""

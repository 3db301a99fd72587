"""The notifier contract: telling people about backups.

The pipeline calls ``backup_started`` when a backup begins and ``backup_finished``
once its outcome (finished or failed) is recorded. A notifier's failure is logged
by the caller with its channel and never changes a backup's status. ``health``
checks reachability without sending anything.
"""

from __future__ import annotations

import abc

from ..models import Backup


class Notifier(abc.ABC):
    #: The channel's name in logs and in /health (mail, webhook, ping, ...).
    name: str

    async def backup_started(self, backup: Backup) -> None:
        """A backup began (default: nothing to say)."""

    @abc.abstractmethod
    async def backup_finished(self, backup: Backup) -> None:
        """A backup's outcome is recorded (``backup.status`` is finished or failed)."""

    async def health(self) -> None:
        """Return when the channel looks usable; raise HealthError otherwise."""

    async def aclose(self) -> None:
        """Release clients and connections."""

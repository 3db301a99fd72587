"""backupmand: a database backup daemon."""

from __future__ import annotations

__version__ = "1.1.0"

"""Drives: one module per provider, each implementing drives.base.Drive."""

from __future__ import annotations

from typing import Any

from ..config import GoogleDrive, LocalDrive, S3Drive
from .base import Drive, RemoteFile, StoredFile


def build_drive(config: LocalDrive | S3Drive | GoogleDrive, host: str = "localhost") -> Drive[Any]:
    """The Drive for one drives entry (imports only the client library it needs)."""
    if isinstance(config, LocalDrive):
        from .local import LocalFolder

        return LocalFolder(config, host)
    if isinstance(config, S3Drive):
        from .s3 import S3Bucket

        return S3Bucket(config, host)
    if isinstance(config, GoogleDrive):
        from .google_drive import GoogleDriveFolder

        return GoogleDriveFolder(config, host)
    raise TypeError(f"unknown drive config {type(config).__name__}")


__all__ = ["Drive", "RemoteFile", "StoredFile", "build_drive"]

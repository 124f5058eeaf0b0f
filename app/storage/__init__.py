"""Storage backends behind one interface (`Storage`), chosen by `REGISTRY_STORAGE`."""

from __future__ import annotations

from app.settings import Settings
from app.storage.base import KeyBlocked, ObjectExists, ObjectInfo, Storage, StorageFault

__all__ = ["KeyBlocked", "ObjectExists", "ObjectInfo", "Storage", "StorageFault", "open_storage"]


def open_storage(settings: Settings, *, create: bool = True) -> Storage:
    """The configured store; with `create` false a missing filesystem store is a StorageFault, not a new one."""
    if settings.storage == "s3":
        from app.storage.s3 import S3Storage

        return S3Storage(settings)
    from app.storage.filesystem import FilesystemStorage

    return FilesystemStorage(settings.data_dir, create=create)

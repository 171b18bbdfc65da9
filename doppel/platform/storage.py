"""Blob storage for uploads and outputs: a folder per tenant on the local disk.

Writes go to a temporary name and are renamed into place, so a reader never sees half a file.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path


class LocalStorage:
    def __init__(self, root: Path) -> None:
        self.root = root

    def path_for(self, tenant_id: uuid.UUID, kind: str, name: str) -> Path:
        return self.root / str(tenant_id) / kind / name

    def put(self, tenant_id: uuid.UUID, kind: str, name: str, data: bytes) -> Path:
        path = self.path_for(tenant_id, kind, name)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
        with tmp.open("wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        tmp.rename(path)
        return path

    def put_file(self, tenant_id: uuid.UUID, kind: str, name: str, src: Path) -> Path:
        """Copy `src` (a file already on disk: a fetched URL, an operator's video) into place
        without reading it into memory; `src` is left as it was.
        """
        path = self.path_for(tenant_id, kind, name)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
        try:
            shutil.copyfile(src, tmp)
            tmp.rename(path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return path

    def delete(self, path: Path) -> None:
        path.unlink(missing_ok=True)

"""Dataset file store: validated JSONL files on disk, metadata in SQLite."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import pathlib
import tempfile
import time
import uuid

from rft_learner.datasets import DatasetReport, iter_lines, validate_lines
from rft_learner.db import Database, newest_first_filter


class FileError(Exception):
    """Base of the errors the servicer maps to status codes."""


class InvalidFile(FileError):
    """The upload is not a valid dataset; nothing was stored."""

    def __init__(self, message: str, report: DatasetReport | None = None) -> None:
        super().__init__(message)
        self.report = report


class FileNotFound(FileError):
    """No file has this id."""


@dataclasses.dataclass(frozen=True)
class StoredFile:
    id: str
    filename: str
    purpose: int
    size_bytes: int
    line_count: int
    sha256: str
    path: str
    created_at: float
    owner: str = "default"


class FileStore:
    """Stores dataset files under `root` with metadata in `db`."""

    def __init__(self, db: Database, root: pathlib.Path, max_file_bytes: int, max_line_bytes: int) -> None:
        self.db = db
        self.root = root
        self.max_file_bytes = max_file_bytes
        self.max_line_bytes = max_line_bytes
        (root / "incoming").mkdir(parents=True, exist_ok=True)

    def begin_upload(self) -> Upload:
        return Upload(self)

    def commit(self, upload: Upload, filename: str, purpose: int, owner: str = "default") -> StoredFile:
        """Validate a finished upload and store it atomically, or raise InvalidFile."""
        upload.close()
        with open(upload.temp_path, "rb") as handle:
            chunks = iter(lambda: handle.read(1 << 20), b"")
            report = validate_lines(iter_lines(chunks, self.max_line_bytes), self.max_line_bytes)
        if not report.ok:
            upload.discard()
            if report.errors[0].line == 0:  # about the whole file, not a line
                raise InvalidFile(f"{filename or 'the file'}: {report.errors[0]}", report)
            raise InvalidFile(
                f"{filename or 'the file'} has {len(report.errors)} bad line(s):\n{report.summary()}", report
            )
        file_id = "file-" + uuid.uuid4().hex[:24]
        final = self.root / f"{file_id}.jsonl"
        os.replace(upload.temp_path, final)
        stored = StoredFile(
            id=file_id,
            filename=filename,
            purpose=purpose,
            size_bytes=upload.size,
            line_count=report.examples,
            sha256=upload.sha256.hexdigest(),
            path=str(final),
            created_at=time.time(),
            owner=owner,
        )
        row = dataclasses.asdict(stored)
        with self.db.transaction() as conn:
            conn.execute(
                f"INSERT INTO files ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})", tuple(row.values())
            )
        return stored

    def get(self, file_id: str, owner: str | None = None) -> StoredFile:
        """The file; with `owner`, another tenant's file is reported as missing (not as forbidden,
        which would confirm that the id exists)."""
        rows = self.db.query("SELECT * FROM files WHERE id = ?", (file_id,))
        if not rows or (owner is not None and rows[0]["owner"] != owner):
            raise FileNotFound(f"no file with id {file_id!r}")
        return StoredFile(**dict(rows[0]))

    def list(
        self, limit: int, offset: int = 0, purpose: int = 0, owner: str | None = None, after: str = ""
    ) -> list[StoredFile]:
        """Newest first; `after` (a file id) starts after that file, as a cursor."""
        where, params = newest_first_filter(self.db, "files", owner, after)
        if purpose:
            where.append("purpose = ?")
            params.append(purpose)
        sql = "SELECT * FROM files" + (" WHERE " + " AND ".join(where) if where else "")
        sql += " ORDER BY created_at DESC, id DESC LIMIT ? OFFSET ?"
        return [StoredFile(**dict(r)) for r in self.db.query(sql, (*params, limit, offset))]

    def delete(self, file_id: str, owner: str | None = None) -> None:
        stored = self.get(file_id, owner)
        with self.db.transaction() as conn:
            conn.execute("DELETE FROM files WHERE id = ?", (file_id,))
        pathlib.Path(stored.path).unlink(missing_ok=True)


class Upload:
    """An upload in progress: bytes go to a temporary file and are hashed as they come."""

    def __init__(self, store: FileStore) -> None:
        self.store = store
        fd, name = tempfile.mkstemp(dir=store.root / "incoming", suffix=".part")
        self.temp_path = pathlib.Path(name)
        self._handle = os.fdopen(fd, "wb")
        self.size = 0
        self.sha256 = hashlib.sha256()

    def write(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self.store.max_file_bytes:
            self.discard()
            raise InvalidFile(f"file is larger than the limit of {self.store.max_file_bytes} bytes")
        self.sha256.update(chunk)
        self._handle.write(chunk)

    def close(self) -> None:
        if not self._handle.closed:
            self._handle.close()

    def discard(self) -> None:
        self.close()
        self.temp_path.unlink(missing_ok=True)

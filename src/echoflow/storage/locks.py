"""One writer per output: a lock that its holder's death releases.

Local files: `flock` on `<folder>/.echoflow-staging/<name>.lock`. The kernel drops the lock
when its process dies however it dies, so a stale lock never needs breaking; the holder
removes the file on release (after checking it still locks the file at that path).
Works wherever flock is shared: one machine, or containers on one node; not NFS.

S3: a lease object `<output>.echoflow.lock`, created with `If-None-Match: *` so exactly one
writer wins, renewed with `If-Match: <its ETag>` every third of its life by a thread of the
holder; a lease not renewed in time is taken over, again conditionally. A holder that lost
its lease notices before it writes the completion marker, and the marker itself is created
conditionally, so two writers can never both believe they committed.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Optional

from echoflow.errors import OutputBusy

STAGING_DIR = ".echoflow-staging"
LOCK_SUFFIX = ".echoflow.lock"
POLL_SECONDS = 0.5


def lease_seconds() -> float:
    return float(os.environ.get("ECHOFLOW_LEASE_SECONDS", "60"))


def wait_seconds() -> float:
    """How long a second writer waits for the first before giving up on that output."""
    return float(os.environ.get("ECHOFLOW_LOCK_WAIT_SECONDS", "3600"))


def short_key(name: str) -> str:
    """A name for staging and lock files that stays within file-name limits (255 bytes)
    however long the output's name is."""
    if len(name.encode()) <= 150:
        return name
    import hashlib

    return name[:100] + "~" + hashlib.sha1(name.encode()).hexdigest()[:12]


def new_writer_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def writer_gone(writer: str) -> bool:
    """Whether a writer id names a process of this host that no longer exists."""
    parts = writer.rsplit("-", 2)
    if len(parts) != 3 or parts[0] != socket.gethostname() or not parts[1].isdigit():
        return False
    try:
        os.kill(int(parts[1]), 0)
    except ProcessLookupError:
        return True
    except OSError:
        pass  # alive, another user's
    return False


OnWait = Callable[[str], None]


class LocalLock:
    def __init__(self, target: Path, writer: str) -> None:
        self.target = target
        self.writer = writer
        self.folder = target.parent / STAGING_DIR
        self.path = self.folder / f"{short_key(target.name)}.lock"
        self._fd: Optional[int] = None

    def _try_once(self) -> bool:
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except (FileNotFoundError, FileExistsError):
            return False  # another writer removed the folder between our steps: try again
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        try:
            same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if not same:  # we locked a file its previous holder had already removed
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"writer": self.writer, "since": time.time()}).encode())
        self._fd = fd
        return True

    def holder(self) -> str:
        try:
            return json.loads(self.path.read_text() or "{}").get("writer", "another writer")
        except (OSError, ValueError):
            return "another writer"

    def acquire(self, wait: float, on_wait: Optional[OnWait] = None) -> None:
        deadline = time.monotonic() + wait
        told = False
        while not self._try_once():
            if not self.path.exists() and self.folder.exists():
                continue
            if not told and on_wait:
                on_wait(self.holder())
                told = True
            if time.monotonic() > deadline:
                raise OutputBusy(
                    f"{self.target}: still being written by {self.holder()} after {wait:.0f} s; "
                    "run again when that writer has finished"
                )
            time.sleep(POLL_SECONDS)

    def still_held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass
        os.close(self._fd)
        self._fd = None
        try:
            self.folder.rmdir()  # only when no other output is locked or staged here
        except OSError:
            pass


def _precondition_failed(exc: BaseException) -> bool:
    e: Optional[BaseException] = exc
    for _ in range(5):
        if e is None:
            break
        if isinstance(e, FileExistsError) or "PreconditionFailed" in str(e) or "(412)" in str(e):
            return True
        if isinstance(e, OSError) and e.errno == errno.EINVAL and "recondition" in str(e):
            return True
        e = e.__cause__ or e.__context__
    return False


class S3Lease:
    def __init__(self, fs: Any, path: str, writer: str) -> None:
        self.fs = fs
        self.path = path.rstrip("/") + LOCK_SUFFIX
        self.bucket, self.key, _ = fs.split_path(self.path)
        self.writer = writer
        self.etag: Optional[str] = None
        self.lost = False
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._lock = threading.Lock()

    def _body(self) -> bytes:
        return json.dumps({"writer": self.writer, "expires": time.time() + lease_seconds()}).encode()

    def _put(self, **condition: str) -> str:
        out = self.fs.call_s3("put_object", Bucket=self.bucket, Key=self.key, Body=self._body(), **condition)
        return out["ETag"]

    def _current(self) -> Optional[tuple[str, dict[str, Any]]]:
        """(ETag, record) of the lease as it is now; ETag first, so a renewal in between
        only makes a take-over's If-Match fail (safe), never succeed wrongly."""
        try:
            etag = self.fs.call_s3("head_object", Bucket=self.bucket, Key=self.key)["ETag"]
            data = self.fs.cat_file(self.path)
        except FileNotFoundError:
            return None
        try:
            record = json.loads(data)
        except ValueError:
            record = {}
        return etag, record

    def _try_once(self) -> Optional[str]:
        """None when held now, else the holder's writer id."""
        try:
            self.etag = self._put(IfNoneMatch="*")
            return None
        except Exception as exc:  # noqa: BLE001 - only a lost race is expected here
            if not _precondition_failed(exc):
                raise
        current = self._current()
        if current is None:
            return "a writer that just finished"
        etag, record = current
        if float(record.get("expires", 0)) > time.time():
            return str(record.get("writer", "another writer"))
        try:  # expired: take it over, unless someone else did first
            self.etag = self._put(IfMatch=etag)
            return None
        except Exception as exc:  # noqa: BLE001
            if not _precondition_failed(exc):
                raise
            return "a writer that took over an expired lease"

    def acquire(self, wait: float, on_wait: Optional[OnWait] = None) -> None:
        deadline = time.monotonic() + wait
        told = False
        while (holder := self._try_once()) is not None:
            if not told and on_wait:
                on_wait(holder)
                told = True
            if time.monotonic() > deadline:
                raise OutputBusy(
                    f"s3://{self.path.removesuffix(LOCK_SUFFIX)}: still being written by {holder} "
                    f"after {wait:.0f} s; run again when that writer has finished"
                )
            time.sleep(POLL_SECONDS * 2)
        self._thread = threading.Thread(target=self._renew_loop, daemon=True, name="echoflow-lease")
        self._thread.start()

    def _renew(self) -> bool:
        with self._lock:
            if self.lost or self.etag is None:
                return False
            try:
                self.etag = self._put(IfMatch=self.etag)
                return True
            except Exception as exc:  # noqa: BLE001
                if _precondition_failed(exc) or isinstance(exc, FileNotFoundError):
                    self.lost = True
                return not self.lost  # a network hiccup is not a lost lease yet

    def _renew_loop(self) -> None:
        while not self._stop.wait(lease_seconds() / 3):
            self._renew()

    def still_held(self) -> bool:
        return self._renew()

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        with self._lock:
            if self.etag is None or self.lost:
                return
            current = self._current()
            if current is not None and current[0] == self.etag:
                try:
                    self.fs.call_s3("delete_object", Bucket=self.bucket, Key=self.key)
                except Exception:  # noqa: BLE001 - an unreleased lease only expires
                    pass
            self.etag = None

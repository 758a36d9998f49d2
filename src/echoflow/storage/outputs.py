"""Writing outputs: one writer per output, its own staging, commit, then the marker
(`markers.py`) last (the protocol in docs/reliability.md). Only the holder of the output's
lock (`locks.py`) stages, commits and writes the marker.
"""

from __future__ import annotations

import json
import os
import posixpath
import shutil
import tempfile
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Union

from echoflow.errors import InputNotFound, OutputBusy, OutputError, ParameterError
from echoflow.storage.location import filesystem, io_error, is_remote, local_path, public_url
from echoflow.storage.locks import STAGING_DIR, LocalLock, S3Lease, new_writer_id, short_key, wait_seconds, writer_gone
from echoflow.storage.markers import MARKER_SUFFIX, check_output_name, manifest_of, marker_url, read_marker

PARTIAL = ".partial-"


# -- writing: one writer, staging, commit, marker ----------------------------------------


def scratch_root() -> Path:
    root = Path(os.environ.get("ECHOFLOW_SCRATCH") or tempfile.gettempdir())
    root.mkdir(parents=True, exist_ok=True)
    return root


@contextmanager
def scratch_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="echoflow-", dir=scratch_root()))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _partial_name(name: str, writer: str) -> str:
    suffix = Path(name).suffix  # kept last: echopype picks its format check by it
    return f"{short_key(name)}{PARTIAL}{writer}{suffix}"


def staging_path(output: str, workdir: Path, writer: Optional[str] = None) -> Path:
    """Where one writer writes an output before commit: a hidden folder beside a local target
    (same filesystem, so the final rename is atomic), or the scratch dir for a remote target.
    Unique per writer; never touches another writer's staging."""
    name = posixpath.basename(output.rstrip("/"))
    partial = _partial_name(name, writer or new_writer_id())
    if is_remote(output):
        return workdir / partial
    folder = local_path(output).parent / STAGING_DIR
    staged = folder / partial
    for _ in range(RESERVE_TRIES):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            _reserve(staged)
            return staged
        except (FileNotFoundError, FileExistsError):
            # Another writer's release removed the shared folder, empty for a moment,
            # between our steps; our reservation keeps it once made.
            continue
    raise OutputError(
        f"{folder}: could not create a staging folder here (removed {RESERVE_TRIES} times while creating it)"
    )


RESERVE_TRIES = 100


def _reserve(staged: Path) -> None:
    """Create the writer's staged path empty, so the shared staging folder is not empty
    (and so not removed by another writer's release) while this writer stages."""
    if staged.suffix == ".nc":
        os.close(os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
    else:
        staged.mkdir()


def discard(path: Path) -> None:
    """Remove a staged output that will not be committed (no-op when already moved)."""
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists():
        path.unlink(missing_ok=True)


class OutputWriter:
    """Holds an output's lock from before staging until after its marker is written.

    `existing` is set when, once the lock is held, the output is complete and need not be
    written (never when `overwrite`, unless another writer completed it while we waited).
    """

    def __init__(
        self,
        output: str,
        options: dict[str, Any] | None,
        workdir: Path,
        overwrite: bool = False,
        on_wait: Optional[Callable[[str], None]] = None,
        staged: Optional[Path] = None,
    ) -> None:
        self.output = output
        self.options = options
        self.workdir = workdir
        self.overwrite = overwrite
        self.on_wait = on_wait
        self.writer = new_writer_id()
        self.fs, self.path = filesystem(output, options)
        self.lock: Union[LocalLock, S3Lease, None] = None
        self.existing: Optional[dict[str, Any]] = None
        self.waited_for: Optional[str] = None
        self.given = staged  # staged by the caller before locking (kept by the stale sweep)
        self.staged: Path = Path()

    def _wait(self, holder: str) -> None:
        self.waited_for = holder
        if self.on_wait:
            self.on_wait(holder)

    def __enter__(self) -> "OutputWriter":
        check_output_name(self.output)
        started = time.time()
        if not is_remote(self.output):
            self.lock = LocalLock(local_path(self.output), self.writer)
        elif "s3" in (self.fs.protocol if isinstance(self.fs.protocol, tuple) else (self.fs.protocol,)):
            self.lock = S3Lease(self.fs, self.path, self.writer)
        try:
            if self.lock is not None:
                self.lock.acquire(wait_seconds(), self._wait)
        except OutputBusy:
            raise
        except Exception as exc:
            raise io_error(exc, self.output, "locking the output") from exc
        try:
            record = read_marker(self.output, self.options)
            if record is not None and (not self.overwrite or (self.waited_for and _committed_after(record, started))):
                self.existing = record
            else:
                self._clear_stale()
                self.staged = self.given or staging_path(self.output, self.workdir, self.writer)
        except BaseException:
            self._release()
            raise
        return self

    def _clear_stale(self) -> None:
        """Partials of this output left by writers that died. Holding the lock, no live
        writer that locks first owns any; a caller that staged before locking (commit()) may
        race others that did the same, so then only partials of writers known dead go:
        those of this host whose process is gone (e.g. a worker killed for memory)."""
        if is_remote(self.output):
            return  # remote staging lives in each writer's own scratch dir
        target = local_path(self.output)
        prefix = f"{short_key(target.name)}{PARTIAL}"
        for stale in (target.parent / STAGING_DIR).glob(f"{prefix}*"):
            writer = stale.name[len(prefix) :].removesuffix(target.suffix)
            if stale != self.given and (self.given is None or writer_gone(writer)):
                discard(stale)

    def commit(self, record: dict[str, Any]) -> dict[str, Any]:
        """Move the staged output into place, then write its marker; returns the marker."""
        manifest = manifest_of(self.staged)
        marker = {
            **record,
            "writer": self.writer,
            "bytes": sum(manifest.values()),
            "manifest": manifest,
            "committed": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
        }
        try:
            if is_remote(self.output):
                self._commit_remote(marker)
            else:
                self._commit_local(marker)
        except (OutputError, OutputBusy, ParameterError, InputNotFound):
            raise
        except Exception as exc:
            raise io_error(exc, self.output, "writing the output") from exc
        return marker

    def _commit_local(self, marker: dict[str, Any]) -> None:
        target = local_path(self.output)
        marker_path = Path(marker_url(str(target)))
        marker_path.unlink(missing_ok=True)
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
        os.replace(self.staged, target)
        tmp = self.staged.with_name(self.staged.name + MARKER_SUFFIX)
        tmp.write_text(json.dumps(marker, indent=1, default=str))
        os.replace(tmp, marker_path)  # atomic: a reader sees no marker or a whole one

    def _commit_remote(self, marker: dict[str, Any]) -> None:
        fs, path = self.fs, self.path
        for old in (marker_url(path), path):
            if fs.exists(old):
                fs.rm(old, recursive=True)
        if self.staged.is_dir():
            # Explicit file and key lists: a recursive put checks every key with a HEAD
            # first, which doubles the requests of a zarr's ~150 objects.
            files = sorted(p for p in self.staged.rglob("*") if p.is_file())
            fs.put([str(p) for p in files], [f"{path}/{p.relative_to(self.staged).as_posix()}" for p in files])
        else:
            fs.put_file(str(self.staged), path)
        if self.lock is not None and not self.lock.still_held():
            raise OutputError(
                f"{public_url(self.output)}: this writer's lease expired and another writer took "
                "over; not marked complete (run again to check it)"
            )
        data = json.dumps(marker, indent=1, default=str).encode()
        try:
            fs.pipe_file(marker_url(path), data, mode="create")
        except FileExistsError:
            raise OutputError(
                f"{public_url(self.output)}: another writer committed it at the same time; "
                "not marked complete by this writer (run again to check it)"
            ) from None

    def _release(self) -> None:
        if self.lock is not None:
            self.lock.release()

    def __exit__(self, *exc: Any) -> None:
        if self.staged != Path():
            discard(self.staged)
        self._release()


def _committed_after(record: dict[str, Any], t: float) -> bool:
    try:
        return datetime.fromisoformat(record["committed"]).timestamp() >= t
    except (KeyError, TypeError, ValueError):
        return False


def commit(staged: Path, output: str, options: dict[str, Any] | None, record: dict[str, Any]) -> dict[str, Any]:
    """Commit an already staged output under the output's lock (for callers that stage first)."""
    with OutputWriter(output, options, staged.parent, overwrite=True, staged=staged) as w:
        return w.commit(record)


def check_writable(prefix: str, options: dict[str, Any] | None) -> None:
    """Fail early, before any conversion, when the output location refuses writes."""
    import uuid

    fs, path = filesystem(prefix, options)
    probe = path.rstrip("/") + f"/.echoflow-write-test-{uuid.uuid4().hex[:8]}"
    try:
        if not is_remote(prefix):
            Path(path).mkdir(parents=True, exist_ok=True)
        with fs.open(probe, "wb") as f:
            f.write(b"ok")
        fs.rm(probe)
    except Exception as exc:
        err = io_error(exc, prefix, "writing to the output location")
        if isinstance(err, InputNotFound):  # e.g. a missing bucket
            err = OutputError(f"{public_url(prefix)}: output location does not exist or is not writable")
        raise err from exc


def fetch(url: str, options: dict[str, Any] | None, workdir: Path) -> str:
    """A local path for `url`: local files as they are, remote ones downloaded into workdir."""
    if not is_remote(url):
        here = local_path(url)
        if not here.is_file():
            if here.is_dir():
                raise ParameterError(f"{url}: is a directory; pass a glob such as {url.rstrip('/')}/*.raw")
            raise InputNotFound(f"{url}: no such file; check the path")
        return str(here)
    fs, path = filesystem(url, options)
    local = workdir / posixpath.basename(path.rstrip("/"))
    try:
        fs.get_file(path, str(local))
    except Exception as exc:
        raise io_error(exc, url, "downloading") from exc
    return str(local)

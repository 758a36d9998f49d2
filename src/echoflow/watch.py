"""Watching a folder, glob or prefix for raw files as they land (no Prefect here).

Each poll lists the source once. A file is taken when it is new and settled: its last
modification is at least `settle` seconds old and it did not change since the previous
listing (so a copy that keeps an old mtime while it grows is still caught), or, with a
`ready_suffix`, when its sidecar (`<name><suffix>`, e.g. `x.raw.done`) is listed.
Completion markers decide what is done, so a restarted watcher neither repeats nor misses
a file; a failed file leaves a failure record beside its output and is tried again only
when it changes (another size, mtime or ETag) or when asked to.
"""

from __future__ import annotations

import json
import os
import posixpath
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Optional

from echoflow import storage
from echoflow.listing import Listed, list_source

FAILED_SUFFIX = ".echoflow-failed.json"
MAX_ATTEMPTS = 3


@dataclass
class Entry:
    """What the watcher knows of one file: its fingerprint when last listed, and status."""

    size: int
    mtime: Optional[float]
    etag: Optional[str]
    status: str = "seen"  # seen (not yet converted), done, failed
    since: float = 0.0  # when this fingerprint was first listed (watcher's clock)
    error: Optional[str] = None
    attempts: int = 0  # runs that died while converting it (not counting data errors)

    def fingerprint(self) -> list[Any]:
        return [self.size, self.mtime, self.etag]


@dataclass
class Poll:
    """The outcome of one listing."""

    listed: int = 0
    ready: list[Listed] = field(default_factory=list)  # new, settled, to convert now
    waiting: list[str] = field(default_factory=list)  # still growing or not settled yet
    done: list[tuple[Listed, dict[str, Any]]] = field(default_factory=list)  # complete already (markers)
    failed_before: list[tuple[Listed, str]] = field(default_factory=list)  # failure records, unchanged


def failure_url(output: str) -> str:
    return output.rstrip("/") + FAILED_SUFFIX


class Watcher:
    """Decides, listing after listing, which files to convert; records what became of them."""

    def __init__(
        self,
        source: str,
        output_prefix: str,
        extension: str,
        *,
        settle: float = 30.0,
        ready_suffix: Optional[str] = None,
        retry_failed: bool = False,
        input_options: Optional[dict[str, Any]] = None,
        output_options: Optional[dict[str, Any]] = None,
        files: Optional[dict[str, Entry]] = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.source, self.prefix, self.extension = source, output_prefix, extension
        self.settle, self.ready_suffix, self.retry_failed = settle, ready_suffix, retry_failed
        self.input_options, self.output_options = input_options or {}, output_options or {}
        self.files: dict[str, Entry] = files if files is not None else {}
        self.clock = clock
        self.changed = False  # whether `files` differs from what was loaded

    def output(self, url: str) -> str:
        return storage.output_url(self.prefix, url, self.extension)

    def settled_at(self, f: Listed, entry: Entry) -> float:
        """When the file settled (or will), on the watcher's clock; for latency figures."""
        if self.ready_suffix:
            return entry.since
        return (f.mtime if f.mtime is not None else entry.since) + self.settle

    def _settled(self, f: Listed, entry: Entry, unchanged: bool, now: float, sidecars: set[str]) -> bool:
        if self.ready_suffix:
            return f.url in sidecars
        if not unchanged:
            return False  # changed since the last listing: still being written
        if f.mtime is not None:
            return now - f.mtime >= self.settle
        return now - entry.since >= self.settle  # no mtime: unchanged across listings for `settle`

    def poll(self) -> Poll:
        now = self.clock()
        listing, sidecars = list_source(self.source, self.input_options, self.ready_suffix)
        result = Poll(listed=len(listing))
        candidates: list[Listed] = []
        for f in listing:
            entry = self.files.get(f.url)
            same = entry is not None and entry.fingerprint() == f.fingerprint()
            if entry is not None and entry.status == "done":
                continue  # converted: a later change is not a new file (nothing twice)
            if entry is not None and entry.status == "failed" and same and not self.retry_failed:
                continue  # reported once; tried again when it changes
            # A file listed for the first time may be settled already (an old mtime); one
            # that changed since the previous listing is still being written.
            unchanged = entry is None or same
            if entry is None or not same:
                entry = self.files[f.url] = Entry(size=f.size, mtime=f.mtime, etag=f.etag, since=now)
                self.changed = True
            if self._settled(f, entry, unchanged, now, sidecars):
                candidates.append(f)
            else:
                result.waiting.append(f.url)
        listed = {f.url for f in listing}
        for url in [u for u in self.files if u not in listed]:
            del self.files[url]  # a file that reappears is checked against its marker again
            self.changed = True
        if candidates:
            self._sort_out(candidates, result)
        return result

    def _sort_out(self, candidates: list[Listed], result: Poll) -> None:
        """Markers and failure records decide which candidates are new work (a batch, once each)."""
        outputs = {f.url: self.output(f.url) for f in candidates}
        complete = storage.complete_outputs(self.prefix, list(outputs.values()), self.output_options)
        failures = self._failure_records([o for o in outputs.values() if o not in complete])
        for f in candidates:
            entry = self.files[f.url]
            out = outputs[f.url]
            if out in complete:
                entry.status = "done"
                result.done.append((f, complete[out]))
            elif out in failures and failures[out].get("fingerprint") == f.fingerprint() and not self.retry_failed:
                entry.status, entry.error = "failed", str(failures[out].get("error"))
                result.failed_before.append((f, entry.error))
            else:
                entry.error = failures[out].get("error") if out in failures else None
                result.ready.append(f)
            self.changed = True
        self.retry_failed = False  # --retry-failed means the failures known at start, once

    def _failure_records(self, outputs: list[str]) -> dict[str, dict[str, Any]]:
        if not outputs:
            return {}
        fs, root = storage.filesystem(self.prefix, self.output_options)
        fs.invalidate_cache(root.rstrip("/"))
        try:
            names = {posixpath.basename(str(p).rstrip("/")) for p in fs.ls(root.rstrip("/"), detail=False)}
        except FileNotFoundError:
            return {}
        except Exception as exc:
            raise storage.io_error(exc, self.prefix, "listing failure records") from exc
        wanted = {fs._strip_protocol(failure_url(o)): o for o in outputs if posixpath.basename(failure_url(o)) in names}
        if not wanted:
            return {}
        texts = fs.cat(list(wanted), on_error="return")
        records = {}
        for path, text in texts.items():
            if path in wanted and not isinstance(text, BaseException):
                try:
                    records[wanted[path]] = json.loads(text)
                except ValueError:
                    continue  # a torn record: try the file again
        return records

    def record(self, f: Listed, status: str, error: Optional[str] = None, infrastructure: bool = False) -> None:
        """What became of a file this watcher sent to conversion (converted, skipped, failed).

        `infrastructure`: it failed because its run died (an evicted or killed pod), not because
        of its data: it stays new, up to MAX_ATTEMPTS times, before it counts as failed."""
        entry = self.files.get(f.url) or Entry(size=f.size, mtime=f.mtime, etag=f.etag, since=self.clock())
        self.files[f.url] = entry
        self.changed = True
        if status == "failed" and infrastructure and entry.attempts + 1 < MAX_ATTEMPTS:
            entry.attempts += 1
            return
        fs, _ = storage.filesystem(self.prefix, self.output_options)
        path = failure_url(self.output(f.url))
        if status == "failed":
            entry.status, entry.error = "failed", error
            doc = {
                "source": storage.public_url(f.url),
                "fingerprint": f.fingerprint(),
                "size": f.size,
                "mtime": f.mtime,
                "etag": f.etag,
                "error": error,
                "failed_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            }
            write_json(fs, path, doc)
        else:
            if entry.error is not None:  # it had failed before: its record is out of date now
                try:
                    fs.rm(fs._strip_protocol(path))
                except FileNotFoundError:
                    pass
            entry.status, entry.error = "done", None


def write_json(fs: Any, path: str, doc: dict[str, Any]) -> None:
    """Whole or not at all: a local file is renamed into place; an object PUT is atomic."""
    data = json.dumps(doc, indent=1, default=str).encode()
    target = fs._strip_protocol(path)
    if not storage.is_remote(path):
        tmp = Path(f"{target}.{os.getpid()}.tmp")
        tmp.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(data)
        os.replace(tmp, target)
    else:
        fs.pipe_file(target, data)

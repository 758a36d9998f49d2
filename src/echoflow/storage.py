"""Storage through fsspec: expand sources, name outputs, fetch inputs, commit outputs.

An output is complete only when its marker `<output>.echoflow.json` exists. The marker
is written last, after the data is in place (local: atomic rename of a finished
temporary; remote: upload of a finished local copy), so a crash at any point leaves
either no marker (the next run redoes the file) or a whole output.
"""

from __future__ import annotations

import json
import os
import posixpath
import shutil
import tempfile
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator
from urllib.parse import urlsplit, urlunsplit

if TYPE_CHECKING:
    import fsspec

from echoflow.errors import AccessDenied, InputNotFound, OutputError, ParameterError, TransientIOError

MARKER_SUFFIX = ".echoflow.json"
MANIFEST_SUFFIXES = (".txt", ".lst", ".manifest")
GLOB_CHARS = set("*?[")


def filesystem(url: str, options: dict[str, Any] | None) -> tuple[fsspec.AbstractFileSystem, str]:
    from fsspec.core import url_to_fs  # here, not at import: the CLI reads this module first

    try:
        return url_to_fs(url, **(options or {}))
    except (ImportError, ValueError) as exc:
        raise ParameterError(f"{url}: cannot open this location ({exc})") from exc


def is_remote(url: str) -> bool:
    return "://" in url and not url.startswith("file://")


def shown(url: str) -> str:
    """How a location appears in messages: local paths as given, URLs without secrets."""
    return public_url(url) if "://" in url else url


def public_url(url: str) -> str:
    """The URL without credentials or query strings (presigned signatures), for logs and attributes."""
    if "://" not in url:
        return str(Path(url).expanduser().absolute()) if url else url  # as given: no symlink resolution
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def io_error(exc: BaseException, url: str, action: str) -> Exception:
    """Map a storage exception onto echoflow's error kinds (transient or not)."""
    where = shown(url)
    if isinstance(exc, (InputNotFound, AccessDenied, TransientIOError, OutputError, ParameterError)):
        return exc
    if isinstance(exc, FileNotFoundError):
        return InputNotFound(f"{where}: not found; check the path or bucket name")
    if isinstance(exc, PermissionError):
        return AccessDenied(
            f"{where}: permission denied while {action}; check credentials "
            "(storage options, AWS_* variables) or use anonymous access (--anon) for public buckets"
        )
    if isinstance(exc, IsADirectoryError):
        return ParameterError(f"{where}: is a directory; pass a glob such as {where.rstrip('/')}/*.raw")
    text = f"{type(exc).__name__}: {exc}"
    if "NoCredentials" in text or "Unable to locate credentials" in text:
        return AccessDenied(f"{where}: no credentials for {action}; set AWS credentials or use --anon")
    return TransientIOError(f"{where}: {action} failed ({' '.join(text.split())[:300]})")


# -- sources -------------------------------------------------------------------------


def _join(base_dir: str, entry: str) -> str:
    if "://" in entry or entry.startswith("/"):
        return entry
    return posixpath.join(base_dir, entry)


def read_manifest(url: str, options: dict[str, Any] | None) -> list[str]:
    """Lines of a text manifest: one URL or path per line, '#' comments; relative to the manifest."""
    try:
        import fsspec

        with fsspec.open(url, "rt", **(options or {})) as f:
            lines = f.read().splitlines()
    except Exception as exc:
        raise io_error(exc, url, "reading the manifest") from exc
    base = url.rsplit("/", 1)[0] if "/" in url else "."
    entries = [ln.strip() for ln in lines]
    return [_join(base, e) for e in entries if e and not e.startswith("#")]


def is_manifest(src: str) -> bool:
    return src.startswith("@") or src.lower().endswith(MANIFEST_SUFFIXES)


def is_glob(src: str) -> bool:
    return bool(GLOB_CHARS & set(src.split("://", 1)[-1]))


def expand_sources(sources: list[str], options: dict[str, Any] | None) -> list[str]:
    """Explicit URLs stay as given (a missing one fails its own file); globs and manifests expand."""
    out: list[str] = []
    for src in sources:
        if is_manifest(src):
            out.extend(expand_sources(read_manifest(src.lstrip("@"), options), options))
        elif is_glob(src):
            fs, path = filesystem(src, options)
            try:
                found = sorted(fs.glob(path))
            except Exception as exc:
                raise io_error(exc, src, "listing files") from exc
            if not found:
                raise InputNotFound(f"{src}: no files match this pattern")
            out.extend(fs.unstrip_protocol(p) if is_remote(src) else p for p in found)
        else:
            out.append(src)
    return list(dict.fromkeys(out))


def stem(url: str) -> str:
    name = url.rstrip("/").rsplit("/", 1)[-1]
    return name.rsplit(".", 1)[0] if "." in name else name


def output_url(prefix: str, source: str, extension: str) -> str:
    return prefix.rstrip("/") + "/" + stem(source) + extension


def marker_url(output: str) -> str:
    return output.rstrip("/") + MARKER_SUFFIX


def read_marker(output: str, options: dict[str, Any] | None) -> dict[str, Any] | None:
    """The completion record of an output, or None when the output is not complete."""
    fs, path = filesystem(output, options)
    try:
        if not fs.exists(path):
            return None
        with fs.open(marker_url(path), "rt") as f:
            return json.load(f)
    except FileNotFoundError:
        return None
    except (ValueError, json.JSONDecodeError):
        return None  # a torn marker is no marker
    except Exception as exc:
        raise io_error(exc, output, "checking for an existing output") from exc


def complete_outputs(prefix: str, outputs: list[str], options: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    """The completion records of those `outputs` (each directly under `prefix`) that are
    complete, for a whole cruise at once: one listing of the prefix instead of an existence
    check per output, then only the markers of listed outputs, read in one batch."""
    fs, root = filesystem(prefix, options)
    root = root.rstrip("/")
    fs.invalidate_cache(root)  # s3fs caches listings; other processes wrote since
    try:
        listed = {str(p).rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(root, detail=False)}
    except FileNotFoundError:
        return {}
    except Exception as exc:
        raise io_error(exc, prefix, "listing existing outputs") from exc
    markers = {}
    for out in outputs:
        name = out.rstrip("/").rsplit("/", 1)[-1]
        if name in listed and name + MARKER_SUFFIX in listed:
            markers[marker_url(f"{root}/{name}")] = out
    if not markers:
        return {}
    try:
        texts = fs.cat(list(markers), on_error="return")
    except Exception as exc:
        raise io_error(exc, prefix, "reading completion markers") from exc
    records = {}
    for marker, text in texts.items():
        if marker not in markers or isinstance(text, BaseException):
            continue  # vanished since the listing: not complete
        try:
            records[markers[marker]] = json.loads(text)
        except ValueError:
            continue  # a torn marker is no marker
    return records


# -- fetching and committing --------------------------------------------------------


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


def fetch(url: str, options: dict[str, Any] | None, workdir: Path) -> str:
    """A local path for `url`: local files as they are, remote ones downloaded into workdir."""
    if not is_remote(url):
        path = Path(url.removeprefix("file://")).expanduser()
        if not path.is_file():
            if path.is_dir():
                raise ParameterError(f"{url}: is a directory; pass a glob such as {url.rstrip('/')}/*.raw")
            raise InputNotFound(f"{url}: no such file; check the path")
        return str(path)
    fs, path = filesystem(url, options)
    local = workdir / posixpath.basename(path.rstrip("/"))
    try:
        fs.get_file(path, str(local))
    except Exception as exc:
        raise io_error(exc, url, "downloading") from exc
    return str(local)


def _remove(fs: fsspec.AbstractFileSystem, path: str) -> None:
    if fs.exists(path):
        fs.rm(path, recursive=True)


STAGING_DIR = ".echoflow-staging"


def staging_path(output: str, workdir: Path) -> Path:
    """Where to write an output before commit: a hidden folder beside a local target (same
    filesystem, so the final rename is atomic; echopype also probes the folder above its
    output for write access, which must be the target's own folder), or the scratch dir for
    a remote target. Stale partials of earlier crashes are removed."""
    if is_remote(output):
        return workdir / posixpath.basename(output.rstrip("/"))
    target = Path(output.removeprefix("file://")).expanduser()
    staging = target.parent / STAGING_DIR
    staging.mkdir(parents=True, exist_ok=True)
    for stale in staging.glob(f"{target.name}.partial-*"):
        shutil.rmtree(stale, ignore_errors=True) if stale.is_dir() else stale.unlink(missing_ok=True)
    # Keep the extension last: echopype picks the format check by it.
    return staging / f"{target.name}.partial-{uuid.uuid4().hex[:8]}{target.suffix}"


def commit(staged: Path, output: str, options: dict[str, Any] | None, record: dict[str, Any]) -> None:
    """Move a finished output from its staging path into place, then write its marker."""
    fs, path = filesystem(output, options)
    marker = marker_url(path)
    try:
        _remove(fs, marker)
        if is_remote(output):
            _remove(fs, path)
            if staged.is_dir():
                # Explicit file and key lists: a recursive put checks every key with a HEAD
                # first, which doubles the requests of a zarr's ~150 objects.
                files = sorted(p for p in staged.rglob("*") if p.is_file())
                fs.put([str(p) for p in files], [f"{path}/{p.relative_to(staged).as_posix()}" for p in files])
            else:
                fs.put_file(str(staged), path)
        else:
            target = Path(path)
            if target.is_dir():
                shutil.rmtree(target)
            os.replace(staged, target)
            try:
                staged.parent.rmdir()  # only when no other file is being staged
            except OSError:
                pass
        with fs.open(marker, "wt") as f:
            json.dump(record, f, indent=1, default=str)
    except Exception as exc:
        raise io_error(exc, output, "writing the output") from exc


def check_writable(prefix: str, options: dict[str, Any] | None) -> None:
    """Fail early, before any conversion, when the output location refuses writes."""
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


def size_of(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def discard(path: Path) -> None:
    """Remove a staged output that will not be committed (no-op when already moved)."""
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists():
        path.unlink(missing_ok=True)

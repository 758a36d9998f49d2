"""Storage through fsspec: sources in, outputs out, one writer per output.

`location` (filesystems, URLs shown without secrets, errors by kind), `sources` (expand
paths/globs/manifests, output names), `locks` (one writer per output), `outputs` (staging,
commit), `markers` (completion records checked against content). The protocol:
docs/reliability.md.
"""

from echoflow.storage.location import filesystem, io_error, is_remote, is_transient_error, local_path, public_url, shown
from echoflow.storage.locks import LOCK_SUFFIX, STAGING_DIR
from echoflow.storage.markers import (
    MARKER_SUFFIX,
    check_output_name,
    complete_outputs,
    manifest_of,
    marker_url,
    read_marker,
)
from echoflow.storage.outputs import (
    OutputWriter,
    check_writable,
    commit,
    discard,
    fetch,
    scratch_dir,
    scratch_root,
    staging_path,
)
from echoflow.storage.sources import (
    MANIFEST_SUFFIXES,
    count_local,
    expand_sources,
    identity,
    is_glob,
    is_manifest,
    output_url,
    read_manifest,
    stem,
)

__all__ = [
    "LOCK_SUFFIX",
    "MANIFEST_SUFFIXES",
    "MARKER_SUFFIX",
    "STAGING_DIR",
    "OutputWriter",
    "check_output_name",
    "check_writable",
    "commit",
    "complete_outputs",
    "count_local",
    "discard",
    "expand_sources",
    "fetch",
    "filesystem",
    "identity",
    "io_error",
    "is_glob",
    "is_manifest",
    "is_remote",
    "is_transient_error",
    "local_path",
    "manifest_of",
    "marker_url",
    "output_url",
    "public_url",
    "read_manifest",
    "read_marker",
    "scratch_dir",
    "scratch_root",
    "shown",
    "staging_path",
    "stem",
]

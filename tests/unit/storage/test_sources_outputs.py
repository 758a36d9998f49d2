import json
import shutil
from pathlib import Path

import pytest

from echoflow import storage
from echoflow.errors import InputNotFound, OutputBusy, OutputError


def test_expand_globs_manifests_and_dedupes(tmp_path):
    for n in ("a-D20180211-T000000.raw", "b-D20180211-T010000.raw", "c.txt.bak"):
        (tmp_path / n).write_bytes(b"x")
    manifest = tmp_path / "files.txt"
    manifest.write_text(
        "# cruise files\na-D20180211-T000000.raw\n\n" + str(tmp_path / "b-D20180211-T010000.raw") + "\n"
    )
    got = storage.expand_sources([str(tmp_path / "*.raw"), str(manifest), "/elsewhere/x.raw"], {})
    assert got == [
        str(tmp_path / "a-D20180211-T000000.raw"),
        str(tmp_path / "b-D20180211-T010000.raw"),
        "/elsewhere/x.raw",
    ]


def test_glob_matching_nothing_is_an_error(tmp_path):
    with pytest.raises(InputNotFound, match="no files match"):
        storage.expand_sources([str(tmp_path / "*.raw")], {})


def test_public_url_drops_credentials_and_signatures():
    assert storage.public_url("s3://key:secret@bucket/a.raw?X-Amz-Signature=abc") == "s3://bucket/a.raw"
    assert storage.public_url("https://u:p@host:8443/x.raw?sig=1") == "https://host:8443/x.raw"


def _commit_bytes(out: str, data: bytes, options: dict | None = None, tmp: Path | None = None) -> dict:
    staged = storage.staging_path(out, tmp or Path(out).parent)
    staged.write_bytes(data)
    return storage.commit(staged, out, options or {}, {"source_url": "x"})


def test_commit_is_the_only_way_to_complete(tmp_path):
    out = str(tmp_path / "o" / "f.nc")
    staged = storage.staging_path(out, tmp_path)
    staged.write_bytes(b"data")
    assert storage.read_marker(out, {}) is None
    marker = storage.commit(staged, out, {}, {"source_url": "x"})
    assert Path(out).read_bytes() == b"data" and not staged.exists()
    record = storage.read_marker(out, {})
    assert record == marker and record["bytes"] == 4 and record["manifest"] == {"": 4}
    assert record["writer"] and record["committed"]
    assert not (tmp_path / "o" / storage.STAGING_DIR).exists()  # nothing left beside the output


def test_marker_that_disagrees_with_content_is_no_marker(tmp_path):
    """A marker counts only while the content is exactly what its writer committed."""
    out = tmp_path / "f.zarr"
    staged = storage.staging_path(str(out), tmp_path)
    for rel in ("zarr.json", "Environment/zarr.json", "Sonar/c/0"):
        (staged / rel).parent.mkdir(parents=True, exist_ok=True)
        (staged / rel).write_bytes(rel.encode())
    storage.commit(staged, str(out), {}, {})
    assert storage.read_marker(str(out), {}) is not None
    shutil.rmtree(out / "Environment")  # a group lost after the commit
    assert storage.read_marker(str(out), {}) is None
    assert storage.complete_outputs(str(tmp_path), [str(out)], {}) == {}


def test_output_without_marker_or_with_torn_marker_is_incomplete(tmp_path):
    out = tmp_path / "f.zarr"
    out.mkdir()
    assert storage.read_marker(str(out), {}) is None
    Path(storage.marker_url(str(out))).write_text('{"bytes": ')
    assert storage.read_marker(str(out), {}) is None


def test_markers_of_older_versions_are_not_trusted(tmp_path):
    out = tmp_path / "f.nc"
    out.write_bytes(b"1")
    Path(storage.marker_url(str(out))).write_text('{"bytes": 1}')  # no manifest
    assert storage.read_marker(str(out), {}) is None


def test_writer_never_touches_a_live_writers_staging(tmp_path, monkeypatch):
    """Staging is per writer: a second writer's start leaves the first's partial alone (it
    waits for the first's lock, and gives up when told to wait no longer)."""
    out = str(tmp_path / "f.nc")
    assert storage.staging_path(out, tmp_path) != storage.staging_path(out, tmp_path)
    monkeypatch.setenv("ECHOFLOW_LOCK_WAIT_SECONDS", "0.5")
    with storage.OutputWriter(out, {}, tmp_path) as first:
        first.staged.write_bytes(b"partial")
        with pytest.raises(OutputBusy):
            with storage.OutputWriter(out, {}, tmp_path):
                pass
        assert first.staged.read_bytes() == b"partial"
        first.commit({})
    assert storage.read_marker(out, {})["bytes"] == len(b"partial")


def test_stale_partials_are_cleared_under_the_lock(tmp_path):
    out = str(tmp_path / "f.zarr")
    stale = tmp_path / storage.STAGING_DIR / "f.zarr.partial-deadhost-1-0000.zarr"
    stale.mkdir(parents=True)
    with storage.OutputWriter(out, {}, tmp_path) as w:
        assert not stale.exists() and w.existing is None
        (w.staged / "x").write_bytes(b"x")
        w.commit({})
    assert not (tmp_path / storage.STAGING_DIR).exists()


def test_second_writer_of_a_complete_output_skips_it(tmp_path):
    out = str(tmp_path / "f.nc")
    first = _commit_bytes(out, b"abc")
    with storage.OutputWriter(out, {}, tmp_path) as w:
        assert w.existing == first
    with storage.OutputWriter(out, {}, tmp_path, overwrite=True) as w:
        assert w.existing is None  # overwrite rewrites it


def test_same_file_by_glob_and_manifest_and_relative_path_is_kept_once(tmp_path, monkeypatch):
    raw = tmp_path / "a-D20180211-T000000.raw"
    raw.write_bytes(b"x")
    (tmp_path / "m.txt").write_text("a-D20180211-T000000.raw\n./a-D20180211-T000000.raw\n")
    monkeypatch.chdir(tmp_path)
    got = storage.expand_sources(
        [str(tmp_path / "*.raw"), "@m.txt", "a-D20180211-T000000.raw", str(tmp_path / "sub" / ".." / raw.name)], {}
    )
    assert got == [str(raw)]
    assert storage.identity("s3://u:p@bucket/x/../a.raw?sig=1") == storage.identity("s3://bucket/a.raw")


def test_azfp_numbered_files_of_one_hour_get_distinct_outputs():
    a = storage.output_url("out", "raw/17031001.01A", ".nc")
    b = storage.output_url("out", "raw/17031001.02A", ".nc")
    assert (a, b) == ("out/17031001.01A.nc", "out/17031001.02A.nc")
    assert (
        storage.output_url("out", "s3://b/DY1801_EK60-D20180211-T164025.raw", ".zarr")
        == "out/DY1801_EK60-D20180211-T164025.zarr"
    )


def test_unwritable_output_fails_early(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OutputError, match="Not a directory") as info:
        storage.check_writable(str(blocker / "sub"), {})
    assert str(blocker / "sub") in str(info.value)


@pytest.mark.parametrize("where", ["local", "s3"])
def test_complete_outputs_checks_markers_against_one_listing(where, tmp_path, request):
    """What a cruise re-run skips, found with one listing of the output prefix."""
    if where == "s3":
        opts = request.getfixturevalue("s3_options")
        bucket = request.getfixturevalue("private_bucket")
        prefix = f"s3://{bucket}/complete-{tmp_path.name}"
    else:
        opts, prefix = {}, str(tmp_path / "out")
    fs, root = storage.filesystem(prefix, opts)

    def marker(manifest: dict) -> bytes:
        return json.dumps({"bytes": sum(manifest.values()), "manifest": manifest}).encode()

    files = {
        "a.zarr/zarr.json": b"{}",
        "a.zarr/g/zarr.json": b"{}}",
        "a.zarr" + storage.MARKER_SUFFIX: marker({"zarr.json": 2, "g/zarr.json": 3}),
        "b.nc": b"nc",
        "b.nc" + storage.MARKER_SUFFIX: marker({"": 2}),
        "c.zarr/zarr.json": b"{}",  # written, never committed
        "d.nc" + storage.MARKER_SUFFIX: marker({"": 4}),  # output removed since
        "e.zarr/zarr.json": b"{}",
        "e.zarr" + storage.MARKER_SUFFIX: b'{"bytes": ',  # torn marker
        "g.zarr/zarr.json": b"{}",
        "g.zarr" + storage.MARKER_SUFFIX: marker({"zarr.json": 2, "Env/zarr.json": 2}),
        "h.nc": b"n",
        "h.nc" + storage.MARKER_SUFFIX: marker({"": 2}),  # size differs
    }
    for name, data in files.items():
        if where == "local":
            (tmp_path / "out" / name).parent.mkdir(parents=True, exist_ok=True)
        fs.pipe_file(f"{root}/{name}", data)
    names = ("a.zarr", "b.nc", "c.zarr", "d.nc", "e.zarr", "f.nc", "g.zarr", "h.nc")
    outputs = [f"{prefix}/{n}" for n in names]
    found = storage.complete_outputs(prefix, outputs, opts)
    assert sorted(found) == [f"{prefix}/a.zarr", f"{prefix}/b.nc"]
    for out in outputs:  # the same verdict as checking one output at a time
        assert storage.read_marker(out, opts) == found.get(out)
    assert storage.complete_outputs(prefix + "-none", outputs, opts) == {}


def test_zarr_folder_reaches_s3_whole(tmp_path, s3_options, private_bucket):
    out = f"s3://{private_bucket}/commit-{tmp_path.name}/x.zarr"
    staged = storage.staging_path(str(tmp_path / "x.zarr"), tmp_path)
    for rel in ("zarr.json", "Sonar/zarr.json", "Sonar/Beam_group1/backscatter_r/c/0/0/0"):
        (staged / rel).parent.mkdir(parents=True, exist_ok=True)
        (staged / rel).write_bytes(rel.encode())
    marker = storage.commit(staged, out, s3_options, {})
    fs, path = storage.filesystem(out, s3_options)
    assert sorted(p.split("x.zarr/", 1)[1] for p in fs.find(path)) == [
        "Sonar/Beam_group1/backscatter_r/c/0/0/0",
        "Sonar/zarr.json",
        "zarr.json",
    ]
    assert fs.cat_file(f"{path}/Sonar/zarr.json") == b"Sonar/zarr.json"
    assert storage.read_marker(out, s3_options) == marker and marker["bytes"] == 63
    assert not fs.exists(path + storage.LOCK_SUFFIX)  # the lease is released


def test_count_local_sizes_a_pool_without_listing_remote_sources(tmp_path):
    for n in ("a-D20180211-T000000.raw", "b-D20180211-T010000.raw"):
        (tmp_path / n).write_bytes(b"x")
    (tmp_path / "m.txt").write_text("a-D20180211-T000000.raw\n")
    assert storage.count_local([str(tmp_path / "*.raw")]) == 2
    assert storage.count_local([str(tmp_path / "*.raw"), "@" + str(tmp_path / "m.txt")]) == 2  # the same file once
    assert storage.count_local(["s3://bucket/raw/*.raw"]) is None
    assert storage.count_local([str(tmp_path / "none-*.raw")]) is None  # the flow reports it

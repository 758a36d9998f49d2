import json
from pathlib import Path

import pytest

from echoflow import storage
from echoflow.errors import InputNotFound, OutputError


def test_expand_globs_manifests_and_dedupes(tmp_path):
    for n in ("a-D20180211-T000000.raw", "b-D20180211-T010000.raw", "c.txt.bak"):
        (tmp_path / n).write_bytes(b"x")
    manifest = tmp_path / "files.txt"
    manifest.write_text("# cruise files\na-D20180211-T000000.raw\n\n" + str(tmp_path / "b-D20180211-T010000.raw") + "\n")
    got = storage.expand_sources([str(tmp_path / "*.raw"), str(manifest), "/elsewhere/x.raw"], {})
    assert got == [str(tmp_path / "a-D20180211-T000000.raw"), str(tmp_path / "b-D20180211-T010000.raw"), "/elsewhere/x.raw"]


def test_glob_matching_nothing_is_an_error(tmp_path):
    with pytest.raises(InputNotFound, match="no files match"):
        storage.expand_sources([str(tmp_path / "*.raw")], {})


def test_public_url_drops_credentials_and_signatures():
    assert storage.public_url("s3://key:secret@bucket/a.raw?X-Amz-Signature=abc") == "s3://bucket/a.raw"
    assert storage.public_url("https://u:p@host:8443/x.raw?sig=1") == "https://host:8443/x.raw"


def test_commit_is_the_only_way_to_complete(tmp_path):
    out = str(tmp_path / "o" / "f.nc")
    staged = storage.staging_path(out, tmp_path)
    staged.write_bytes(b"data")
    assert storage.read_marker(out, {}) is None
    storage.commit(staged, out, {}, {"bytes": 4})
    assert Path(out).read_bytes() == b"data" and not staged.exists()
    assert storage.read_marker(out, {}) == {"bytes": 4}


def test_output_without_marker_or_with_torn_marker_is_incomplete(tmp_path):
    out = tmp_path / "f.zarr"
    out.mkdir()
    assert storage.read_marker(str(out), {}) is None
    Path(storage.marker_url(str(out))).write_text('{"bytes": ')
    assert storage.read_marker(str(out), {}) is None


def test_stale_partials_are_cleared(tmp_path):
    out = str(tmp_path / "f.zarr")
    stale = tmp_path / storage.STAGING_DIR / "f.zarr.partial-dead.zarr"
    stale.mkdir(parents=True)
    storage.staging_path(out, tmp_path)
    assert not stale.exists()


def test_unwritable_output_fails_early(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(Exception) as info:
        storage.check_writable(str(blocker / "sub"), {})
    assert "file" in str(info.value)


def test_manifest_marker_json_is_plain(tmp_path):
    out = str(tmp_path / "f.nc")
    staged = storage.staging_path(out, tmp_path)
    staged.write_bytes(b"1")
    storage.commit(staged, out, {}, {"source_url": "s3://b/k"})
    assert json.loads(Path(storage.marker_url(out)).read_text())["source_url"] == "s3://b/k"


@pytest.mark.parametrize("where", ["local", "s3"])
def test_complete_outputs_needs_both_output_and_marker(where, tmp_path, request):
    """What a cruise re-run skips, found with one listing of the output prefix."""
    if where == "s3":
        opts = request.getfixturevalue("s3_options")
        bucket = request.getfixturevalue("private_bucket")
        prefix = f"s3://{bucket}/complete-{tmp_path.name}"
    else:
        opts, prefix = {}, str(tmp_path / "out")
    fs, root = storage.filesystem(prefix, opts)
    files = {
        "a.zarr/zarr.json": b"{}", "a.zarr" + storage.MARKER_SUFFIX: b'{"bytes": 1}',
        "b.nc": b"nc", "b.nc" + storage.MARKER_SUFFIX: b'{"bytes": 2}',
        "c.zarr/zarr.json": b"{}",  # written, never committed
        "d.nc" + storage.MARKER_SUFFIX: b'{"bytes": 4}',  # output removed since
        "e.zarr/zarr.json": b"{}", "e.zarr" + storage.MARKER_SUFFIX: b'{"bytes": ',  # torn marker
    }
    for name, data in files.items():
        if where == "local":
            (tmp_path / "out" / name).parent.mkdir(parents=True, exist_ok=True)
        fs.pipe_file(f"{root}/{name}", data)
    outputs = [f"{prefix}/{n}" for n in ("a.zarr", "b.nc", "c.zarr", "d.nc", "e.zarr", "f.nc")]
    assert storage.complete_outputs(prefix, outputs, opts) == {
        f"{prefix}/a.zarr": {"bytes": 1}, f"{prefix}/b.nc": {"bytes": 2}}
    for out in outputs:  # the same verdict as checking one output at a time
        assert storage.read_marker(out, opts) == storage.complete_outputs(prefix, outputs, opts).get(out)
    assert storage.complete_outputs(prefix + "-none", outputs, opts) == {}


def test_zarr_folder_reaches_s3_whole(tmp_path, s3_options, private_bucket):
    out = f"s3://{private_bucket}/commit-{tmp_path.name}/x.zarr"
    staged = storage.staging_path(str(tmp_path / "x.zarr"), tmp_path)
    for rel in ("zarr.json", "Sonar/zarr.json", "Sonar/Beam_group1/backscatter_r/c/0/0/0"):
        (staged / rel).parent.mkdir(parents=True, exist_ok=True)
        (staged / rel).write_bytes(rel.encode())
    storage.commit(staged, out, s3_options, {"bytes": 3})
    fs, path = storage.filesystem(out, s3_options)
    assert sorted(p.split("x.zarr/", 1)[1] for p in fs.find(path)) == [
        "Sonar/Beam_group1/backscatter_r/c/0/0/0", "Sonar/zarr.json", "zarr.json"]
    assert fs.cat_file(f"{path}/Sonar/zarr.json") == b"Sonar/zarr.json"
    assert storage.read_marker(out, s3_options) == {"bytes": 3}

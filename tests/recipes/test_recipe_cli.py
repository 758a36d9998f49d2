"""`echoflow discover` and `echoflow run` (dry run, bad recipe, a real run), in process."""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path

import pytest
from recipe_samples import COPY_TIMES, simrad_name
from samples import AZFP_RAW, AZFP_XML, REPO
from typer.testing import CliRunner

from echoflow.cli.app import app
from echoflow.recipes import RecipeError, load_recipe
from echoflow.storage import stem

runner = CliRunner()


def invoke(*args: str, **env: str):
    result = runner.invoke(app, list(args), env={"COLUMNS": "200", **env})
    return result, result.stdout + (result.stderr if result.stderr_bytes is not None else "")


@pytest.fixture(scope="module")
def archive(new_bucket, s3_options, ek60_batch) -> str:
    """A public NCEI-style bucket: three dated EK60 files and one without a time in its name."""
    import s3fs

    bucket = new_bucket(f"archive-{uuid.uuid4().hex[:8]}", public=True)
    fs = s3fs.S3FileSystem(**s3_options)
    folder = f"{bucket}/data/raw/Discovery/DY1801/EK60"
    for p in ek60_batch:
        fs.put_file(str(p), f"{folder}/{p.name}")
    fs.pipe_file(f"{folder}/DY1801_EK60-calibration.raw", b"x" * 100)
    fs.pipe_file(f"{folder}/DY1801_EK60-D20180211-T164025.idx", b"x" * 10)
    return bucket


def endpoint(s3_anon_options: dict) -> str:
    return "client_kwargs=" + json.dumps(s3_anon_options["client_kwargs"])


def test_discover_lists_window_count_and_bytes(archive, s3_anon_options, ek60_batch) -> None:
    import s3fs

    fs = s3fs.S3FileSystem(**s3_anon_options)
    before = sorted(fs.find(archive))
    result, text = invoke(
        "discover",
        f"s3://{archive}/data/raw",
        "--ship",
        "Discovery",
        "--cruise",
        "DY1801",
        "--instrument",
        "EK60",
        "--start",
        "2018-02-11T16:30",
        "--end",
        "2018-02-11T17:30",
        "--anon",
        "--option",
        endpoint(s3_anon_options),
    )
    assert result.exit_code == 0, text
    size = ek60_batch[0].stat().st_size
    assert f"would process 2 files, {2 * size} bytes" in text
    assert "1 outside the window" in text
    assert simrad_name(COPY_TIMES[0]) in text and simrad_name(COPY_TIMES[1]) in text
    assert simrad_name(COPY_TIMES[2]) not in text
    # reported, not silently dropped (the console may wrap the line before the URL)
    assert re.search(r"left out \(no time in its name[^)]*\):\s+s3://\S+/DY1801_EK60-calibration\.raw", text)
    fs.invalidate_cache()
    assert sorted(fs.find(archive)) == before  # wrote nothing


def test_discover_missing_cruise_is_a_clear_error(archive, s3_anon_options) -> None:
    result, text = invoke(
        "discover",
        f"s3://{archive}/data/raw",
        "--ship",
        "Discovery",
        "--cruise",
        "DY9999",
        "--instrument",
        "EK60",
        "--anon",
        "--option",
        endpoint(s3_anon_options),
    )
    assert result.exit_code == 2
    assert "no such folder" in text and "DY9999" in text


def test_dry_run_prints_plan_and_writes_nothing(archive, s3_anon_options, ek60_batch, tmp_path: Path) -> None:
    out = tmp_path / "out"
    home = tmp_path / "home"
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"""
name: dy1801
source:
  url: s3://{archive}/data/raw
  path: "{{ship}}/{{cruise}}/{{instrument}}"
  values: {{ship: Discovery, cruise: DY1801, instrument: EK60}}
  start: 2018-02-11T16:00:00
  end: 2018-02-12T00:00:00
  storage_options: {json.dumps(s3_anon_options)}
sonar_model: EK60
output: {{prefix: {out}}}
stages: [open_raw, combine_echodata, compute_Sv, compute_MVBS]
""")
    result, text = invoke("run", str(recipe), "--dry-run", ECHOFLOW_HOME=str(home))
    assert result.exit_code == 0, text
    assert f"would process 3 files, {3 * ek60_batch[0].stat().st_size} bytes" in text
    assert "1 without a time in the name, left out" in text
    flat = " ".join(text.split())
    assert (
        "per file: open_raw → compute_Sv → compute_MVBS (in memory; written: compute_MVBS); "
        "after combine_echodata, per group (one group): compute_MVBS"
    ) in flat
    assert not out.exists() and not home.exists()


def test_bad_recipe_fails_before_any_work(tmp_path: Path) -> None:
    recipe = tmp_path / "bad.yaml"
    recipe.write_text(
        f"source: {{url: {tmp_path}}}\nsonar_model: EK60\noutput: {{prefix: {tmp_path / 'out'}}}\n"
        "stages:\n  - open_raw\n  - compute_MVBS\n"
    )
    result, text = invoke("run", str(recipe), ECHOFLOW_HOME=str(tmp_path / "home"))
    assert result.exit_code == 2
    assert f"{recipe}:6: stages[1]: compute_MVBS needs compute_Sv before it" in " ".join(text.split())
    assert not (tmp_path / "out").exists() and not (tmp_path / "home").exists()


def test_run_command(prefect_server, tmp_path: Path) -> None:
    out = tmp_path / "out"
    recipe = tmp_path / "azfp.yaml"
    recipe.write_text(f"""
name: azfp
source: {{url: {AZFP_RAW.parent}}}
sonar_model: AZFP
xml_path: {AZFP_XML}
concurrency: 1
quicklook: {{enabled: false}}
output: {{prefix: {out}}}
keep: [open_raw]
stages:
  - open_raw
  - compute_Sv: {{env_params: {{salinity: 29.6, pressure: 60}}}}
""")
    result, text = invoke("run", str(recipe))
    assert result.exit_code == 0, text
    assert "2 stage outputs: 1 converted, 1 computed" in " ".join(text.split())
    assert (out / "compute_Sv" / f"{stem(str(AZFP_RAW))}.zarr.echoflow.json").exists()
    result, text = invoke("run", str(recipe))
    assert result.exit_code == 0 and "2 skipped" in text


@pytest.mark.parametrize("name", ["ek60-sv-mvbs.yaml", "ncei-s3.yaml", "ek60-transects.yaml"])
def test_examples_are_valid(name: str) -> None:
    r = load_recipe(str(REPO / "examples" / "recipes" / name))
    assert r.stage_names[0] == "open_raw"


def test_recipe_from_a_url_names_the_url_in_errors(archive, s3_options, s3_anon_options, tmp_path: Path) -> None:
    import s3fs

    url = f"s3://{archive}/recipes/bad.yaml"
    s3fs.S3FileSystem(**s3_options).pipe_file(
        url,
        (
            f"source: {{url: {tmp_path}}}\nsonar_model: EK60\noutput: {{prefix: {tmp_path}}}\n"
            "stages: [open_raw, compute_Sv, {compute_MVBS: {ping_time_bin: 20 parsecs}}]\n"
        ).encode(),
    )
    with pytest.raises(RecipeError) as info:
        load_recipe(url, s3_anon_options)
    assert str(info.value).startswith(f"{url}:4: stages[2].compute_MVBS.ping_time_bin: '20 parsecs'")

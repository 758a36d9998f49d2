"""The echoflow container image: what it runs, as whom, with what metadata, and a real
conversion under the restrictions the chart applies (read-only root, uid 1000, /tmp only).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from e2e_docker import docker

pytestmark = pytest.mark.docker

DATA = Path(os.environ.get("ECHOFLOW_TEST_DATA") or Path(__file__).resolve().parents[2] / "data")
EK60_REL = "ek60/DY1801_EK60-D20180211-T164025.raw"

# How the chart runs the Job's container, as far as `docker run` can say it.
RESTRICTED = [
    "--read-only",
    "--tmpfs",
    "/tmp",
    "--cap-drop",
    "ALL",
    "--security-opt",
    "no-new-privileges",
    "--network",
    "none",
]


def run(image, *cmd: str, opts: list[str] = (), timeout: float = 300, check: bool = True):
    return docker("run", "--rm", *opts, str(image), *cmd, timeout=timeout, check=check)


@pytest.fixture(scope="module")
def config(echoflow_image) -> dict:
    return json.loads(docker("image", "inspect", str(echoflow_image)).stdout)[0]["Config"]


def test_version(echoflow_image):
    out = run(echoflow_image, "echoflow", "--version", opts=RESTRICTED).stdout
    assert f"echoflow {echoflow_image.version}" in out, out
    assert "echopype 0.11.1" in out and "prefect 3.9.1" in out, out


def test_default_command_is_help(echoflow_image, config):
    assert not config.get("Entrypoint"), "the command is passed by Kubernetes / Prefect; no wrapper"
    assert config["Cmd"] == ["echoflow", "--help"]
    out = run(echoflow_image, opts=RESTRICTED).stdout
    assert "convert" in out and "Usage" in out, out


def test_runs_as_uid_1000(echoflow_image, config):
    # Numeric, so that Kubernetes' runAsNonRoot can verify it without /etc/passwd.
    assert config["User"].split(":")[0] == "1000", config["User"]
    assert run(echoflow_image, "id", "-u").stdout.strip() == "1000"
    assert run(echoflow_image, "id", "-g").stdout.strip() == "1000"


def test_environment_points_at_tmp(echoflow_image, config):
    env = dict(item.split("=", 1) for item in config["Env"])
    for name in ("HOME", "ECHOFLOW_HOME", "PREFECT_HOME", "ECHOFLOW_SCRATCH"):
        assert env[name] == "/tmp" or env[name].startswith("/tmp/"), (name, env[name])
    assert env["PYTHONUNBUFFERED"] == "1"
    prefix = env["NB_PYTHON_PREFIX"]
    assert env["PATH"].startswith(f"{prefix}/bin:"), env["PATH"]
    where = run(echoflow_image, "sh", "-c", "for c in echoflow prefect python; do command -v $c; done").stdout.split()
    assert where == [f"{prefix}/bin/echoflow", f"{prefix}/bin/prefect", f"{prefix}/bin/python"], where


def test_oci_labels(echoflow_image, config):
    labels = config.get("Labels") or {}
    oci = "org.opencontainers.image."
    for key in ("title", "version", "revision", "source", "created"):
        assert labels.get(oci + key), f"label {oci + key} missing: {labels}"
    assert labels[oci + "title"] == "echoflow"
    assert labels[oci + "version"] == echoflow_image.version
    if echoflow_image.revision != "unknown":
        assert labels[oci + "revision"].split("-")[0] == echoflow_image.revision
    assert labels[oci + "source"].startswith("https://")


def test_pip_check_clean(echoflow_image):
    proc = run(echoflow_image, "python", "-m", "pip", "check", opts=RESTRICTED, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_no_test_extras_installed(echoflow_image):
    out = run(
        echoflow_image,
        "python",
        "-c",
        "import importlib.util as u; print([m for m in ('pytest', 'moto', 'kubernetes_validate') if u.find_spec(m)])",
    ).stdout.strip()
    assert out == "[]", out


def test_prefect_cli_starts_on_read_only_root(echoflow_image):
    # A flow-run Job runs `prefect flow-run execute`; its settings and home must work in /tmp.
    proc = run(echoflow_image, "prefect", "version", opts=RESTRICTED)
    assert "3.9.1" in proc.stdout
    assert "Failed to create" not in proc.stderr, proc.stderr


def test_ca_bundle_not_in_image(echoflow_image):
    """The build's CA secret (with a canary certificate only this session knows) is in no
    layer, config or history entry; /run/secrets is empty at run time."""
    assert "CA secret from" in echoflow_image.build_log, "the build did not get the CA secret"
    marker = echoflow_image.canary_marker
    assert marker in echoflow_image.ca_bundle.read_bytes()

    history = docker("history", "--no-trunc", str(echoflow_image)).stdout
    inspect = docker("image", "inspect", str(echoflow_image)).stdout
    for text in (history, inspect):
        assert "BEGIN CERTIFICATE" not in text
        assert marker.decode() not in text
        assert str(echoflow_image.ca_bundle) not in text

    # Every byte of every layer: `docker save` streams the layers uncompressed, so a file
    # holding the certificate anywhere (even one deleted in a later layer) shows up here.
    proc = subprocess.Popen(["docker", "save", str(echoflow_image)], stdout=subprocess.PIPE)
    found, tail, total = False, b"", 0
    assert proc.stdout is not None
    while chunk := proc.stdout.read(8 << 20):
        total += len(chunk)
        if marker in tail + chunk:
            found = True
        tail = chunk[-len(marker) :]
    assert proc.wait(600) == 0, "docker save failed"
    assert total > 50_000_000, f"docker save gave only {total} bytes"
    assert not found, "the CA bundle's canary certificate is inside the image"

    out = run(echoflow_image, "sh", "-c", "ls -A /run/secrets 2>/dev/null | wc -l").stdout.strip()
    assert out == "0"


@pytest.fixture(scope="module")
def ek60_raw() -> Path:
    raw = DATA / EK60_REL
    assert raw.is_file(), f"sample data missing: {raw} (set ECHOFLOW_TEST_DATA or see data/README.md)"
    return raw


def writable_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o777)
    if os.geteuid() == 0:
        os.chown(path, 1000, 1000)
    return path


def convert_in_container(image, out_dir: Path, out_arg: str) -> subprocess.CompletedProcess:
    return run(
        image,
        "echoflow",
        "convert",
        f"/data/{EK60_REL}",
        "--sonar-model",
        "EK60",
        "--out",
        out_arg,
        "--format",
        "zarr",
        opts=[*RESTRICTED, "-v", f"{DATA.resolve()}:/data:ro", "-v", f"{out_dir}:/out"],
        timeout=600,
        check=False,
    )


def test_convert_ek60_read_only_root(echoflow_image, ek60_raw, tmp_path):
    """uid 1000, read-only root, writable /tmp only: convert to zarr into a mounted folder;
    the result opens on the host and its Beam_group1 is what echopype makes of the file."""
    import echopype

    out_dir = writable_dir(tmp_path / "out")
    proc = convert_in_container(echoflow_image, out_dir, "/out/ek60")
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]

    zarr = out_dir / "ek60" / (ek60_raw.stem + ".zarr")
    assert zarr.is_dir(), sorted(p.name for p in out_dir.rglob("*"))[:20]
    assert zarr.stat().st_uid == 1000, "the container did not write as uid 1000"

    converted = echopype.open_converted(str(zarr))
    direct = echopype.open_raw(str(ek60_raw), sonar_model="EK60")
    got, want = converted["Sonar/Beam_group1"], direct["Sonar/Beam_group1"]
    assert got.sizes["ping_time"] > 0
    assert set(got.data_vars) == set(want.data_vars)
    for name in want.data_vars:
        assert got[name].identical(want[name]), f"Beam_group1.{name} differs"
    assert got.equals(want)
    assert got.attrs == want.attrs
    # Provenance differs by design (conversion time, echoflow's record), so only its presence.
    assert converted["Provenance"].attrs.get("echoflow_version") == echoflow_image.version


def test_convert_into_mount_root_read_only_root(echoflow_image, ek60_raw, tmp_path):
    out_dir = writable_dir(tmp_path / "out")
    proc = convert_in_container(echoflow_image, out_dir, "/out")
    assert proc.returncode == 0, proc.stdout[-2000:]
    assert (out_dir / (ek60_raw.stem + ".zarr")).is_dir()

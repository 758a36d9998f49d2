"""Release path and one source of truth: image tag = chart appVersion = package version,
`make help`, `make image-push`, the release workflow, `scripts/fetch-tools.sh` (checksum
checked, against a loopback mirror), and the deployment list everywhere = deploy.FLOWS."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import jobtemplate as jt
import pytest
import yaml
from chartcases import NAMESPACE, RELEASE

REPO = jt.REPO


# What an outer `make test` exports would override the Makefile's own defaults under test.
MAKE_EXPORTS = (
    "IMAGE",
    "IMAGE_REPO",
    "IMAGE_TAG",
    "REGISTRY",
    "VERSION",
    "REVISION",
    "MAKEFLAGS",
    "MFLAGS",
    "MAKELEVEL",
)


def make(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in MAKE_EXPORTS}
    return subprocess.run(["make", "-s", *args], cwd=REPO, capture_output=True, text=True, timeout=60, env=env)


def package_version() -> str:
    return re.search(r'^version = "(.+)"', (REPO / "pyproject.toml").read_text(), re.M).group(1)


def test_app_version_is_the_package_version_and_the_image_tag():
    chart = yaml.safe_load((jt.CHART / "Chart.yaml").read_text())
    assert chart["appVersion"] == package_version()
    pushed = make("-n", "image-push", "REGISTRY=registry.example/team")
    assert pushed.returncode == 0, pushed.stderr
    assert f"docker push registry.example/team/echoflow:{chart['appVersion']}" in pushed.stdout
    assert "scripts/build-image.sh" in pushed.stdout  # builds that very tag first
    refused = make("image-push")
    assert refused.returncode != 0 and "set REGISTRY" in refused.stderr


def test_make_help_lists_every_target_plainly():
    proc = make("help")  # stdout is a pipe here, not a terminal
    assert proc.returncode == 0 and "\x1b" not in proc.stdout
    listed = {line.split()[0] for line in proc.stdout.splitlines() if line.strip()}
    phony = set()
    for line in (REPO / "Makefile").read_text().splitlines():
        if line.startswith(".PHONY:"):
            phony |= set(line.split(":", 1)[1].split())
    assert phony <= listed, phony - listed
    assert {"e2e", "image-push", "tools"} <= listed


def test_release_workflow():
    flow = yaml.safe_load((REPO / ".github" / "workflows" / "release.yml").read_text())
    assert flow[True]["push"]["tags"] == ["v*"]  # YAML 1.1 reads `on` as True
    steps = flow["jobs"]["release"]["steps"]
    runs = "\n".join(s.get("run", "") for s in steps)
    assert 'GITHUB_REF_NAME}" = "v${version}"' in runs and "appVersion" in runs
    assert "make image-push REGISTRY=" in runs
    assert 'make chart-package CHART_REPO="oci://' in runs
    assert "registry login" in runs


@pytest.fixture()
def mirror(tmp_path):
    """A loopback HTTP server laid out like kind's release host."""
    root = tmp_path / "mirror"
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(SimpleHTTPRequestHandler, directory=str(root)))
    server.RequestHandlerClass.log_message = lambda *a: None
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def _platform() -> str:
    system = os.uname().sysname.lower()
    machine = {"x86_64": "amd64", "aarch64": "arm64"}.get(os.uname().machine, os.uname().machine)
    return f"{system}-{machine}"


def test_fetch_tools_checks_the_published_checksum(mirror, tmp_path):
    root, url = mirror
    release = root / "v0.30.0"
    release.mkdir(parents=True)
    binary = release / f"kind-{_platform()}"
    binary.write_text("#!/bin/sh\necho 'kind v0.30.0 test'\n")
    digest = hashlib.sha256(binary.read_bytes()).hexdigest()
    checksum = release / f"kind-{_platform()}.sha256sum"
    # The official route under test (CI sets FETCH_TOOLS_VIA=npm for make's own tools).
    env = {
        **{k: v for k, v in os.environ.items() if k != "FETCH_TOOLS_VIA"},
        "KIND_URL": url,
        "KIND_VERSION": "v0.30.0",
    }

    checksum.write_text(f"{'0' * 64}  kind-{_platform()}\n")
    bad = subprocess.run(
        [str(REPO / "scripts" / "fetch-tools.sh"), str(tmp_path / "bad"), "kind"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 1 and f"SHA-256 {digest}, published {'0' * 64}" in bad.stderr
    assert not (tmp_path / "bad" / "kind").exists()

    checksum.write_text(f"{digest}  kind-{_platform()}\n")
    ok = subprocess.run(
        [str(REPO / "scripts" / "fetch-tools.sh"), str(tmp_path / "ok"), "kind"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ok.returncode == 0, ok.stderr
    assert f"SHA-256 verified ({digest})" in ok.stderr and "kind v0.30.0 test" in ok.stdout
    assert os.access(tmp_path / "ok" / "kind", os.X_OK)


# ---------------------------------------------------------------------------- one list of flows


def registered_by_default() -> list[str]:
    """The flows `echoflow deploy` registers without watch settings."""
    from echoflow import deploy

    return [f for f in deploy.FLOWS if f != getattr(deploy, "WATCH", None)]


def test_chart_flow_list_is_deploy_flows(helm_bin):
    text = (jt.CHART / "templates" / "_flows.tpl").read_text()
    listed = re.search(r'define "echoflow.flows" -}}\n(.*)\n', text).group(1).split()
    assert listed == registered_by_default()


def test_notes_list_every_registered_deployment(helm_bin):
    notes = jt.helm("install", RELEASE, str(jt.CHART), "--namespace", NAMESPACE, "--dry-run=client").stdout.split(
        "NOTES:", 1
    )[1]
    line = next(line for line in notes.splitlines() if line.startswith("Deployments:"))
    assert line.split()[1:] == [f"{f}/echoflow" for f in registered_by_default()]
    watched = jt.helm(
        "install",
        RELEASE,
        str(jt.CHART),
        "--namespace",
        NAMESPACE,
        "--dry-run=client",
        "--set-string",
        "watch.source=s3://ship-uploads/x/",
    ).stdout
    line = next(line for line in watched.splitlines() if line.startswith("Deployments:"))
    from echoflow import deploy

    assert line.split()[1:] == [f"{f}/echoflow" for f in deploy.FLOWS]
    quiet = jt.helm(
        "install",
        RELEASE,
        str(jt.CHART),
        "--namespace",
        NAMESPACE,
        "--dry-run=client",
        "--set",
        "deployments.enabled=false",
    ).stdout
    assert "Deployments:" not in quiet


@pytest.mark.parametrize("doc", ["README.md", "charts/echoflow/README.md"])
def test_readmes_name_every_flow(doc):
    from echoflow import deploy

    text = (REPO / doc).read_text()
    for flow in deploy.FLOWS:
        assert f"{flow}/echoflow" in text or f"`{flow}`" in text, (doc, flow)
    assert not re.search(r"\b(three|3) deployments\b", text), doc

"""The packaging, tool and kind helper scripts."""

from __future__ import annotations

import os
import subprocess

import jobtemplate as jt
import pytest
import yaml

SCRIPTS = jt.REPO / "scripts"


# ---------------------------------------------------------------------------- shell scripts


@pytest.mark.parametrize("script", ["fetch-tools.sh", "chart-package.sh", "kind.sh"])
def test_shell_scripts_parse(script):
    path = SCRIPTS / script
    assert os.access(path, os.X_OK), f"{script} is not executable"
    assert path.read_text().startswith("#!/usr/bin/env bash\n")
    assert "set -euo pipefail" in path.read_text()
    proc = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_chart_package_to_directory(helm_bin, tmp_path):
    dist = tmp_path / "dist"
    env = {**os.environ, "HELM": helm_bin, "DIST": str(dist), "CHART_REPO": ""}
    proc = subprocess.run([str(SCRIPTS / "chart-package.sh")], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (dist / "echoflow-0.1.0.tgz").is_file()
    index = yaml.safe_load((dist / "index.yaml").read_text())
    (entry,) = index["entries"]["echoflow"]
    assert entry["version"] == "0.1.0" and entry["appVersion"] == "0.1.0"
    assert entry["urls"] == ["echoflow-0.1.0.tgz"]
    # The package is installable: it renders like the source chart.
    shown = jt.helm("show", "chart", str(dist / "echoflow-0.1.0.tgz")).stdout
    assert "version: 0.1.0" in shown


def test_chart_package_pushes_to_oci(helm_bin, tmp_path):
    log = tmp_path / "helm.log"
    stub = tmp_path / "helm"
    stub.write_text(
        f'#!/usr/bin/env bash\necho "$*" >> {log}\nif [[ "$1" == push ]]; then exit 0; fi\nexec {helm_bin} "$@"\n'
    )
    stub.chmod(0o755)
    dist = tmp_path / "dist"
    env = {**os.environ, "HELM": str(stub), "DIST": str(dist), "CHART_REPO": "oci://registry.example/charts"}
    proc = subprocess.run([str(SCRIPTS / "chart-package.sh")], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"push {dist}/echoflow-0.1.0.tgz oci://registry.example/charts" in log.read_text()
    assert not (dist / "index.yaml").exists()


def test_kind_script_commands(tmp_path):
    log = tmp_path / "kind.log"
    stub_dir = tmp_path / "bin"
    stub_dir.mkdir()
    (stub_dir / "kind").write_text(f'#!/usr/bin/env bash\necho "$*" >> {log}\n')
    (stub_dir / "kind").chmod(0o755)
    env = {
        **{k: v for k, v in os.environ.items() if k != "KIND"},  # an outer `make test` exports KIND
        "PATH": f"{stub_dir}:{os.environ['PATH']}",
        "KIND_CLUSTER": "ef-test",
        "IMAGE": "echoflow:0.1.0-abc",
    }
    for action in ("up", "load", "down"):
        proc = subprocess.run([str(SCRIPTS / "kind.sh"), action], env=env, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
    assert log.read_text().splitlines() == [
        "get clusters",
        "create cluster --name ef-test --config k8s/kind-config.yaml --wait 120s",
        "load docker-image echoflow:0.1.0-abc --name ef-test",
        "delete cluster --name ef-test",
    ]
    usage = subprocess.run([str(SCRIPTS / "kind.sh"), "sideways"], env=env, capture_output=True, text=True)
    assert usage.returncode == 2 and "usage" in usage.stderr


def test_kind_config_and_minio_manifests():
    config = yaml.safe_load((jt.K8S / "kind-config.yaml").read_text())
    assert config["kind"] == "Cluster"
    assert [n["role"] for n in config["nodes"]] == ["control-plane", "worker"]
    # The kind values pin flow runs to the labelled worker node.
    kind_values = yaml.safe_load((jt.K8S / "values-kind.yaml").read_text())
    assert kind_values["flowRuns"]["nodeSelector"].items() <= config["nodes"][1]["labels"].items()

    docs = [d for d in yaml.safe_load_all((jt.K8S / "minio.yaml").read_text()) if d]
    assert {d["kind"] for d in docs} == {"Secret", "Service", "Deployment", "Job"}
    for doc in docs:
        assert jt.validation_errors(doc) == [], doc["metadata"]["name"]
    images = [
        c["image"]
        for d in docs
        if d["kind"] in {"Deployment", "Job"}
        for c in d["spec"]["template"]["spec"]["containers"]
    ]
    assert images and all(i.startswith("quay.io/minio/minio:RELEASE.") for i in images)
    (s3,) = [d for d in docs if d["kind"] == "Secret" and d["metadata"]["name"] == "echoflow-s3"]
    assert set(s3["stringData"]) == {
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_DEFAULT_REGION",
        "AWS_ENDPOINT_URL",
        "FSSPEC_S3_ENDPOINT_URL",
    }
    assert kind_values["flowRuns"]["s3"]["existingSecret"] == "echoflow-s3"


def test_helm_lookup_order_and_failure(tmp_path, monkeypatch, helm_bin):
    """$HELM first, then PATH, then <repo>/.tools/helm; none of them: an error, not a skip."""
    fake_repo = tmp_path / "repo"
    (fake_repo / ".tools").mkdir(parents=True)
    empty_bin = tmp_path / "empty-bin"
    empty_bin.mkdir()
    monkeypatch.setattr(jt, "REPO", fake_repo)
    monkeypatch.setenv("PATH", str(empty_bin))
    monkeypatch.setenv("HELM", str(tmp_path / "no-such-helm"))
    with pytest.raises(jt.HelmNotFound, match="helm not found"):
        jt.helm_binary()

    tools_helm = fake_repo / ".tools" / "helm"
    tools_helm.write_text("#!/bin/sh\n")
    tools_helm.chmod(0o755)
    assert jt.helm_binary() == str(tools_helm)
    on_path = empty_bin / "helm"
    on_path.write_text("#!/bin/sh\n")
    on_path.chmod(0o755)
    assert jt.helm_binary() == str(on_path)
    monkeypatch.setenv("HELM", helm_bin)
    assert jt.helm_binary() == helm_bin

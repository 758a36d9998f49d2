"""The container image, built once per session from this checkout.

`docker_engine` needs a running Docker engine; without one every test here fails (not
skips): the image is part of what `make test` checks.
`echoflow_image` builds images/Dockerfile with scripts/build-image.sh under a test tag.
The build gets a CA bundle with one extra, freshly generated certificate (a canary), so
the tests can prove that the CA secret leaves no trace in the image.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from e2e_docker import REPO, git_head, project_version

SCRIPTS = REPO / "scripts"
TEST_TAG = os.environ.get("ECHOFLOW_TEST_IMAGE_TAG", "echoflow:e2e-test")
BUILD_TIMEOUT = 1500


@pytest.fixture(scope="session")
def docker_engine() -> str:
    """A Docker engine that answers; fails (does not skip) when none does. Nothing is
    installed or started here: a bare root sandbox runs scripts/sandbox/prepare.sh first."""
    if shutil.which("docker") is None:
        pytest.fail(
            "no docker client on PATH (install Docker; a bare root sandbox: scripts/sandbox/prepare.sh)", pytrace=False
        )
    proc = subprocess.run(["docker", "info"], capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        pytest.fail(
            f"no Docker engine answers 'docker info' (start Docker; a bare root sandbox: "
            f"scripts/sandbox/prepare.sh):\n{proc.stderr[-1500:]}",
            pytrace=False,
        )
    return "docker"


def base_ca_bundle() -> Path | None:
    """The CA bundle this machine's pip trusts (a proxy's CA lives there), if any."""
    for name in ("CA_BUNDLE", "PIP_CERT", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE"):
        value = os.environ.get(name)
        if value and value != "none" and Path(value).is_file():
            return Path(value)
    for path in ("/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt"):
        if Path(path).is_file():
            return Path(path)
    try:
        import certifi

        return Path(certifi.where())
    except ImportError:
        return None


def make_canary_cert(workdir: Path) -> str:
    """A fresh self-signed CA certificate (PEM) no image can contain by chance."""
    key, crt = workdir / "canary.key", workdir / "canary.pem"
    if shutil.which("openssl"):
        subprocess.run(
            [
                "openssl",
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=echoflow e2e canary CA",
                "-keyout",
                str(key),
                "-out",
                str(crt),
            ],
            check=True,
            capture_output=True,
        )
        return crt.read_text()
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    pkey = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "echoflow e2e canary CA")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(pkey.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(pkey, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode()


@dataclass(frozen=True)
class BuiltImage:
    name: str
    version: str
    revision: str
    ca_bundle: Path  # what was passed as the build secret
    canary_marker: bytes = field(repr=False)  # a line of the canary certificate's body
    build_log: str = field(repr=False)

    def __str__(self) -> str:
        return self.name


@pytest.fixture(scope="session")
def echoflow_image(docker_engine, tmp_path_factory) -> BuiltImage:
    """images/Dockerfile built by scripts/build-image.sh, once per session, under a test tag.

    Built without the layer cache, so the install step really runs with this session's CA
    secret (secrets are not part of BuildKit's cache key).
    """
    work = tmp_path_factory.mktemp("image-build")
    canary = make_canary_cert(work)
    bundle = work / "ca-bundle.pem"
    base = base_ca_bundle()
    bundle.write_text((base.read_text() if base else "") + "\n" + canary)
    body = [line for line in canary.splitlines() if line and not line.startswith("-----")]
    marker = body[len(body) // 2].encode()

    env = {
        **os.environ,
        "IMAGE": TEST_TAG,
        "CA_BUNDLE": str(bundle),
        "DOCKER_BUILD_ARGS": "--no-cache",
        # The pinned pangeo base unless another is given; this machine may not reach its
        # registry, so the tests ask for the same-layout stand-in explicitly.
        "BASE_IMAGE": os.environ.get("ECHOFLOW_TEST_BASE_IMAGE", "standin"),
    }
    for name in ("VERSION", "REVISION"):  # the script's own defaults are under test
        env.pop(name, None)
    previous = subprocess.run(
        ["docker", "image", "inspect", "-f", "{{.Id}}", TEST_TAG], capture_output=True, text=True
    ).stdout.strip()
    proc = subprocess.run(
        [str(SCRIPTS / "build-image.sh")],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT,
    )
    log_file = work / "build.log"
    log_file.write_text(proc.stderr)
    if proc.returncode != 0:
        pytest.fail(
            f"scripts/build-image.sh exited {proc.returncode} (log {log_file}):\n{proc.stderr[-5000:]}", pytrace=False
        )
    name = proc.stdout.strip().splitlines()[-1]
    assert name == TEST_TAG, proc.stdout
    if previous:  # the last session's build, now untagged: don't let them pile up
        current = subprocess.run(
            ["docker", "image", "inspect", "-f", "{{.Id}}", TEST_TAG], capture_output=True, text=True
        ).stdout.strip()
        if current and current != previous:
            subprocess.run(["docker", "image", "rm", previous], capture_output=True)
    for line in proc.stderr.splitlines():
        if line.startswith(("build-image:", "build-standin-base:")):
            print(line, file=sys.stderr)
    return BuiltImage(
        name=name,
        version=project_version(),
        revision=git_head(),
        ca_bundle=bundle,
        canary_marker=marker,
        build_log=proc.stderr,
    )

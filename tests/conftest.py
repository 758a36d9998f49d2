"""Session-wide real services: a Prefect server and an S3 server, both on loopback."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import httpx
import pytest
from samples import AZFP_RAW, AZFP_XML, DATA, EK60_RAW, REPO  # noqa: F401 - re-exported

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, proc: subprocess.Popen, log: Path, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url} exited early:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"{url} did not answer in {timeout}s:\n{log.read_text()[-3000:]}")


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture(scope="session")
def data_dir() -> Path:
    assert EK60_RAW.exists(), f"sample data missing: {DATA} (see data/README.md)"
    return DATA


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory) -> Iterator[str]:
    """A real `prefect server start` on SQLite; becomes this session's API."""
    home = tmp_path_factory.mktemp("prefect-server")
    port = free_port()
    env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_UI_ENABLED": "false",
        "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{home}/prefect.db",
    }
    env.pop("PREFECT_API_URL", None)
    log = home / "server.log"
    proc = subprocess.Popen(
        [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}/api"
    try:
        wait_http(f"{url}/health", proc, log)
        from prefect.context import refresh_global_settings_context
        from prefect.logging.handlers import APILogWorker

        # Process-wide, not a context var: threads and spawned workers must see it too.
        os.environ["PREFECT_API_URL"] = url
        refresh_global_settings_context()
        yield url
        APILogWorker.drain_all(timeout=10)  # ship queued run logs while the server is up
    finally:
        os.environ.pop("PREFECT_API_URL", None)
        if "prefect.context" in sys.modules:
            sys.modules["prefect.context"].refresh_global_settings_context()
        stop(proc)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory) -> Iterator[str]:
    """moto's S3 server (real S3 protocol over HTTP) on loopback; returns the endpoint URL."""
    port = free_port()
    log = tmp_path_factory.mktemp("s3") / "moto.log"
    proc = subprocess.Popen(
        [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        wait_http(endpoint + "/moto-api/", proc, log)
        yield endpoint
    finally:
        stop(proc)


from samples import S3_KEYS  # noqa: E402


def s3_client(endpoint: str):
    import boto3

    return boto3.client(
        "s3",
        aws_access_key_id=S3_KEYS["key"],
        aws_secret_access_key=S3_KEYS["secret"],
        endpoint_url=endpoint,
        region_name="us-east-1",
    )


@pytest.fixture(scope="session")
def private_bucket(s3_server) -> str:
    """A bucket only credentialed clients may read."""
    s3_client(s3_server).create_bucket(Bucket="results")
    return "results"


@pytest.fixture(scope="session")
def s3_env(s3_server) -> dict[str, str]:
    """AWS-style env for processes that talk to the local S3 server."""
    return {
        "AWS_ACCESS_KEY_ID": S3_KEYS["key"],
        "AWS_SECRET_ACCESS_KEY": S3_KEYS["secret"],
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": s3_server,
        "FSSPEC_S3_ENDPOINT_URL": s3_server,
    }


@pytest.fixture(scope="session")
def s3_options(s3_server) -> dict:
    """fsspec storage options for a credentialed client of the local S3 server."""
    return {**S3_KEYS, "client_kwargs": {"endpoint_url": s3_server, "region_name": "us-east-1"}}


@pytest.fixture(scope="session")
def s3_anon_options(s3_server) -> dict:
    return {"anon": True, "client_kwargs": {"endpoint_url": s3_server, "region_name": "us-east-1"}}


@pytest.fixture(scope="session")
def public_bucket(s3_server, s3_options, data_dir) -> str:
    """A public-read bucket laid out like the NCEI archive, holding the sample files."""
    import s3fs

    fs = s3fs.S3FileSystem(**s3_options)
    bucket = "public-archive"
    s3_client(s3_server).create_bucket(Bucket=bucket, ACL="public-read")
    prefix = f"{bucket}/data/raw/Discovery/DY1801/EK60"
    fs.put_file(str(EK60_RAW), f"{prefix}/{EK60_RAW.name}")
    fs.put_file(str(AZFP_RAW), f"{bucket}/data/raw/mooring/M1/AZFP/{AZFP_RAW.name}")
    fs.put_file(str(AZFP_XML), f"{bucket}/data/raw/mooring/M1/AZFP/{AZFP_XML.name}")
    return bucket


def have(cmd: str) -> bool:
    return shutil.which(cmd) is not None

"""Session-wide real services (a Prefect server and an S3 server, both on loopback) and the
markers of what a test needs beyond the venv, set here by directory."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Callable, Iterator

import pytest
from procs import free_port, stop, wait_http
from samples import AZFP_RAW, AZFP_XML, DATA, EK60_RAW, REPO, S3_KEYS  # noqa: F401 - re-exported

BIN = Path(sys.executable).parent
TESTS = Path(__file__).resolve().parent
# What every test under a directory needs (pyproject.toml registers the markers). A single
# test elsewhere that needs one carries the marker itself (`browser`: tests/cli/test_local_api.py).
NEEDS = {"chart": "helm", "e2e": "docker"}


def pytest_collection_modifyitems(config, items) -> None:
    for item in items:
        path = Path(item.path).resolve()
        if path.is_relative_to(TESTS) and (need := NEEDS.get(path.relative_to(TESTS).parts[0])):
            item.add_marker(need)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    assert EK60_RAW.exists(), f"sample data missing: {DATA} (see data/README.md)"
    return DATA


def migrated_db_template(config: pytest.Config) -> Path | None:
    """Where this Prefect version's empty, migrated database is cached (None without a cache)."""
    from importlib.metadata import version

    cache = getattr(config, "cache", None)  # absent with -p no:cacheprovider
    return cache.mkdir("prefect-db") / f"prefect-{version('prefect')}.db" if cache is not None else None


def snapshot(db: Path, to: Path) -> None:
    """A consistent copy of a live SQLite database, put in place atomically."""
    import sqlite3

    tmp = to.with_name(f"{to.name}.{os.getpid()}.tmp")
    src, dst = sqlite3.connect(db), sqlite3.connect(tmp)
    try:
        src.backup(dst)
    finally:
        src.close()
        dst.close()
    os.replace(tmp, to)


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory, pytestconfig) -> Iterator[str]:
    """A real `prefect server start` on SQLite; becomes this session's API (each xdist
    worker has its own). Its database starts as a copy of an empty one already migrated by
    this Prefect version (kept in pytest's cache): a fresh one costs seconds of migrations."""
    home = tmp_path_factory.mktemp("prefect-server")
    template = migrated_db_template(pytestconfig)
    if template is not None and template.exists():
        shutil.copyfile(template, home / "prefect.db")
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
        if template is not None and not template.exists():
            snapshot(home / "prefect.db", template)
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
def s3_service(tmp_path_factory) -> Iterator[tuple[str, Path]]:
    """moto's S3 server (real S3 protocol over HTTP) on loopback: its endpoint URL and its
    request log (one line per request)."""
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
        yield endpoint, log
    finally:
        stop(proc)


@pytest.fixture(scope="session")
def s3_server(s3_service) -> str:
    """The session's S3 endpoint URL."""
    return s3_service[0]


class S3RequestLog:
    """The S3 server's own request log, one line per request."""

    REQUEST = re.compile(r'"(GET|PUT|POST|HEAD|DELETE) /([^/? ]+)')

    def __init__(self, path: Path) -> None:
        self.path = path

    def requests(self, bucket: str) -> list[str]:
        """Every request to `bucket` so far, as "METHOD /path?query", in order."""
        lines = self.path.read_text().splitlines()
        return [ln.split('"')[1] for ln in lines if (m := self.REQUEST.search(ln)) and m.group(2) == bucket]


@pytest.fixture(scope="session")
def s3_log(s3_service) -> S3RequestLog:
    """The session's S3 server's request log."""
    return S3RequestLog(s3_service[1])


@pytest.fixture(scope="session")
def new_bucket(s3_server) -> Callable[..., str]:
    """new_bucket(name, public=False) creates a bucket on the session's S3 server; public:
    anyone may read it."""
    import boto3

    client = boto3.client(
        "s3",
        aws_access_key_id=S3_KEYS["key"],
        aws_secret_access_key=S3_KEYS["secret"],
        endpoint_url=s3_server,
        region_name="us-east-1",
    )

    def create(name: str, public: bool = False) -> str:
        client.create_bucket(Bucket=name, **({"ACL": "public-read"} if public else {}))
        return name

    return create


@pytest.fixture(scope="session")
def private_bucket(new_bucket) -> str:
    """A bucket only credentialed clients may read."""
    return new_bucket("results")


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
def public_bucket(new_bucket, s3_options, data_dir) -> str:
    """A public-read bucket laid out like the NCEI archive, holding the sample files."""
    import s3fs

    fs = s3fs.S3FileSystem(**s3_options)
    bucket = new_bucket("public-archive", public=True)
    prefix = f"{bucket}/data/raw/Discovery/DY1801/EK60"
    fs.put_file(str(EK60_RAW), f"{prefix}/{EK60_RAW.name}")
    fs.put_file(str(AZFP_RAW), f"{bucket}/data/raw/mooring/M1/AZFP/{AZFP_RAW.name}")
    fs.put_file(str(AZFP_XML), f"{bucket}/data/raw/mooring/M1/AZFP/{AZFP_XML.name}")
    return bucket

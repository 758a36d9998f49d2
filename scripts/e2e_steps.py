#!/usr/bin/env python3
"""Steps of the end-to-end runs, shared by `scripts/e2e.sh` (kind) and
tests/e2e/test_worker_loop.py (Docker, no cluster): upload the samples to S3, trigger a
deployment, wait for flow runs, check every output opens with echopype.

    e2e_steps.py upload-samples --data data --dest s3://raw/e2e [--ek60-copies 3]
    e2e_steps.py trigger convert-batch/echoflow --params '{"sources": [...], ...}'
    e2e_steps.py wait <flow-run-id>... [--timeout 900] [--expect Completed]
    e2e_steps.py children <flow-run-id>
    e2e_steps.py verify s3://converted/e2e/ek60 [--expect 3]
    e2e_steps.py logs <flow-run-id>

The Prefect API is PREFECT_API_URL. S3 is reached with the standard AWS variables
(AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION, AWS_ENDPOINT_URL), or
`--endpoint-url`. Imports are lazy: `--help` needs neither Prefect nor echopype.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterable, Optional

MARKER_SUFFIX = ".echoflow.json"  # echoflow.storage.MARKER_SUFFIX
EK60_SAMPLE = "ek60/DY1801_EK60-D20180211-T164025.raw"
AZFP_SAMPLE = "azfp/17031001.01A"
AZFP_XML = "azfp/17030815.XML"
FINAL_OK = ("Completed",)


def s3_options(endpoint_url: Optional[str] = None) -> dict[str, Any]:
    """fsspec options for S3 from the AWS environment (and an explicit endpoint)."""
    endpoint = endpoint_url or os.environ.get("AWS_ENDPOINT_URL") or os.environ.get("FSSPEC_S3_ENDPOINT_URL")
    options: dict[str, Any] = {}
    if os.environ.get("AWS_ACCESS_KEY_ID"):
        options.update(key=os.environ["AWS_ACCESS_KEY_ID"], secret=os.environ.get("AWS_SECRET_ACCESS_KEY"))
    client = {"region_name": os.environ.get("AWS_DEFAULT_REGION", "us-east-1")}
    if endpoint:
        client["endpoint_url"] = endpoint
    options["client_kwargs"] = client
    return options


def _fs(url: str, options: dict[str, Any]):
    from fsspec.core import url_to_fs

    return url_to_fs(url, **options)


def ek60_names(n: int, prefix: str = "DY1801_EK60") -> list[str]:
    """n file names in the Simrad convention <prefix>-DYYYYMMDD-THHMMSS.raw, 10 minutes apart."""
    return [f"{prefix}-D20180211-T{16 + i // 6:02d}{(i % 6) * 10:02d}25.raw" for i in range(n)]


def upload(files: Iterable[Path], dest: str, options: dict[str, Any], names: Optional[list[str]] = None) -> list[str]:
    """Upload local files under the prefix `dest` (as `names` when given); their URLs."""
    files = [Path(f) for f in files]
    names = names or [f.name for f in files]
    fs, root = _fs(dest, options)
    urls = []
    for f, name in zip(files, names, strict=True):
        fs.put_file(str(f), f"{root.rstrip('/')}/{name}")
        urls.append(f"{dest.rstrip('/')}/{name}")
    return urls


def upload_samples(data: Path, dest: str, options: dict[str, Any], ek60_copies: int = 3) -> dict[str, Any]:
    """The EK60 sample as `ek60_copies` files under <dest>/ek60 (convention names), the AZFP
    file and its XML under <dest>/azfp. Returns their URLs."""
    data = Path(data)
    for rel in (EK60_SAMPLE, AZFP_SAMPLE, AZFP_XML):
        if not (data / rel).is_file():
            raise FileNotFoundError(f"sample file missing: {data / rel}")
    names = ek60_names(ek60_copies)
    ek60 = upload([data / EK60_SAMPLE] * ek60_copies, f"{dest.rstrip('/')}/ek60", options, names)
    azfp = upload([data / AZFP_SAMPLE, data / AZFP_XML], f"{dest.rstrip('/')}/azfp", options)
    return {"ek60": ek60, "azfp": azfp[:1], "azfp_xml": azfp[1]}


def trigger(
    deployment: str,
    parameters: dict[str, Any],
    job_variables: Optional[dict[str, Any]] = None,
    tags: Optional[list[str]] = None,
) -> Any:
    """Create a flow run of `deployment` (not waiting for it); its id."""
    from prefect.deployments import run_deployment

    run = run_deployment(
        name=deployment, parameters=parameters, job_variables=job_variables or None, tags=tags or None, timeout=0
    )
    return run.id


def wait(ids: Iterable[Any], timeout: float = 900, poll: float = 2.0) -> dict[Any, Any]:
    """Wait until every flow run is in a final state; {id: flow run}. TimeoutError lists the rest."""
    from prefect.client.orchestration import get_client

    pending = list(ids)
    done: dict[Any, Any] = {}
    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while pending:
            for fid in list(pending):
                run = client.read_flow_run(fid)
                if run.state is not None and run.state.is_final():
                    done[fid] = run
                    pending.remove(fid)
            if not pending:
                break
            if time.monotonic() > deadline:
                left = [client.read_flow_run(f) for f in pending]
                raise TimeoutError(
                    "flow runs not final after %.0fs: %s"
                    % (timeout, ", ".join(f"{r.name} ({r.id}) {r.state_name}" for r in left))
                )
            time.sleep(poll)
    return done


def child_runs(parent_id: Any) -> list[Any]:
    """Flow runs started from inside a flow run (its run_deployment calls), oldest first."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[parent_id]))
        )
    return sorted(runs, key=lambda r: r.created)


def flow_run_logs(flow_run_id: Any, min_level: int = 0) -> list[Any]:
    """The flow run's log records in the Prefect API (its tasks' included), oldest first."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId, LogFilterLevel
    from prefect.client.schemas.sorting import LogSort

    flt = LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id]), level=LogFilterLevel(ge_=min_level))
    records, offset = [], 0
    with get_client(sync_client=True) as client:
        while True:
            page = client.read_logs(log_filter=flt, sort=LogSort.TIMESTAMP_ASC, offset=offset, limit=200)
            records += page
            offset += len(page)
            if len(page) < 200:
                return records


def outputs(prefix: str, options: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Complete outputs under `prefix` (those with a completion marker): {output URL: marker}."""
    fs, root = _fs(prefix, options)
    fs.invalidate_cache()  # fsspec reuses filesystem instances and their listings
    scheme = prefix.split("://", 1)[0] + "://" if "://" in prefix else ""
    found = {}
    for marker in sorted(fs.glob(f"{root.rstrip('/')}/*{MARKER_SUFFIX}")):
        with fs.open(marker, "rt") as f:
            found[scheme + marker[: -len(MARKER_SUFFIX)]] = json.load(f)
    return found


def verify(prefix: str, options: dict[str, Any], expect: Optional[int] = None) -> list[dict[str, Any]]:
    """Open every complete output under `prefix` with echopype; each must hold pings and name its
    source. One row per output; AssertionError says what is wrong."""
    import echopype as ep

    found = outputs(prefix, options)
    if expect is not None and len(found) != expect:
        raise AssertionError(f"{prefix}: {len(found)} complete outputs, expected {expect}: {sorted(found)}")
    if not found:
        raise AssertionError(f"{prefix}: no complete output")
    rows = []
    scratch = tempfile.TemporaryDirectory(prefix="e2e-verify-")
    for url, marker in found.items():
        if url.endswith(".nc") and "://" in url:
            # echopype opens netCDF from local files only: fetch it first.
            fs, path = _fs(url, options)
            local = Path(scratch.name) / path.rsplit("/", 1)[-1]
            fs.get_file(path, str(local))
            ed = ep.open_converted(str(local))
        else:
            ed = ep.open_converted(url, storage_options=options)
        beam = ed["Sonar/Beam_group1"]
        pings = int(beam.sizes.get("ping_time", 0)) if beam is not None else 0
        channels = int(beam.sizes.get("channel", 0)) if beam is not None else 0
        source = ed["Provenance"].attrs.get("echoflow_source_url")
        problems = []
        if pings == 0:
            problems.append("no pings in Sonar/Beam_group1")
        if source != marker.get("source_url"):
            problems.append(f"Provenance names {source!r}, the marker {marker.get('source_url')!r}")
        if ed["Provenance"].attrs.get("echoflow_sonar_model") != marker.get("sonar_model"):
            problems.append("sonar model differs between the output and its marker")
        if problems:
            raise AssertionError(f"{url}: " + "; ".join(problems))
        rows.append(
            {
                "output": url,
                "source": source,
                "sonar_model": marker.get("sonar_model"),
                "channels": channels,
                "pings": pings,
                "bytes": marker.get("bytes"),
            }
        )
        del ed
    scratch.cleanup()
    return rows


# -- command line ----------------------------------------------------------------------------


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not JSON: {exc}") from None


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="e2e_steps.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--endpoint-url", help="S3 endpoint (default: AWS_ENDPOINT_URL)")
    sub = parser.add_subparsers(dest="cmd", required=True)

    p = sub.add_parser("upload-samples", help="upload the sample files (EK60 copies, AZFP + XML) to S3")
    p.add_argument("--data", type=Path, required=True, help="folder with ek60/ and azfp/ (data/)")
    p.add_argument("--dest", required=True, help="S3 prefix, e.g. s3://raw/e2e")
    p.add_argument("--ek60-copies", type=int, default=3)

    p = sub.add_parser("upload", help="upload files under an S3 prefix")
    p.add_argument("--dest", required=True)
    p.add_argument("files", nargs="+", type=Path)

    p = sub.add_parser("trigger", help="create a flow run of a deployment; prints its id")
    p.add_argument("deployment", help="<flow>/<deployment>, e.g. convert-batch/echoflow")
    p.add_argument("--params", type=_json, default={}, help="parameters as a JSON object")
    p.add_argument("--job-variables", type=_json, default=None, help="job variables as a JSON object")

    p = sub.add_parser("wait", help="wait for flow runs to end; fails unless each ends in an expected state")
    p.add_argument("ids", nargs="+")
    p.add_argument("--timeout", type=float, default=900)
    p.add_argument("--expect", action="append", help="accepted final state name (repeatable; default Completed)")

    p = sub.add_parser("children", help="print the ids of the flow runs a flow run started (a cruise's)")
    p.add_argument("id")

    p = sub.add_parser("verify", help="open every complete output under an S3 prefix with echopype")
    p.add_argument("prefix")
    p.add_argument("--expect", type=int, help="number of outputs there must be")

    p = sub.add_parser("logs", help="print a flow run's logs from the Prefect API")
    p.add_argument("id")

    args = parser.parse_args(argv)
    if args.cmd == "upload-samples":
        print(
            json.dumps(upload_samples(args.data, args.dest, s3_options(args.endpoint_url), args.ek60_copies), indent=1)
        )
    elif args.cmd == "upload":
        for url in upload(args.files, args.dest, s3_options(args.endpoint_url)):
            print(url)
    elif args.cmd == "trigger":
        print(trigger(args.deployment, args.params, args.job_variables))
    elif args.cmd == "wait":
        expect = tuple(args.expect or FINAL_OK)
        runs = wait(args.ids, args.timeout)
        bad = 0
        for fid in args.ids:
            run = runs[fid]
            ok = run.state_name in expect
            bad += not ok
            message = (run.state.message or "") if run.state else ""
            print(f"{'ok ' if ok else 'BAD'} {run.name} {run.id} {run.state_name}: {message}")
        return 1 if bad else 0
    elif args.cmd == "children":
        for run in child_runs(args.id):
            print(run.id)
    elif args.cmd == "verify":
        try:
            rows = verify(args.prefix, s3_options(args.endpoint_url), args.expect)
        except AssertionError as exc:
            print(f"verify failed: {exc}", file=sys.stderr)
            return 1
        for r in rows:
            print(
                f"ok  {r['output']}  {r['sonar_model']}  {r['channels']} channels x {r['pings']} pings"
                f"  {r['bytes']} bytes  from {r['source']}"
            )
    elif args.cmd == "logs":
        import logging

        for rec in flow_run_logs(args.id):
            print(f"{rec.timestamp:%H:%M:%S} {logging.getLevelName(rec.level):7} {rec.name}: {rec.message}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`watch_prefix`: one scheduled look at a folder or prefix; new settled files go to conversion.

Each run lists the source once and sends the files that are new and settled to
`convert_cruise`, which runs them as child runs of the batch deployment (one Job each on
Kubernetes, under the conversions queue's limit) and gathers their results. Between runs the
watcher's memory (fingerprints of files not yet settled, files done or failed) is a small
JSON object beside the outputs, so an idle run costs one read of it and one listing. The
deployment allows one run at a time; the markers make even an overlapping run harmless.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from typing import Any, Optional

from prefect.states import Completed, State

from echoflow import storage, watch
from echoflow.errors import ParameterError
from echoflow.flows.arguments import CHILD_CONCURRENCY, documented
from echoflow.flows.batch import finish
from echoflow.flows.common import run_logger, warn_on_credentials
from echoflow.flows.cruise import convert_cruise
from echoflow.flows.runs import echoflow_flow
from echoflow.params import EXTENSIONS, OutputType, check_output_type, env_options
from echoflow.report import FileResult, Summary

STATE_PREFIX = ".echoflow-watch-"


def state_url(output_prefix: str, source: str) -> str:
    """The scheduled watcher's memory, beside the outputs; one per watched source."""
    key = hashlib.sha1(storage.public_url(source).encode()).hexdigest()[:12]
    return f"{output_prefix.rstrip('/')}/{STATE_PREFIX}{key}.json"


def load_state(url: str, options: Optional[dict[str, Any]]) -> dict[str, watch.Entry]:
    """The entries a scheduled run left; none (a fresh start, markers decide) when absent or torn."""
    fs, path = storage.filesystem(url, options)
    try:
        doc = json.loads(fs.cat_file(path, start=0))  # a range: s3fs reads whole objects after a HEAD
        return {u: watch.Entry(**e) for u, e in doc["files"].items()}
    except FileNotFoundError:
        return {}
    except (ValueError, KeyError, TypeError):
        return {}
    except Exception as exc:
        raise storage.io_error(exc, url, "reading the watch state") from exc


def save_state(url: str, options: Optional[dict[str, Any]], files: dict[str, watch.Entry], source: str) -> None:
    fs, _ = storage.filesystem(url, options)
    try:
        watch.write_json(
            fs, url, {"source": storage.public_url(source), "files": {u: asdict(e) for u, e in files.items()}}
        )
    except Exception as exc:
        raise storage.io_error(exc, url, "writing the watch state") from exc


def schedule_settings(text: str) -> dict[str, Any]:
    """The scheduled watch deployment's settings (JSON, e.g. from the chart):
    {"parameters": {source, sonar_model, output_prefix, ...}, "interval": seconds | "cron": "...",
    "timezone": "UTC", "job_variables": {...}} or {"enabled": false}."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ParameterError(f"watch settings are not valid JSON ({exc.msg} at char {exc.pos})") from None
    if isinstance(doc, dict) and doc.get("enabled") is False:
        return doc  # registered without a schedule
    if not isinstance(doc, dict) or not isinstance(doc.get("parameters"), dict):
        raise ParameterError("watch settings need a 'parameters' object (source, sonar_model, output_prefix)")
    missing = [k for k in ("source", "sonar_model", "output_prefix") if not doc["parameters"].get(k)]
    if missing:
        raise ParameterError(f"watch settings: parameters {', '.join(missing)} must be set")
    if not isinstance(doc.get("job_variables", {}), dict):
        raise ParameterError('watch settings: job_variables must be an object (e.g. {"cpu_request": "250m"})')
    interval, cron = doc.get("interval"), doc.get("cron")
    if bool(interval) == bool(cron):
        raise ParameterError("watch settings: set exactly one of 'interval' (seconds) or 'cron'")
    if interval and (not isinstance(interval, (int, float)) or interval < 10):
        raise ParameterError(f"watch settings: interval must be a number of seconds ≥ 10, got {interval!r}")
    return doc


def died(result: FileResult) -> bool:
    """Failed because its child run ended without a summary (pod evicted, node lost), which
    convert-cruise reports as 'child run <name> ended <state>: ...': not the file's fault."""
    return result.status == "failed" and (result.error or "").startswith("child run ")


@echoflow_flow(name="watch-prefix", log_prints=True)
@documented(
    concurrency=CHILD_CONCURRENCY,
    output_prefix="Output folder or s3:// prefix; the watch state and failure records live there too.",
)
def watch_prefix(
    source: str,
    sonar_model: str,
    output_prefix: str,
    output_type: OutputType = "netcdf",
    xml_path: Optional[str] = None,
    convert_params: Optional[dict[str, Any]] = None,
    settle_seconds: float = 60.0,
    ready_suffix: Optional[str] = None,
    retry_failed: bool = False,
    files_per_job: int = 10,
    concurrency: int = 0,
    input_storage_options: dict[str, Any] = {},  # noqa: B006 - never mutated
    output_storage_options: dict[str, Any] = {},  # noqa: B006
    batch_deployment: Optional[str] = "convert-batch/echoflow",
    job_variables: dict[str, Any] = {},  # noqa: B006
    poll_seconds: float = 10.0,
) -> State:
    """List `source` (a folder, glob or s3:// prefix) once and convert the files that are new
    and settled (unchanged for `settle_seconds`, or with a `<name><ready_suffix>` sidecar) as
    child runs of `batch_deployment` (None: subflows here), `files_per_job` files each.

    Files whose outputs are complete are never sent again; a file that failed is retried only
    once it changes, or with `retry_failed`. Run on a schedule with a concurrency limit of 1.
    """
    warn_on_credentials(input_storage_options, output_storage_options)
    # The rest of the parameters are checked by convert-cruise when there is work: an idle run
    # never loads echopype (which the sonar-model check may need).
    check_output_type(output_type)
    in_opts = {**env_options("input"), **input_storage_options}
    out_opts = {**env_options("output"), **output_storage_options}
    log = run_logger()
    memory = state_url(output_prefix, source)
    watcher = watch.Watcher(
        source,
        output_prefix,
        EXTENSIONS[output_type],
        settle=settle_seconds,
        ready_suffix=ready_suffix,
        retry_failed=retry_failed,
        input_options=in_opts,
        output_options=out_opts,
        files=load_state(memory, out_opts),
    )
    poll = watcher.poll()
    log.info(
        "%s: %d files listed, %d to convert, %d not settled yet, %d complete already, %d failed before",
        storage.shown(source),
        poll.listed,
        len(poll.ready),
        len(poll.waiting),
        len(poll.done),
        len(poll.failed_before),
    )
    for _, error in poll.failed_before:
        log.warning("not retried (unchanged since it failed): %s", error)
    results: list[FileResult] = []
    if poll.ready:
        try:
            state = convert_cruise(
                sources=[f.url for f in poll.ready],
                sonar_model=sonar_model,
                output_prefix=output_prefix,
                output_type=output_type,
                xml_path=xml_path,
                convert_params=convert_params,
                files_per_job=files_per_job,
                concurrency=concurrency,
                input_storage_options=input_storage_options,
                output_storage_options=output_storage_options,
                batch_deployment=batch_deployment,
                job_variables=job_variables,
                poll_seconds=poll_seconds,
                return_state=True,
            )
            data = state.result(raise_on_failure=False)
            if isinstance(data, BaseException):
                raise data
            results = Summary.model_validate(data).files
            by_source = {r.source: r for r in results}
            for f in poll.ready:
                r = by_source.get(storage.public_url(f.url))
                if r is not None and r.status != "cancelled":  # otherwise it stays new: the next run takes it
                    watcher.record(f, r.status, r.error, infrastructure=died(r))
        finally:
            # Whatever happened, keep what was learnt (settling times, results so far).
            save_state(memory, out_opts, watcher.files, source)
    elif watcher.changed:
        save_state(memory, out_opts, watcher.files, source)
    if not results:
        return Completed(
            message=f"{poll.listed} files listed: nothing new and settled ({len(poll.waiting)} not settled yet)",
            data=Summary(files=[]).model_dump(),
        )
    return finish(Summary(files=results), "watch-prefix")

"""Pieces every flow shares: retry policy, run logger, the credentials warning."""

from __future__ import annotations

import logging
from typing import Any

from prefect.cache_policies import NO_CACHE
from prefect.tasks import exponential_backoff

from echoflow.errors import is_transient

RETRIES = 3
RETRY_DELAYS = exponential_backoff(backoff_factor=2)  # 2, 4, 8 s (+ jitter)


def retry_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Retry network/storage hiccups only; bad data or parameters fail at once."""
    exc = state.data if isinstance(state.data, BaseException) else None
    if exc is None:
        try:
            state.result()
        except BaseException as raised:  # noqa: BLE001 - classify whatever the task raised
            exc = raised
    return exc is not None and is_transient(exc)


# Every echoflow task: its inputs are files and data, never worth caching; it retries
# network and storage hiccups only.
TASK_OPTIONS: dict[str, Any] = dict(
    cache_policy=NO_CACHE, retries=RETRIES, retry_delay_seconds=RETRY_DELAYS, retry_condition_fn=retry_transient
)


def run_logger() -> Any:
    """The run's logger inside a run; a plain logger otherwise (e.g. while tracing a graph)."""
    from prefect import get_run_logger
    from prefect.exceptions import MissingContextError

    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger("echoflow")


def warn_on_credentials(*option_sets: dict[str, Any]) -> None:
    """Prefect stores run parameters; say so when credentials were passed as parameters."""
    from echoflow.params import split_secrets

    if any(split_secrets(o or {})[1] for o in option_sets):
        run_logger().warning(
            "storage options carry credentials; Prefect stores run parameters, so pass them as "
            "ECHOFLOW_INPUT_/OUTPUT_STORAGE_OPTIONS or AWS_* environment variables instead"
        )

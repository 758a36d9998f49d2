"""Wait until the Prefect API answers its health check.

Reads PREFECT_API_URL (and PREFECT_API_KEY for Prefect Cloud) from the environment.
Exit status 0 once the API is healthy, 1 after --timeout seconds, 2 without
PREFECT_API_URL (a Prefect client without it would start a throwaway local server).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time


async def _healthcheck() -> Exception | None:
    from prefect.client.orchestration import get_client

    async with get_client() as client:
        return await client.api_healthcheck()


def wait_for_api(timeout: float, interval: float = 5.0) -> bool:
    """Poll the API until it is healthy; False when `timeout` seconds pass first."""
    url = os.environ.get("PREFECT_API_URL", "")
    deadline = time.monotonic() + timeout
    while True:
        try:
            error = asyncio.run(_healthcheck())
        except Exception as exc:  # a bad URL or TLS error: report and retry
            error = exc
        if error is None:
            print(f"Prefect API at {url} is healthy", flush=True)
            return True
        if time.monotonic() >= deadline:
            print(f"Prefect API at {url} not healthy after {timeout:.0f}s: {error!r}",
                  file=sys.stderr, flush=True)
            return False
        print(f"waiting for the Prefect API at {url}: {error!r}", flush=True)
        time.sleep(interval)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds (default 600)")
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between tries")
    args = parser.parse_args(argv)
    if not os.environ.get("PREFECT_API_URL"):
        print("PREFECT_API_URL is not set", file=sys.stderr)
        return 2
    return 0 if wait_for_api(args.timeout, args.interval) else 1


if __name__ == "__main__":
    sys.exit(main())

"""Check an echoflow installation through the Prefect API (run by `helm test`).

Checks, in order: the API answers; the work pool exists and is of type kubernetes;
its base job template equals the chart's (--base-job-template); every --deployment
exists and uses the pool; with --require-worker, a worker polling the pool is online.
Prints one line per check; exit status 0 when all pass, 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from wait_for_api import wait_for_api  # noqa: E402


class CheckFailed(Exception):
    pass


async def _check(args: argparse.Namespace, deadline: float) -> None:
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    async with get_client() as client:
        try:
            pool = await client.read_work_pool(args.pool)
        except ObjectNotFound:
            raise CheckFailed(f"work pool {args.pool!r} does not exist")
        if pool.type != "kubernetes":
            raise CheckFailed(f"work pool {args.pool!r} has type {pool.type!r}, not 'kubernetes'")
        print(f"ok: work pool {args.pool!r} (kubernetes)", flush=True)

        if args.base_job_template:
            expected = json.loads(Path(args.base_job_template).read_text())
            if pool.base_job_template != expected:
                differing = sorted(
                    key for key in set(expected) | set(pool.base_job_template)
                    if expected.get(key) != pool.base_job_template.get(key)
                )
                raise CheckFailed(
                    f"work pool {args.pool!r} base job template differs from "
                    f"{args.base_job_template} in {differing}"
                )
            print(f"ok: base job template matches {args.base_job_template}", flush=True)

        for name in args.deployment:
            try:
                deployment = await client.read_deployment_by_name(name)
            except ObjectNotFound:
                raise CheckFailed(f"deployment {name!r} does not exist")
            if deployment.work_pool_name != args.pool:
                raise CheckFailed(
                    f"deployment {name!r} uses work pool {deployment.work_pool_name!r}, "
                    f"not {args.pool!r}"
                )
            print(f"ok: deployment {name!r} on pool {args.pool!r}", flush=True)

        if args.require_worker:
            while True:
                workers = await client.read_workers_for_work_pool(args.pool)
                online = [w.name for w in workers if str(getattr(w.status, "value", w.status)) == "ONLINE"]
                if online:
                    print(f"ok: worker(s) online: {', '.join(online)}", flush=True)
                    break
                if time.monotonic() >= deadline:
                    raise CheckFailed(f"no worker online for work pool {args.pool!r}")
                print(f"waiting for a worker on {args.pool!r}", flush=True)
                await asyncio.sleep(5)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pool", required=True)
    parser.add_argument("--deployment", action="append", default=[],
                        help="FLOW/DEPLOYMENT; repeatable")
    parser.add_argument("--base-job-template", help="JSON file the pool's template must equal")
    parser.add_argument("--require-worker", action="store_true")
    parser.add_argument("--timeout", type=float, default=300.0,
                        help="seconds to wait for the API and for a worker")
    args = parser.parse_args(argv)
    if not os.environ.get("PREFECT_API_URL"):
        print("PREFECT_API_URL is not set", file=sys.stderr)
        return 2
    deadline = time.monotonic() + args.timeout
    if not wait_for_api(args.timeout):
        return 1
    try:
        asyncio.run(_check(args, deadline))
    except CheckFailed as exc:
        print(f"FAIL: {exc}", file=sys.stderr, flush=True)
        return 1
    print("echoflow installation OK", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

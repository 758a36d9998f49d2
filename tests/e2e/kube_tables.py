"""Server-side Table rendering (meta.k8s.io/v1 Table) for `kubectl get jobs,pods`.

kubectl asks list endpoints for `application/json;as=Table;...`; a real API server answers
with the columns kubectl prints. These are the columns of Kubernetes 1.35's printers for
Jobs (NAME STATUS COMPLETIONS DURATION AGE) and pods (NAME READY STATUS RESTARTS AGE),
computed from the stored status the kubelet side writes.
"""

from __future__ import annotations

import datetime
from typing import Any, Mapping, Optional


def _time(value: Optional[str]) -> Optional[datetime.datetime]:
    return datetime.datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


def _age(start: Optional[str], end: Optional[str] = None) -> str:
    begin = _time(start)
    if begin is None:
        return "<unknown>"
    seconds = int(((_time(end) or datetime.datetime.now(datetime.timezone.utc)) - begin).total_seconds())
    if seconds < 120:
        return f"{max(seconds, 0)}s"
    return f"{seconds // 60}m{seconds % 60}s" if seconds < 600 else f"{seconds // 60}m"


def job_status(status: Mapping[str, Any]) -> str:
    for condition in status.get("conditions") or []:
        if condition.get("status") == "True" and condition.get("type") in ("Complete", "Failed"):
            return condition["type"]
    return "Running" if status.get("active") else "Pending"


def pod_status(status: Mapping[str, Any]) -> str:
    for container in status.get("containerStatuses") or []:
        state = container.get("state") or {}
        if "terminated" in state and state["terminated"].get("reason"):
            return state["terminated"]["reason"]
    return status.get("phase", "Pending")


def _job_row(job: Mapping[str, Any]) -> list:
    status = job.get("status") or {}
    return [
        job["metadata"]["name"],
        job_status(status),
        f"{status.get('succeeded', 0)}/{(job.get('spec') or {}).get('completions', 1)}",
        _age(status.get("startTime"), status.get("completionTime")) if status.get("startTime") else "",
        _age(job["metadata"].get("creationTimestamp")),
    ]


def _pod_row(pod: Mapping[str, Any]) -> list:
    status = pod.get("status") or {}
    containers = status.get("containerStatuses") or []
    ready = sum(1 for c in containers if c.get("ready"))
    total = len((pod.get("spec") or {}).get("containers") or [])
    restarts = sum(c.get("restartCount", 0) for c in containers)
    return [
        pod["metadata"]["name"],
        f"{ready}/{total}",
        pod_status(status),
        restarts,
        _age(pod["metadata"].get("creationTimestamp")),
    ]


COLUMNS = {
    "jobs": (
        ("Name", "string", "name"),
        ("Status", "string", ""),
        ("Completions", "string", ""),
        ("Duration", "string", ""),
        ("Age", "string", ""),
    ),
    "pods": (
        ("Name", "string", "name"),
        ("Ready", "string", ""),
        ("Status", "string", ""),
        ("Restarts", "integer", ""),
        ("Age", "string", ""),
    ),
}
ROWS = {"jobs": _job_row, "pods": _pod_row}


def table_for(plural: str, items: list[Mapping[str, Any]]) -> dict:
    if plural not in COLUMNS:
        raise LookupError(f"no table columns for {plural}")
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {},
        "columnDefinitions": [
            {"name": name, "type": type_, "format": fmt, "description": "", "priority": 0}
            for name, type_, fmt in COLUMNS[plural]
        ],
        "rows": [
            {
                "cells": ROWS[plural](item),
                "object": {
                    "kind": "PartialObjectMetadata",
                    "apiVersion": "meta.k8s.io/v1",
                    "metadata": item["metadata"],
                },
            }
            for item in items
        ],
    }

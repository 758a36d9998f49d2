"""RBAC as the API server evaluates it, for the API stand-in: a request's verb, the Role
rules that grant it, and the record of each request (who, verb, resource, namespace)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Optional


@dataclass(frozen=True)
class Call:
    """One API request as RBAC sees it."""

    who: str
    verb: str
    group: str
    resource: str  # plural, or plural/subresource
    namespace: Optional[str]
    name: Optional[str]
    allowed: bool

    def __str__(self) -> str:
        where = f"-n {self.namespace}" if self.namespace else "cluster-wide"
        api = f"{self.group}/" if self.group else ""
        return f"{self.who}: {self.verb} {api}{self.resource} {where}{'' if self.allowed else ' DENIED'}"


def rbac_verb(method: str, named: bool, params: Mapping[str, str]) -> str:
    if method == "GET":
        if params.get("watch") in ("true", "1"):
            return "watch"
        return "get" if named else "list"
    return {
        "POST": "create",
        "PUT": "update",
        "PATCH": "patch",
        "DELETE": "delete" if named else "deletecollection",
    }.get(method, method.lower())


def allows(rules: Iterable[Mapping[str, Any]], verb: str, group: str, resource: str) -> bool:
    """Whether one of a Role's rules grants this (no resourceNames in the chart's Role)."""
    for rule in rules:
        if rule.get("resourceNames"):
            raise ValueError(f"resourceNames are not modelled: {rule}")
        if (
            (group in rule.get("apiGroups", []) or "*" in rule.get("apiGroups", []))
            and (resource in rule.get("resources", []) or "*" in rule.get("resources", []))
            and (verb in rule.get("verbs", []) or "*" in rule.get("verbs", []))
        ):
            return True
    return False


def role_rules(objects: Iterable[dict], kind: str = "Role") -> tuple[str, list[dict]]:
    """The (namespace, rules) of the chart's one Role."""
    roles = [o for o in objects if o and o.get("kind") == kind]
    if len(roles) != 1:
        raise LookupError(f"expected one {kind} in the rendered chart, found {len(roles)}")
    return roles[0]["metadata"]["namespace"], json.loads(json.dumps(roles[0]["rules"]))

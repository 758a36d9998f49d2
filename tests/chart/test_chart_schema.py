"""values.schema.json: bad values make `helm template` fail and say what is wrong."""

from __future__ import annotations

import json

import jobtemplate as jt
import pytest


def render_fails(*extra: str) -> str:
    proc = jt.helm(*jt.template_args(), *extra, check=False)
    assert proc.returncode != 0, f"helm template accepted {extra}"
    return proc.stderr


@pytest.fixture(scope="module")
def helm_major(helm_bin) -> int:
    return int(jt.helm("version", "--short").stdout.strip().lstrip("v").split(".")[0])


# (--set, field the message must name (as a/b or a.b), word it must contain, helm 4's exact text)
BAD_VALUES = [
    # No pool name: an empty one, or none at all.
    ("workPool.name=", "workPool.name", "", "at '/workPool/name': minLength: got 0, want 1"),
    ("workPool.name=null", "workPool", "name", "at '/workPool': missing property 'name'"),
    # Malformed resource quantities.
    (
        "flowRuns.resources.requests.cpu=two",
        "flowRuns.resources.requests.cpu",
        "two",
        "at '/flowRuns/resources/requests/cpu': 'two' does not match pattern",
    ),
    (
        "flowRuns.resources.limits.memory=16GB",
        "flowRuns.resources.limits.memory",
        "16GB",
        "at '/flowRuns/resources/limits/memory': '16GB' does not match pattern",
    ),
    (
        "worker.resources.limits.cpu=1.5.0",
        "worker.resources.limits.cpu",
        "1.5.0",
        "at '/worker/resources/limits/cpu': '1.5.0' does not match pattern",
    ),
    (
        "server.persistence.size=big",
        "server.persistence.size",
        "big",
        "at '/server/persistence/size': 'big' does not match pattern",
    ),
    (
        "flowRuns.scratch.sizeLimit=-5Gi",
        "flowRuns.scratch.sizeLimit",
        "-5Gi",
        "at '/flowRuns/scratch/sizeLimit': '-5Gi' does not match pattern",
    ),
    # Unknown keys, at the top and deeper down.
    ("workpool.name=x", None, "workpool", "at '': additional properties 'workpool' not allowed"),
    (
        "flowRuns.resource.requests.cpu=1",
        "flowRuns",
        "resource",
        "at '/flowRuns': additional properties 'resource' not allowed",
    ),
    (
        "flowRuns.resources.requests.gpu=1",
        "flowRuns.resources.requests",
        "gpu",
        "at '/flowRuns/resources/requests': additional properties 'gpu' not allowed",
    ),
    (
        "server.persistence.sizeLimit=1Gi",
        "server.persistence",
        "sizeLimit",
        "at '/server/persistence': additional properties 'sizeLimit' not allowed",
    ),
    # Other typed fields.
    ("image.pullPolicy=Sometimes", "image.pullPolicy", "", "at '/image/pullPolicy': value must be one of"),
    ("flowRuns.backoffLimit=-1", "flowRuns.backoffLimit", "", "at '/flowRuns/backoffLimit': minimum"),
    (
        "flowRuns.tolerations[0].operator=Maybe",
        None,
        "operator",
        "at '/flowRuns/tolerations/0/operator': value must be one of 'Exists', 'Equal'",
    ),
    ("flowRuns.env.BAD-NAME=x", None, "BAD-NAME", "invalid propertyName 'BAD-NAME'"),
    (
        "prefect.apiUrl=api.prefect.cloud",
        "prefect.apiUrl",
        "",
        "at '/prefect/apiUrl': 'api.prefect.cloud' does not match pattern",
    ),
    # Without the in-chart server an API URL is required.
    ("server.enabled=false", "prefect.apiUrl", "", "at '/prefect/apiUrl': minLength: got 0, want 1"),
]


@pytest.mark.parametrize("setting, field, word, helm4_text", BAD_VALUES, ids=[b[0] for b in BAD_VALUES])
def test_schema_rejects(helm_major, setting, field, word, helm4_text):
    stderr = render_fails("--set", setting)
    assert "values don't meet the specifications of the schema" in stderr, stderr
    if field:
        assert f"/{field.replace('.', '/')}" in stderr or field in stderr, stderr
    assert word in stderr, stderr
    if helm_major >= 4:  # the exact wording of helm 4's validator
        assert helm4_text in stderr, stderr


def test_server_and_external_api_are_exclusive(helm_bin):
    stderr = render_fails("--set", "prefect.apiUrl=https://api.prefect.cloud/api/accounts/a/workspaces/b")
    assert "set server.enabled=false" in stderr


@pytest.mark.parametrize("quantity", ["2", "500m", "0.5", "16Gi", "1e3", "128974848", ".5", "1.5Gi"])
def test_schema_accepts_quantities(helm_bin, quantity):
    objects = jt.render_chart(
        set_values={"flowRuns.resources.limits.memory": quantity, "worker.resources.requests.cpu": quantity}
    )
    variables = jt.base_job_template(objects)["variables"]["properties"]
    assert variables["memory_limit"]["default"] == quantity


def test_numeric_quantities_become_strings(helm_bin):
    objects = jt.render_chart(set_values={"flowRuns.resources.requests.cpu": 3, "worker.resources.limits.cpu": 2})
    variables = jt.base_job_template(objects)["variables"]["properties"]
    assert variables["cpu_request"]["default"] == "3"
    (worker,) = jt.find(objects, "Deployment", "echoflow-worker")
    assert worker["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["cpu"] == "2"


def test_schema_is_draft07_and_closed():
    schema = json.loads((jt.CHART / "values.schema.json").read_text())
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"

    def closed(node, path="#"):
        """Every object schema with properties forbids others."""
        if isinstance(node, dict):
            if "properties" in node and node.get("type") == "object":
                assert node.get("additionalProperties") is False, path
            for key, value in node.items():
                closed(value, f"{path}/{key}")
        elif isinstance(node, list):
            for i, value in enumerate(node):
                closed(value, f"{path}/{i}")

    closed(schema)
    assert schema["properties"]["workPool"]["required"] == ["name"]
    assert schema["properties"]["workPool"]["properties"]["name"]["minLength"] == 1


def test_every_default_value_is_in_the_schema():
    """values.yaml and the schema describe the same keys."""
    import yaml

    values = yaml.safe_load((jt.CHART / "values.yaml").read_text())
    schema = json.loads((jt.CHART / "values.schema.json").read_text())

    def resolve(node):
        while "$ref" in node:
            node = schema["definitions"][node["$ref"].rsplit("/", 1)[1]]
        return node

    def walk(value, node, path):
        node = resolve(node)
        if isinstance(value, dict) and "properties" in node:
            assert set(value) <= set(node["properties"]), path
            for key, sub in value.items():
                walk(sub, node["properties"][key], f"{path}.{key}")

    walk(values, schema, "values")
    assert set(values) == set(schema["properties"]) - {"global"}

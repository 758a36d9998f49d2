"""values.schema.json: bad values make `helm template` fail and say what is wrong."""

from __future__ import annotations

import json

import pytest

import jobtemplate as jt


def render_fails(*extra: str) -> str:
    proc = jt.helm(*jt.template_args(), *extra, check=False)
    assert proc.returncode != 0, f"helm template accepted {extra}"
    return proc.stderr


@pytest.mark.parametrize("args, expected", [
    # No pool name: an empty one, or none at all.
    (["--set", "workPool.name="], "at '/workPool/name': minLength"),
    (["--set", "workPool.name=null"], "at '/workPool': missing property 'name'"),
    # Malformed resource quantities.
    (["--set", "flowRuns.resources.requests.cpu=two"], "at '/flowRuns/resources/requests/cpu'"),
    (["--set", "flowRuns.resources.limits.memory=16GB"], "at '/flowRuns/resources/limits/memory'"),
    (["--set", "worker.resources.limits.cpu=1.5.0"], "at '/worker/resources/limits/cpu'"),
    (["--set", "server.persistence.size=big"], "at '/server/persistence/size'"),
    (["--set", "flowRuns.scratch.sizeLimit=-5Gi"], "at '/flowRuns/scratch/sizeLimit'"),
    # Unknown keys, at the top and deeper down.
    (["--set", "workpool.name=x"], "additional properties 'workpool' not allowed"),
    (["--set", "flowRuns.resource.requests.cpu=1"], "at '/flowRuns': additional properties 'resource' not allowed"),
    (["--set", "flowRuns.resources.requests.gpu=1"], "at '/flowRuns/resources/requests': additional properties 'gpu' not allowed"),
    (["--set", "server.persistence.sizeLimit=1Gi"], "at '/server/persistence': additional properties 'sizeLimit' not allowed"),
    # Other typed fields.
    (["--set", "image.pullPolicy=Sometimes"], "at '/image/pullPolicy'"),
    (["--set", "flowRuns.backoffLimit=-1"], "at '/flowRuns/backoffLimit'"),
    (["--set", "flowRuns.tolerations[0].operator=Maybe"], "at '/flowRuns/tolerations/0/operator'"),
    (["--set", "flowRuns.env.BAD-NAME=x"], "invalid propertyName 'BAD-NAME'"),
    (["--set", "prefect.apiUrl=api.prefect.cloud"], "at '/prefect/apiUrl'"),
    # Without the in-chart server an API URL is required.
    (["--set", "server.enabled=false"], "at '/prefect/apiUrl': minLength"),
])
def test_schema_rejects(helm_bin, args, expected):
    stderr = render_fails(*args)
    assert "values don't meet the specifications of the schema" in stderr, stderr
    assert expected in stderr, stderr


def test_server_and_external_api_are_exclusive(helm_bin):
    stderr = render_fails("--set", "prefect.apiUrl=https://api.prefect.cloud/api/accounts/a/workspaces/b")
    assert "set server.enabled=false" in stderr


@pytest.mark.parametrize("quantity", ["2", "500m", "0.5", "16Gi", "1e3", "128974848", ".5", "1.5Gi"])
def test_schema_accepts_quantities(helm_bin, quantity):
    objects = jt.render_chart(set_values={"flowRuns.resources.limits.memory": quantity,
                                          "worker.resources.requests.cpu": quantity})
    variables = jt.base_job_template(objects)["variables"]["properties"]
    assert variables["memory_limit"]["default"] == quantity


def test_numeric_quantities_become_strings(helm_bin):
    objects = jt.render_chart(set_values={"flowRuns.resources.requests.cpu": 3,
                                          "worker.resources.limits.cpu": 2})
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

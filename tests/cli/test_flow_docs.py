"""Every deployed flow describes every parameter (Prefect reads the docstrings' Args:)."""

import importlib

import pytest
from prefect.utilities.callables import parameter_schema

from echoflow.deploy import FLOWS


@pytest.mark.parametrize("name, entrypoint", sorted(FLOWS.items()))
def test_parameters_have_descriptions(name, entrypoint):
    module, _, attr = entrypoint.rpartition(".")
    flow = getattr(importlib.import_module(module), attr)
    props = parameter_schema(flow).model_dump()["properties"]
    assert props and not [p for p, spec in props.items() if not spec.get("description")]
    assert flow.flow_run_name is not None or name == "watch-prefix"  # run names say what ran

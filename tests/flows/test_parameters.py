"""One definition of the conversion parameters: the flows' signatures, the CLI's options and
the request models agree on names and defaults."""

from __future__ import annotations

import inspect

import pytest
from pydantic_core import PydanticUndefined

from echoflow.flows.batch import convert_batch
from echoflow.flows.convert import convert_raw_sonar
from echoflow.flows.cruise import convert_cruise
from echoflow.params import BatchRequest, ConvertRequest


def _defaults(fn) -> dict:
    return {n: p.default for n, p in inspect.signature(fn).parameters.items()}


def _model_defaults(model) -> dict:
    out = {}
    for name, field in model.model_fields.items():
        if field.default_factory is not None:
            out[name] = field.default_factory()
        else:
            out[name] = inspect.Parameter.empty if field.default is PydanticUndefined else field.default
    return out


@pytest.mark.parametrize(
    ("flow", "model"),
    [(convert_raw_sonar, ConvertRequest), (convert_batch, BatchRequest), (convert_cruise, BatchRequest)],
)
def test_flow_parameters_are_the_request_models(flow, model):
    flow_defaults = _defaults(flow.fn)
    model_defaults = _model_defaults(model)
    missing = set(model_defaults) - set(flow_defaults)
    assert not missing, f"{flow.name} lacks {missing}"
    for name, default in model_defaults.items():
        assert flow_defaults[name] == default, f"{flow.name}.{name}: {flow_defaults[name]!r} != {default!r}"


def test_cli_convert_defaults_are_the_batch_models():
    from echoflow.cli.convert import convert

    cli = {n: p.default.default for n, p in inspect.signature(convert).parameters.items()}
    model = _model_defaults(BatchRequest)
    assert cli["output_type"] == model["output_type"]
    assert cli["concurrency"] == model["concurrency"]
    assert cli["overwrite"] == model["overwrite"]
    assert cli["xml"] == model["xml_path"]

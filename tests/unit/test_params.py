import pytest
from pydantic import ValidationError

from echoflow.errors import ParameterError
from echoflow.params import BatchRequest, ConvertRequest, check_sonar_model, sonar_models


def test_every_echopype_model_is_accepted():
    from echopype.core import SONAR_MODELS

    assert set(sonar_models()) == set(SONAR_MODELS)
    for model, needs_xml in sonar_models().items():
        assert check_sonar_model(model.lower(), "x.xml" if needs_xml else None) == model


def test_unknown_model_names_the_supported_ones():
    with pytest.raises(ParameterError, match=r"unknown sonar model 'EK99'.*EK60.*EK80"):
        check_sonar_model("EK99", None)


def test_azfp_without_xml_says_what_to_pass():
    with pytest.raises(ParameterError, match=r"AZFP needs its instrument XML.*--xml"):
        ConvertRequest(raw_file="a.01A", sonar_model="AZFP", output_path="out")


def test_unknown_output_type_names_allowed_values():
    with pytest.raises(ParameterError, match=r"unknown output_type 'hdf5'.*'netcdf', 'zarr'"):
        BatchRequest(sources=["a.raw"], sonar_model="EK60", output_prefix="o", output_type="hdf5")


def test_unknown_parameter_is_refused():
    with pytest.raises(ValidationError, match="extra"):
        BatchRequest(sources=["a.raw"], sonar_model="EK60", output_prefix="o", concurency=2)


def test_model_table_is_cached_per_echopype_version(tmp_path, monkeypatch):
    import json

    from echoflow import params

    monkeypatch.setenv("ECHOFLOW_HOME", str(tmp_path / "absent"))
    params.sonar_models.cache_clear()
    try:
        params.sonar_models()
        assert not (tmp_path / "absent").exists()  # no home is created just for a cache
        monkeypatch.setenv("ECHOFLOW_HOME", str(tmp_path))
        params.sonar_models.cache_clear()
        first = params.sonar_models()
        [cached] = list((tmp_path / "cache").glob("sonar-models-echopype-*.json"))
        from importlib.metadata import version

        assert cached.name == f"sonar-models-echopype-{version('echopype')}.json"
        assert json.loads(cached.read_text()) == first
        params.sonar_models.cache_clear()
        assert params.sonar_models() == first
    finally:
        params.sonar_models.cache_clear()

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


def test_model_table_is_echopypes_own():
    """The static table equals what the installed echopype converts and needs."""
    from echopype.core import SONAR_MODELS

    assert {name: bool(spec.get("xml")) for name, spec in SONAR_MODELS.items()} == sonar_models()


def test_checking_parameters_does_not_import_echopype():
    import subprocess
    import sys

    code = (
        "import sys; from echoflow.params import BatchRequest; "
        "BatchRequest(sources=['a.raw'], sonar_model='ek60', output_prefix='o'); "
        "print('echopype' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"

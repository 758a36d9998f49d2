"""Real S3 protocol (moto server on loopback) through s3fs: anonymous reads, credentialed writes."""

import json

import pytest
from prefect_api import artifacts, flow_run_logs
from samples import AZFP_RAW, AZFP_XML, EK60_RAW, S3_KEYS
from util import assert_matches_direct

from echoflow.errors import AccessDenied
from echoflow.flows.batch import convert_batch
from echoflow.flows.convert import convert_raw_sonar
from echoflow.storage import read_marker


@pytest.fixture
def output_credentials(monkeypatch, s3_server):
    """Write credentials by environment (as a Kubernetes Secret would provide them)."""
    monkeypatch.setenv("ECHOFLOW_OUTPUT_STORAGE_OPTIONS", json.dumps(S3_KEYS))
    return {"client_kwargs": {"endpoint_url": s3_server, "region_name": "us-east-1"}}


def test_public_archive_to_private_bucket(
    tmp_path, public_bucket, private_bucket, s3_anon_options, s3_options, output_credentials
):
    src = f"s3://{public_bucket}/data/raw/Discovery/DY1801/EK60/*.raw"
    state = convert_batch(
        sources=[src],
        sonar_model="EK60",
        output_prefix=f"s3://{private_bucket}/DY1801",
        output_type="zarr",
        input_storage_options=s3_anon_options,
        output_storage_options=output_credentials,
        return_state=True,
    )
    assert state.is_completed(), state.message
    summary = state.result()
    [row] = summary["files"]
    assert row["status"] == "converted" and row["output"] == f"s3://{private_bucket}/DY1801/{EK60_RAW.stem}.zarr"
    assert_matches_direct(
        row["output"],
        EK60_RAW,
        "EK60",
        tmp_path,
        storage_options=s3_options,
        source_url=f"s3://{public_bucket}/data/raw/Discovery/DY1801/EK60/{EK60_RAW.name}",
    )
    assert read_marker(row["output"], s3_options)["source_url"].startswith(f"s3://{public_bucket}/")

    # Credentials appear nowhere Prefect keeps: parameters, logs, artifacts, results.
    from prefect.client.orchestration import get_client

    run_id = state.state_details.flow_run_id
    with get_client(sync_client=True) as client:
        params = client.read_flow_run(run_id).parameters
    kept = json.dumps([params, summary, flow_run_logs(run_id), [a.data for a in artifacts(run_id)]])
    assert S3_KEYS["secret"] not in kept and S3_KEYS["key"] not in kept

    again = convert_batch(
        sources=[src],
        sonar_model="EK60",
        output_prefix=f"s3://{private_bucket}/DY1801",
        output_type="zarr",
        input_storage_options=s3_anon_options,
        output_storage_options=output_credentials,
    )
    assert again["files"][0]["status"] == "skipped"


def test_azfp_with_remote_xml_to_netcdf_on_s3(
    tmp_path, public_bucket, private_bucket, s3_anon_options, s3_options, output_credentials
):
    base = f"s3://{public_bucket}/data/raw/mooring/M1/AZFP"
    out = convert_raw_sonar(
        raw_file=f"{base}/{AZFP_RAW.name}",
        sonar_model="AZFP",
        xml_path=f"{base}/{AZFP_XML.name}",
        input_storage_options=s3_anon_options,
        output_path=f"s3://{private_bucket}/azfp/",
        output_type="netcdf",
        output_storage_options=output_credentials,
    )
    assert out == f"s3://{private_bucket}/azfp/{AZFP_RAW.name}.nc"  # AZFP's file number kept: 17031001.01A.nc
    import s3fs

    local = tmp_path / "azfp.nc"
    s3fs.S3FileSystem(**s3_options).get_file(out, str(local))
    assert_matches_direct(str(local), AZFP_RAW, "AZFP", tmp_path, xml=AZFP_XML, source_url=f"{base}/{AZFP_RAW.name}")


def test_private_bucket_read_anonymously_is_refused(tmp_path, private_bucket, s3_options, s3_anon_options):
    import s3fs

    s3fs.S3FileSystem(**s3_options).put_file(str(EK60_RAW), f"{private_bucket}/raw/{EK60_RAW.name}")
    state = convert_raw_sonar(
        raw_file=f"s3://{private_bucket}/raw/{EK60_RAW.name}",
        sonar_model="EK60",
        input_storage_options=s3_anon_options,
        output_path=str(tmp_path),
        return_state=True,
    )
    assert state.is_failed()
    with pytest.raises(AccessDenied, match=r"access denied \(403\) while downloading; check credentials"):
        state.result()


def test_missing_output_bucket_fails_before_converting(tmp_path, s3_server):
    opts = {**S3_KEYS, "client_kwargs": {"endpoint_url": s3_server, "region_name": "us-east-1"}}
    state = convert_batch(
        sources=[str(EK60_RAW)],
        sonar_model="EK60",
        output_prefix="s3://no-such-bucket/x",
        output_storage_options=opts,
        return_state=True,
    )
    assert state.is_failed()
    assert "s3://no-such-bucket/x: output location does not exist or is not writable" in str(
        state.result(raise_on_failure=False)
    )

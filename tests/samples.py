"""Where the real sample files are (data/ in the repo, or ECHOFLOW_TEST_DATA)."""

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("ECHOFLOW_TEST_DATA") or REPO / "data")
EK60_RAW = DATA / "ek60" / "DY1801_EK60-D20180211-T164025.raw"
AZFP_RAW = DATA / "azfp" / "17031001.01A"
AZFP_XML = DATA / "azfp" / "17030815.XML"

# Credentials of the local S3 test server; tests check they never leak into Prefect.
S3_KEYS = {"key": "testing-key", "secret": "testing-secret-5f1c9e"}

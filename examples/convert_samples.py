"""Convert the sample recordings from Python: a plain script, no main guard needed.

    .venv/bin/python examples/convert_samples.py

Runs are recorded where the CLI records them (your configured Prefect API, else the local
API under ECHOFLOW_HOME); `echoflow server open` shows them.
"""

from pathlib import Path

from echoflow.flows.batch import convert_batch

DATA = Path(__file__).resolve().parent.parent / "data"

state = convert_batch(sources=[str(DATA / "ek60" / "*.raw")], sonar_model="EK60",
                      output_prefix="out/ek60", output_type="zarr", return_state=True)
summary = state.result(raise_on_failure=False)
print(state.name, summary["files"] if isinstance(summary, dict) else summary)

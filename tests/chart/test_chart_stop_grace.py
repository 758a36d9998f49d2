"""A stopped flow-run pod (eviction, drain, cancellation) gets its graceful stop: the
flow's grace period sits inside the pod's termination grace."""

from __future__ import annotations

import jobtemplate as jt
import pytest
from chartcases import NAMESPACE, RELEASE


def test_flow_runs_stop_within_the_pods_termination_grace(render):
    template = jt.base_job_template(render("defaults"))
    config = template["job_configuration"]
    pod = config["job_manifest"]["spec"]["template"]["spec"]
    assert config["env"]["ECHOFLOW_STOP_GRACE_SECONDS"] == "25"
    assert pod["terminationGracePeriodSeconds"] == 45


def test_a_grace_longer_than_the_pods_is_refused(helm_bin):
    with pytest.raises(jt.HelmError) as info:
        jt.render_chart(
            [],
            {"flowRuns.stopGraceSeconds": 60, "flowRuns.terminationGracePeriodSeconds": 30},
            release=RELEASE,
            namespace=NAMESPACE,
        )
    assert "stopGraceSeconds must be below" in str(info.value)

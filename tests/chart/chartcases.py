"""Value sets and names shared by the chart tests (importable: tests/chart is on sys.path)."""

# Value sets every rendering check runs on; the k8s/values-*.yaml are the documented examples.
VALUE_SETS: dict[str, dict] = {
    "defaults": {"files": [], "set": {}},
    "prefect-cloud": {"files": ["k8s/values-prefect-cloud.yaml"], "set": {}},
    "existing-server": {"files": ["k8s/values-existing-server.yaml"], "set": {}},
    "eks-irsa": {"files": ["k8s/values-eks-irsa.yaml"], "set": {}},
    "kind": {"files": ["k8s/values-kind.yaml"], "set": {"image.tag": "0.1.0-test"}},
    "postgres": {"files": [], "set": {"server.database.existingSecret": "prefect-db"}},
    "jobs-namespace": {"files": [], "set": {"flowRuns.namespace": "echoflow-jobs",
                                            "flowRuns.s3.existingSecret": "echoflow-s3"}},
}
RELEASE = "echoflow"
NAMESPACE = "sonar"
# --kube-version: the chart's kubeVersion constraint must accept both ends.
KUBE_VERSIONS = {"1.29": "1.29.0", "1.35": "1.35.0"}

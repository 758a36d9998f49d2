"""Value sets and names shared by the chart tests (importable: tests/chart is on sys.path)."""

# Value sets every rendering check runs on; the k8s/values-*.yaml are the documented examples.
VALUE_SETS: dict[str, dict] = {
    "defaults": {"files": [], "set": {}},
    "prefect-cloud": {"files": ["k8s/values-prefect-cloud.yaml"], "set": {}},
    "existing-server": {"files": ["k8s/values-existing-server.yaml"], "set": {}},
    "eks-irsa": {"files": ["k8s/values-eks-irsa.yaml"], "set": {}},
    "kind": {"files": ["k8s/values-kind.yaml"], "set": {"image.tag": "0.1.0-test"}},
    "postgres": {"files": [], "set": {"server.database.existingSecret": "prefect-db"}},
    "jobs-namespace": {
        "files": [],
        "set": {
            "flowRuns.namespace": "echoflow-jobs",
            "flowRuns.s3.existingSecret": "echoflow-s3",
            "networkPolicy.flowRunEgress.enabled": True,
            "networkPolicy.flowRunEgress.to[0].ipBlock.cidr": "10.20.0.0/16",
        },
    },
    # Auth and NetworkPolicy off: the chart's server open to whoever reaches it.
    "open": {"files": [], "set": {"server.auth.enabled": False, "networkPolicy.enabled": False}},
    # PostgreSQL with two rolling replicas, PDBs, an Ingress with TLS, the ingress controller
    # and a VPN range admitted, the auth string from an existing Secret, pod extras.
    "postgres-ha": {
        "files": [],
        "set": {
            "server.database.existingSecret": "prefect-db",
            "server.replicas": 2,
            "server.podDisruptionBudget.enabled": True,
            "worker.podDisruptionBudget.enabled": True,
            "server.ingress.enabled": True,
            "server.ingress.host": "echoflow.example.org",
            "server.ingress.className": "nginx",
            "server.ingress.tlsSecret": "echoflow-tls",
            "server.uiApiUrl": "https://echoflow.example.org/api",
            "networkPolicy.extraFrom[0].namespaceSelector.matchLabels.kubernetes\\.io/metadata\\.name": "ingress-nginx",
            "networkPolicy.allowedCIDRs[0]": "10.8.0.0/16",
            "server.auth.existingSecret": "prefect-auth",
            "server.service.annotations.example\\.org/team": "acoustics",
            "server.podLabels.team": "acoustics",
            "server.priorityClassName": "echoflow-high",
            "worker.extraEnvFrom[0].configMapRef.name": "proxy-settings",
            "server.topologySpreadConstraints[0].maxSkew": 1,
            "server.topologySpreadConstraints[0].topologyKey": "topology.kubernetes.io/zone",
            "server.topologySpreadConstraints[0].whenUnsatisfiable": "ScheduleAnyway",
            "server.topologySpreadConstraints[0].labelSelector.matchLabels.app\\.kubernetes\\.io/component": "server",
            "deployments.nodeSelector.pool": "system",
            "tests.tolerations[0].operator": "Exists",
            "flowRuns.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0].key": "pool",
            "flowRuns.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0].operator": "In",
            "flowRuns.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0].values[0]": "conversions",
            "flowRuns.priorityClassName": "echoflow-batch",
        },
    },
    # An existing self-hosted API with basic auth, flow runs in their own namespace.
    "external-auth-jobs-namespace": {
        "files": ["k8s/values-existing-server.yaml"],
        "set": {"flowRuns.namespace": "echoflow-jobs"},
    },
}
RELEASE = "echoflow"
NAMESPACE = "sonar"
# --kube-version: the chart's kubeVersion constraint must accept both ends.
KUBE_VERSIONS = {"1.29": "1.29.0", "1.35": "1.35.0"}

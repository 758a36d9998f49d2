{{/*
The work pool's base job template, in prefect-kubernetes' format:
  job_configuration: what KubernetesWorkerJobConfiguration is built from; "{{ var }}"
                     strings are Prefect placeholders filled from the variables.
  variables:         JSON schema of the variables a deployment or a flow run may set
                     (job_variables); each default comes from .Values.flowRuns.
It follows KubernetesWorker.get_default_base_job_template() (prefect-kubernetes 0.8),
minus cluster_config (Jobs always run in this cluster), plus node_selector,
tolerations, active_deadline_seconds and env_from, and with the pod hardened
(securityContext, no API token, emptyDirs for /tmp, HOME and the scratch dir).

Prefect's validator needs spec.template.spec.parallelism/completions (it checks the
manifest against its own skeleton); the API server drops those two pod-spec fields.
Rendered as YAML here; the ConfigMap stores it as JSON.
*/}}
{{- define "echoflow.baseJobTemplate.yaml" -}}
{{- $v := .Values.flowRuns -}}
{{- $ph := dict -}}
{{- range $k := list "command" "env" "labels" "name" "annotations" "namespace" "image" "image_pull_policy" "service_account_name" "backoff_limit" "finished_job_ttl" "active_deadline_seconds" "node_selector" "tolerations" "env_from" "cpu_request" "cpu_limit" "memory_request" "memory_limit" "job_watch_timeout_seconds" "pod_watch_timeout_seconds" "stream_output" -}}
{{- $_ := set $ph $k (include "echoflow.ph" $k) -}}
{{- end -}}
{{- $scratch := $v.scratch.mountPath -}}
job_configuration:
  command: {{ $ph.command | quote }}
  env: {{ $ph.env | quote }}
  labels: {{ $ph.labels | quote }}
  name: {{ $ph.name | quote }}
  annotations: {{ $ph.annotations | quote }}
  namespace: {{ $ph.namespace | quote }}
  job_watch_timeout_seconds: {{ $ph.job_watch_timeout_seconds | quote }}
  pod_watch_timeout_seconds: {{ $ph.pod_watch_timeout_seconds | quote }}
  stream_output: {{ $ph.stream_output | quote }}
  job_manifest:
    apiVersion: batch/v1
    kind: Job
    metadata:
      generateName: {{ printf "%s-" $ph.name | quote }}
      namespace: {{ $ph.namespace | quote }}
      labels: {{ $ph.labels | quote }}
      annotations: {{ $ph.annotations | quote }}
    spec:
      backoffLimit: {{ $ph.backoff_limit | quote }}
      ttlSecondsAfterFinished: {{ $ph.finished_job_ttl | quote }}
      activeDeadlineSeconds: {{ $ph.active_deadline_seconds | quote }}
      parallelism: 1
      completions: 1
      template:
        spec:
          parallelism: 1
          completions: 1
          restartPolicy: Never
          serviceAccountName: {{ $ph.service_account_name | quote }}
          automountServiceAccountToken: false
          {{- with .Values.imagePullSecrets }}
          imagePullSecrets:
            {{- toYaml . | nindent 12 }}
          {{- end }}
          securityContext:
            {{- toYaml .Values.podSecurityContext | nindent 12 }}
          nodeSelector: {{ $ph.node_selector | quote }}
          tolerations: {{ $ph.tolerations | quote }}
          containers:
            - name: prefect-job
              image: {{ $ph.image | quote }}
              imagePullPolicy: {{ $ph.image_pull_policy | quote }}
              args: {{ $ph.command | quote }}
              env: {{ $ph.env | quote }}
              envFrom: {{ $ph.env_from | quote }}
              resources:
                requests:
                  cpu: {{ $ph.cpu_request | quote }}
                  memory: {{ $ph.memory_request | quote }}
                limits:
                  cpu: {{ $ph.cpu_limit | quote }}
                  memory: {{ $ph.memory_limit | quote }}
              securityContext:
                {{- toYaml .Values.containerSecurityContext | nindent 16 }}
              volumeMounts:
                - name: tmp
                  mountPath: /tmp
                - name: home
                  mountPath: {{ .Values.homeDir | quote }}
                - name: scratch
                  mountPath: {{ $scratch | quote }}
          volumes:
            - name: tmp
              emptyDir: {}
            - name: home
              emptyDir: {}
            - name: scratch
              emptyDir:
                {{- with $v.scratch.sizeLimit }}
                sizeLimit: {{ . | toString | quote }}
                {{- end }}
variables:
  description: echoflow flow-run Jobs (defaults from the echoflow Helm chart's values).
  type: object
  properties:
    name:
      title: Name
      description: Name given to the Jobs (generateName prefix); defaults to the flow run's name.
      anyOf: [{type: string}, {type: "null"}]
      default: null
    command:
      title: Command
      description: Command of the flow-run container; leave empty for the worker's `prefect flow-run execute`.
      anyOf: [{type: string}, {type: "null"}]
      default: null
    env:
      title: Environment Variables
      description: Environment variables of the flow-run container (merged with a deployment's env).
      type: object
      additionalProperties:
        anyOf: [{type: string}, {type: "null"}]
      default:
        ECHOFLOW_HOME: {{ printf "%s/.echoflow" .Values.homeDir | quote }}
        ECHOFLOW_SCRATCH: {{ $scratch | quote }}
        HOME: {{ .Values.homeDir | quote }}
        PREFECT_HOME: {{ printf "%s/.prefect" .Values.homeDir | quote }}
        MPLCONFIGDIR: "/tmp/matplotlib"
        NUMBA_CACHE_DIR: "/tmp/numba"
        {{- range $name, $value := $v.env }}
        {{ $name }}: {{ $value | toString | quote }}
        {{- end }}
    env_from:
      title: Environment From
      description: envFrom sources of the flow-run container (the S3 credentials Secret).
      type: array
      items: {type: object}
      default:
        {{- with $v.s3.existingSecret }}
        - secretRef:
            name: {{ . | quote }}
        {{- else }} []
        {{- end }}
    labels:
      title: Labels
      description: Labels of the Jobs and their pods (Prefect adds prefect.io/* labels).
      type: object
      additionalProperties: {type: string}
      default:
        app.kubernetes.io/instance: {{ .Release.Name | quote }}
        app.kubernetes.io/component: flow-run
        app.kubernetes.io/part-of: echoflow
        {{- range $name, $value := $v.labels }}
        {{ $name | quote }}: {{ $value | toString | quote }}
        {{- end }}
    annotations:
      title: Annotations
      description: Annotations of the Jobs and their pods.
      type: object
      additionalProperties: {type: string}
      default: {{ $v.annotations | default dict | toJson }}
    namespace:
      title: Namespace
      description: Namespace of the Jobs (the worker's Role is granted there only).
      type: string
      default: {{ include "echoflow.flowRunNamespace" . | quote }}
    image:
      title: Image
      description: Image of the flow-run container.
      anyOf: [{type: string}, {type: "null"}]
      default: {{ include "echoflow.flowRunImage" . | quote }}
    image_pull_policy:
      title: Image Pull Policy
      description: Image pull policy of the flow-run container.
      type: string
      enum: [IfNotPresent, Always, Never]
      default: {{ include "echoflow.flowRunImagePullPolicy" . | quote }}
    service_account_name:
      title: Service Account Name
      description: ServiceAccount of the flow-run pods (no Kubernetes API rights; cloud identity by annotation).
      anyOf: [{type: string}, {type: "null"}]
      default: {{ include "echoflow.flowRunServiceAccountName" . | quote }}
    backoff_limit:
      title: Backoff Limit
      description: Pod retries by Kubernetes. 0 makes Prefect reschedule a run whose pod was evicted.
      type: integer
      minimum: 0
      default: {{ $v.backoffLimit | int }}
    finished_job_ttl:
      title: Finished Job TTL
      description: Seconds a finished Job is kept (ttlSecondsAfterFinished); null keeps it.
      anyOf: [{type: integer, minimum: 0}, {type: "null"}]
      default: {{ if kindIs "invalid" $v.ttlSecondsAfterFinished }}null{{ else }}{{ $v.ttlSecondsAfterFinished | int }}{{ end }}
    active_deadline_seconds:
      title: Active Deadline Seconds
      description: Hard limit on a Job's run time (activeDeadlineSeconds); null for none.
      anyOf: [{type: integer, minimum: 1}, {type: "null"}]
      default: {{ if kindIs "invalid" $v.activeDeadlineSeconds }}null{{ else }}{{ $v.activeDeadlineSeconds | int }}{{ end }}
    node_selector:
      title: Node Selector
      description: nodeSelector of the flow-run pods.
      type: object
      additionalProperties: {type: string}
      default: {{ $v.nodeSelector | default dict | toJson }}
    tolerations:
      title: Tolerations
      description: Tolerations of the flow-run pods.
      type: array
      items: {type: object}
      default: {{ $v.tolerations | default list | toJson }}
    {{- range $r := list (list "cpu_request" "CPU Request" "requests" "cpu") (list "cpu_limit" "CPU Limit" "limits" "cpu") (list "memory_request" "Memory Request" "requests" "memory") (list "memory_limit" "Memory Limit" "limits" "memory") }}
    {{- $q := "" }}
    {{- with get $v.resources (index $r 2) }}{{ $q = get . (index $r 3) }}{{ end }}
    {{ index $r 0 }}:
      title: {{ index $r 1 | quote }}
      description: {{ printf "Kubernetes quantity for resources.%s.%s of the flow-run container; null leaves it unset." (index $r 2) (index $r 3) | quote }}
      anyOf: [{type: string, pattern: {{ include "echoflow.quantityPattern" . | quote }}}, {type: number, minimum: 0}, {type: "null"}]
      default: {{ if or (kindIs "invalid" $q) (eq (toString $q) "") }}null{{ else }}{{ $q | toString | quote }}{{ end }}
    {{- end }}
    job_watch_timeout_seconds:
      title: Job Watch Timeout Seconds
      description: Seconds to wait for each event of a Job; null waits indefinitely.
      anyOf: [{type: integer}, {type: "null"}]
      default: null
    pod_watch_timeout_seconds:
      title: Pod Watch Timeout Seconds
      description: Seconds to wait for the Job's pod to be created.
      type: integer
      default: {{ $v.podWatchTimeoutSeconds | int }}
    stream_output:
      title: Stream Output
      description: Stream the Job's output to the worker's log.
      type: boolean
      default: true
{{- end -}}

{{/* The base job template as JSON (fails the render if the YAML above is broken). */}}
{{- define "echoflow.baseJobTemplate.json" -}}
{{- $t := include "echoflow.baseJobTemplate.yaml" . | fromYaml -}}
{{- if hasKey $t "Error" -}}
{{- fail (printf "base job template does not render to valid YAML: %s" (get $t "Error")) -}}
{{- end -}}
{{- toPrettyJson $t -}}
{{- end -}}

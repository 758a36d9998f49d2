{{/*
The work pool's base job template, in prefect-kubernetes' format:
  job_configuration: what KubernetesWorkerJobConfiguration is built from; "{{ var }}"
                     strings are Prefect placeholders filled from the variables.
  variables:         JSON schema of the variables a deployment or a flow run may set
                     (job_variables). The server validates every deployment's and run's
                     variables against it (prefect.server.api.validation), so it is the lock.

Locked (literal values from the chart, not variables): namespace, ServiceAccount, command
(prefect-kubernetes fills in `prefect flow-run execute`), envFrom (the S3 Secret), the
chart's env, pull policy, annotations, scheduling, security contexts and volumes.
Tunable: cpu/memory/ephemeral-storage (quantities; maxima enforced by the LimitRange),
extra env and labels (reserved names refused), the image among an allowlist, backoff,
TTL, deadline (never above the chart's), watch timeouts, the Job name prefix.
No "type" next to a default where null must stay out: Prefect's validator adds null to
any typed property that has a default (allow_none_with_default).
Rendered as YAML here; the ConfigMap stores it as JSON.
*/}}
{{- define "echoflow.baseJobTemplate.yaml" -}}
{{- $v := .Values.flowRuns -}}
{{- $ph := dict -}}
{{- range $k := list "env" "labels" "name" "image" "backoff_limit" "finished_job_ttl" "active_deadline_seconds" "job_watch_timeout_seconds" "pod_watch_timeout_seconds" "stream_output" "cpu_request" "cpu_limit" "memory_request" "memory_limit" "ephemeral_storage_request" "ephemeral_storage_limit" -}}
{{- $_ := set $ph $k (include "echoflow.ph" $k) -}}
{{- end -}}
{{- if ge (int $v.stopGraceSeconds) (int $v.terminationGracePeriodSeconds) -}}
{{- fail "flowRuns.stopGraceSeconds must be below flowRuns.terminationGracePeriodSeconds (the pod is killed when that ends)" -}}
{{- end -}}
{{- $scratch := $v.scratch.mountPath -}}
{{- $ns := include "echoflow.flowRunNamespace" . -}}
{{- $image := include "echoflow.image" (dict "ctx" . "image" $v.image) -}}
{{- $labels := dict "app.kubernetes.io/name" (include "echoflow.name" .) "app.kubernetes.io/instance" .Release.Name "app.kubernetes.io/component" "flow-run" "app.kubernetes.io/part-of" "echoflow" -}}
{{- $labels = merge (deepCopy (default dict $v.labels)) $labels -}}
job_configuration:
  # The chart's env; a run's `env` variable is merged over it (reserved names refused).
  env:
    ECHOFLOW_HOME: {{ printf "%s/.echoflow" .Values.homeDir | quote }}
    ECHOFLOW_SCRATCH: {{ $scratch | quote }}
    ECHOFLOW_STOP_GRACE_SECONDS: {{ $v.stopGraceSeconds | toString | quote }}
    HOME: {{ .Values.homeDir | quote }}
    PREFECT_HOME: {{ printf "%s/.prefect" .Values.homeDir | quote }}
    MPLCONFIGDIR: "/tmp/matplotlib"
    NUMBA_CACHE_DIR: "/tmp/numba"
    {{- range $name, $value := $v.env }}
    {{ $name }}: {{ $value | toString | quote }}
    {{- end }}
  labels: {{ $ph.labels | quote }}
  annotations: {{ $v.annotations | default dict | toJson }}
  name: {{ $ph.name | quote }}
  namespace: {{ $ns | quote }}
  job_watch_timeout_seconds: {{ $ph.job_watch_timeout_seconds | quote }}
  pod_watch_timeout_seconds: {{ $ph.pod_watch_timeout_seconds | quote }}
  stream_output: {{ $ph.stream_output | quote }}
  job_manifest:
    apiVersion: batch/v1
    kind: Job
    metadata:
      generateName: {{ printf "%s-" $ph.name | quote }}
      namespace: {{ $ns | quote }}
      labels:
        {{- toYaml $labels | nindent 8 }}
      annotations: {{ $v.annotations | default dict | toJson }}
    spec:
      backoffLimit: {{ $ph.backoff_limit | quote }}
      ttlSecondsAfterFinished: {{ $ph.finished_job_ttl | quote }}
      activeDeadlineSeconds: {{ $ph.active_deadline_seconds | quote }}
      parallelism: 1
      completions: 1
      template:
        metadata:
          # On the pods too (prefect-kubernetes only copies its own and the variable's there):
          # the server's NetworkPolicy admits flow-run pods by these.
          labels:
            {{- toYaml $labels | nindent 12 }}
        spec:
          restartPolicy: Never
          terminationGracePeriodSeconds: {{ $v.terminationGracePeriodSeconds }}
          serviceAccountName: {{ include "echoflow.flowRunServiceAccountName" . | quote }}
          automountServiceAccountToken: false
          {{- with .Values.imagePullSecrets }}
          imagePullSecrets:
            {{- toYaml . | nindent 12 }}
          {{- end }}
          securityContext:
            {{- toYaml .Values.podSecurityContext | nindent 12 }}
          {{- include "echoflow.podScheduling" $v | nindent 10 }}
          containers:
            - name: prefect-job
              image: {{ $ph.image | quote }}
              imagePullPolicy: {{ include "echoflow.imagePullPolicy" (dict "ctx" . "image" $v.image) | quote }}
              {{- with $v.s3.existingSecret }}
              envFrom:
                - secretRef:
                    name: {{ . | quote }}
              {{- end }}
              resources:
                requests:
                  cpu: {{ $ph.cpu_request | quote }}
                  memory: {{ $ph.memory_request | quote }}
                  ephemeral-storage: {{ $ph.ephemeral_storage_request | quote }}
                limits:
                  cpu: {{ $ph.cpu_limit | quote }}
                  memory: {{ $ph.memory_limit | quote }}
                  ephemeral-storage: {{ $ph.ephemeral_storage_limit | quote }}
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
  description: >-
    echoflow flow-run Jobs (defaults from the echoflow Helm chart's values). Image,
    namespace, ServiceAccount, command and Secrets are fixed by the chart.
  type: object
  additionalProperties: false
  properties:
    name:
      title: Name
      description: Prefix of the Jobs' names; defaults to the flow run's name.
      anyOf: [{type: string, pattern: "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", maxLength: 50}, {type: "null"}]
      default: null
    image:
      title: Image
      {{- $allowed := uniq (prepend (default list $v.image.allowed) $image) }}
      {{- with $v.image.allowedPrefix }}
      description: {{ printf "Image of the flow-run container: one of the chart's, or any image under %s." . | quote }}
      anyOf:
        - enum:
            {{- toYaml $allowed | nindent 12 }}
        - {type: string, pattern: {{ printf "^%s[^\\s]+$" (regexQuoteMeta .) | quote }}}
      {{- else }}
      description: Image of the flow-run container, one of the chart's (flowRuns.image, flowRuns.image.allowed).
      enum:
        {{- toYaml $allowed | nindent 8 }}
      {{- end }}
      default: {{ $image | quote }}
    env:
      title: Environment Variables
      description: >-
        Extra environment variables of the flow-run container, merged over the chart's.
        Names of credentials and of Prefect's connection (PREFECT_API_*, AWS_*, proxies, ...) are refused.
      type: object
      propertyNames:
        pattern: "^[A-Z_][A-Z0-9_]*$"
        not:
          pattern: {{ include "echoflow.reservedEnvPattern" . | quote }}
      additionalProperties:
        anyOf: [{type: string}, {type: "null"}]
      default: {}
    labels:
      title: Labels
      description: Extra labels of the Jobs and their pods (app.kubernetes.io/*, prefect.io/* and helm.sh/* are the chart's).
      type: object
      propertyNames:
        pattern: "^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
        not:
          pattern: "^(app\\.kubernetes\\.io|prefect\\.io|helm\\.sh|[^/]*kubernetes\\.io|[^/]*k8s\\.io)/"
      additionalProperties: {type: string, maxLength: 63}
      default: {}
    backoff_limit:
      title: Backoff Limit
      description: Pod retries by Kubernetes. 0 makes Prefect reschedule a run whose pod was evicted.
      anyOf: [{type: integer, minimum: 0, maximum: {{ max 6 ($v.backoffLimit | int) }}}]
      default: {{ $v.backoffLimit | int }}
    finished_job_ttl:
      title: Finished Job TTL
      description: Seconds a finished Job is kept (ttlSecondsAfterFinished); null keeps it.
      anyOf: [{type: integer, minimum: 0}, {type: "null"}]
      default: {{ if kindIs "invalid" $v.ttlSecondsAfterFinished }}null{{ else }}{{ $v.ttlSecondsAfterFinished | int }}{{ end }}
    active_deadline_seconds:
      title: Active Deadline Seconds
      {{- if kindIs "invalid" $v.activeDeadlineSeconds }}
      description: Hard limit on a Job's run time (activeDeadlineSeconds); null for none.
      anyOf: [{type: integer, minimum: 1}, {type: "null"}]
      default: null
      {{- else }}
      description: Hard limit on a Job's run time (activeDeadlineSeconds), at most the chart's.
      anyOf: [{type: integer, minimum: 1, maximum: {{ $v.activeDeadlineSeconds | int }}}]
      default: {{ $v.activeDeadlineSeconds | int }}
      {{- end }}
    {{- range $r := list (list "cpu_request" "CPU Request" "requests" "cpu") (list "cpu_limit" "CPU Limit" "limits" "cpu") (list "memory_request" "Memory Request" "requests" "memory") (list "memory_limit" "Memory Limit" "limits" "memory") (list "ephemeral_storage_request" "Ephemeral Storage Request" "requests" "ephemeral-storage") (list "ephemeral_storage_limit" "Ephemeral Storage Limit" "limits" "ephemeral-storage") }}
    {{- $q := "" }}
    {{- with get $v.resources (index $r 2) }}{{ $q = get . (index $r 3) }}{{ end }}
    {{ index $r 0 }}:
      title: {{ index $r 1 | quote }}
      description: {{ printf "Kubernetes quantity for resources.%s.%s of the flow-run container (at most the LimitRange's maximum); null leaves it unset." (index $r 2) (index $r 3) | quote }}
      anyOf: [{type: string, pattern: {{ include "echoflow.quantityPattern" . | quote }}}, {type: number, minimum: 0}, {type: "null"}]
      default: {{ if or (kindIs "invalid" $q) (eq (toString $q) "") }}null{{ else }}{{ $q | toString | quote }}{{ end }}
    {{- end }}
    job_watch_timeout_seconds:
      title: Job Watch Timeout Seconds
      description: Seconds to wait for each event of a Job; null waits indefinitely.
      anyOf: [{type: integer, minimum: 1}, {type: "null"}]
      default: null
    pod_watch_timeout_seconds:
      title: Pod Watch Timeout Seconds
      description: Seconds to wait for the Job's pod to be created.
      anyOf: [{type: integer, minimum: 1, maximum: 3600}]
      default: {{ $v.podWatchTimeoutSeconds | int }}
    stream_output:
      title: Stream Output
      description: Stream the Job's output to the worker's log.
      anyOf: [{type: boolean}]
      default: true
{{- end -}}

{{/*
Environment variable names a run may not set: Prefect's connection and credentials,
cloud credentials and endpoints, proxies, loader and interpreter hooks.
*/}}
{{- define "echoflow.reservedEnvPattern" -}}
^(PREFECT_(API|SERVER|INTEGRATIONS|CLIENT|HOME|PROFILES)|PREFECT__|AWS_|FSSPEC_|GOOGLE_|AZURE_|KUBERNETES_|LD_|PYTHON|SSL_|REQUESTS_CA|CURL_CA|HOME$|PATH$|(HTTPS?|ALL|NO)_PROXY$)
{{- end -}}

{{/* The base job template as JSON (fails the render if the YAML above is broken). */}}
{{- define "echoflow.baseJobTemplate.json" -}}
{{- $t := include "echoflow.baseJobTemplate.yaml" . | fromYaml -}}
{{- if hasKey $t "Error" -}}
{{- fail (printf "base job template does not render to valid YAML: %s" (get $t "Error")) -}}
{{- end -}}
{{- toPrettyJson $t -}}
{{- end -}}

{{/*
Chart name, truncated to 63 characters (a DNS label).
*/}}
{{- define "echoflow.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
Full name: <release>-<chart> unless the release name already contains the chart name.
Objects append a suffix (-worker, -server, ...), so keep room for it.
*/}}
{{- define "echoflow.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 45 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 45 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 45 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/*
chart label value: <name>-<version>.
*/}}
{{- define "echoflow.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
Selector labels of one component. Call with (dict "ctx" $ "component" "worker").
*/}}
{{- define "echoflow.selectorLabels" -}}
app.kubernetes.io/name: {{ include "echoflow.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/*
Standard labels carried by every object. Call with (dict "ctx" $ "component" "worker").
*/}}
{{- define "echoflow.labels" -}}
helm.sh/chart: {{ include "echoflow.chart" .ctx }}
{{ include "echoflow.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/part-of: echoflow
{{- with .ctx.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Object names. */}}
{{- define "echoflow.workerName" -}}{{ include "echoflow.fullname" . }}-worker{{- end -}}
{{- define "echoflow.serverName" -}}{{ include "echoflow.fullname" . }}-server{{- end -}}
{{- define "echoflow.clientServiceAccountName" -}}{{ include "echoflow.fullname" . }}-client{{- end -}}
{{- define "echoflow.baseJobTemplateName" -}}{{ include "echoflow.fullname" . }}-base-job-template{{- end -}}
{{- define "echoflow.authSecretName" -}}{{ include "echoflow.fullname" . }}-api-auth{{- end -}}
{{- define "echoflow.flowRunsName" -}}{{ include "echoflow.fullname" . }}-flow-runs{{- end -}}

{{- define "echoflow.workerServiceAccountName" -}}
{{- default (include "echoflow.workerName" .) .Values.worker.serviceAccount.name -}}
{{- end -}}

{{/* The flow-run ServiceAccount; an existing one (create=false) must be named. */}}
{{- define "echoflow.flowRunServiceAccountName" -}}
{{- if .Values.flowRuns.serviceAccount.create -}}
{{- default (printf "%s-flow-run" (include "echoflow.fullname" .)) .Values.flowRuns.serviceAccount.name -}}
{{- else -}}
{{- required "flowRuns.serviceAccount.name is required when flowRuns.serviceAccount.create is false (the Jobs would name a missing ServiceAccount)" .Values.flowRuns.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* Namespace of the flow-run Jobs. */}}
{{- define "echoflow.flowRunNamespace" -}}
{{- default .Release.Namespace .Values.flowRuns.namespace -}}
{{- end -}}

{{/*
The one image helper: <repository>:<tag> of a component, its empty fields falling back
to .Values.image and the tag to the chart's appVersion.
Call with (dict "ctx" $ "image" .Values.server.image); "image" may be omitted.
*/}}
{{- define "echoflow.image" -}}
{{- $own := default dict .image -}}
{{- $repo := default .ctx.Values.image.repository $own.repository -}}
{{- $tag := default (default .ctx.Chart.AppVersion .ctx.Values.image.tag) $own.tag | toString -}}
{{- printf "%s:%s" $repo $tag -}}
{{- end -}}

{{- define "echoflow.imagePullPolicy" -}}
{{- $own := default dict .image -}}
{{- default .ctx.Values.image.pullPolicy $own.pullPolicy -}}
{{- end -}}

{{/*
Prefect API URL: the in-chart server's Service, or prefect.apiUrl.
*/}}
{{- define "echoflow.apiUrl" -}}
{{- if and .Values.server.enabled .Values.prefect.apiUrl -}}
{{- fail "prefect.apiUrl points at an existing Prefect API: set server.enabled=false with it" -}}
{{- end -}}
{{- if .Values.server.enabled -}}
{{- printf "http://%s.%s.svc.%s:%v/api" (include "echoflow.serverName" .) .Release.Namespace .Values.clusterDomain .Values.server.service.port -}}
{{- else -}}
{{- required "prefect.apiUrl is required when server.enabled is false" .Values.prefect.apiUrl -}}
{{- end -}}
{{- end -}}

{{/*
Secret (name and key) holding the API's basic-auth string, or nothing: the in-chart
server with auth, else prefect.authString for an existing self-hosted API.
*/}}
{{- define "echoflow.authSecret" -}}
{{- if .Values.server.enabled -}}
{{- if .Values.server.auth.enabled -}}
{{- dict "name" (default (include "echoflow.authSecretName" .) .Values.server.auth.existingSecret) "key" .Values.server.auth.key | toJson -}}
{{- end -}}
{{- else if .Values.prefect.authString.existingSecret -}}
{{- dict "name" .Values.prefect.authString.existingSecret "key" .Values.prefect.authString.key | toJson -}}
{{- end -}}
{{- end -}}

{{/*
Environment of every Prefect client in the chart (worker, hook, test, init containers).
Credentials only by secretKeyRef.
*/}}
{{- define "echoflow.prefectClientEnv" -}}
- name: PREFECT_API_URL
  value: {{ include "echoflow.apiUrl" . | quote }}
{{- with .Values.prefect.apiKey.existingSecret }}
- name: PREFECT_API_KEY
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: {{ $.Values.prefect.apiKey.key }}
{{- end }}
{{- with include "echoflow.authSecret" . }}
{{- $auth := fromJson . }}
- name: PREFECT_API_AUTH_STRING
  valueFrom:
    secretKeyRef:
      name: {{ $auth.name }}
      key: {{ $auth.key }}
{{- end }}
- name: HOME
  value: {{ .Values.homeDir | quote }}
- name: PREFECT_HOME
  value: {{ printf "%s/.prefect" .Values.homeDir | quote }}
{{- end -}}

{{/*
Scheduling and pod extras of a component. Call with the component's values
(nodeSelector, tolerations, affinity, topologySpreadConstraints, priorityClassName).
*/}}
{{- define "echoflow.podScheduling" -}}
{{- with .priorityClassName }}
priorityClassName: {{ . | quote }}
{{- end }}
{{- with .nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .topologySpreadConstraints }}
topologySpreadConstraints:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/*
Writable emptyDirs for a read-only root filesystem: /tmp and HOME.
*/}}
{{- define "echoflow.writableVolumes" -}}
- name: tmp
  emptyDir: {}
- name: home
  emptyDir: {}
{{- end -}}

{{- define "echoflow.writableVolumeMounts" -}}
- name: tmp
  mountPath: /tmp
- name: home
  mountPath: {{ .Values.homeDir }}
{{- end -}}

{{/*
Resources block: quantities rendered as strings whatever their YAML type.
*/}}
{{- define "echoflow.resources" -}}
{{- range $kind := list "requests" "limits" }}
{{- with (get $ $kind) }}
{{ $kind }}:
{{- range $name, $q := . }}
{{- if not (kindIs "invalid" $q) }}
  {{ $name }}: {{ $q | toString | quote }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- end -}}

{{/*
Init container that waits for the Prefect API (`echoflow cluster wait-for-api`, in the image).
Call with (dict "ctx" $ "timeout" N "resources" R).
*/}}
{{- define "echoflow.waitForApiContainer" -}}
- name: wait-for-api
  image: {{ include "echoflow.image" (dict "ctx" .ctx) | quote }}
  imagePullPolicy: {{ include "echoflow.imagePullPolicy" (dict "ctx" .ctx) }}
  command: ["echoflow", "cluster", "wait-for-api", "--timeout", {{ .timeout | toString | quote }}]
  env:
    {{- include "echoflow.prefectClientEnv" .ctx | nindent 4 }}
  securityContext:
    {{- toYaml .ctx.Values.containerSecurityContext | nindent 4 }}
  resources:
    {{- include "echoflow.resources" .resources | trim | nindent 4 }}
  volumeMounts:
    {{- include "echoflow.writableVolumeMounts" .ctx | nindent 4 }}
{{- end -}}

{{/* Prefect template placeholder: {{ name }} as Prefect's worker expects it. */}}
{{- define "echoflow.ph" -}}
{{- printf "{{ %s }}" . -}}
{{- end -}}

{{/*
A Kubernetes resource quantity without sign: 2, 0.5, 500m, 16Gi, 1e3.
values.schema.json carries the same pattern.
*/}}
{{- define "echoflow.quantityPattern" -}}
^\+?([0-9]+(\.[0-9]*)?|\.[0-9]+)([KMGTPE]i|[numkMGTPE]|[eE][+-]?[0-9]+)?$
{{- end -}}

{{/*
ECHOFLOW_WATCH: the `watch-prefix` deployment's parameters and schedule, as JSON, for
`echoflow deploy` (the deployments hook) and the install check. Rendered once watch.source
is set: watch.enabled schedules it; false registers it without a schedule (run by hand,
or an earlier schedule removed). watch.resources become the watch run's job variables
(cpu_request, memory_limit, ...): its pod lists and waits, its children convert.
*/}}
{{- define "echoflow.watchEnv" -}}
{{- with .Values.watch }}
{{- if .source }}
{{- $settings := dict "enabled" false }}
{{- if .enabled }}
{{- $params := dict "source" .source "sonar_model" .sonarModel "output_prefix" .outputPrefix "output_type" .outputType "settle_seconds" .settleSeconds "files_per_job" .filesPerJob "batch_deployment" (printf "convert-batch/%s" $.Values.deployments.name) }}
{{- if .xmlPath }}{{ $_ := set $params "xml_path" .xmlPath }}{{ end }}
{{- if .readySuffix }}{{ $_ := set $params "ready_suffix" .readySuffix }}{{ end }}
{{- $jobVariables := dict }}
{{- range $kind, $values := (.resources | default dict) }}
{{- range $name, $quantity := $values }}
{{- if not (kindIs "invalid" $quantity) }}
{{- $_ := set $jobVariables (printf "%s_%s" (replace "-" "_" $name) (trimSuffix "s" $kind)) $quantity }}
{{- end }}
{{- end }}
{{- end }}
{{- $settings = dict "parameters" $params "timezone" .timezone "job_variables" $jobVariables }}
{{- if .cron }}{{ $_ := set $settings "cron" .cron }}{{ else }}{{ $_ := set $settings "interval" .interval }}{{ end }}
{{- end -}}
- name: ECHOFLOW_WATCH
  value: {{ toJson $settings | quote }}
{{- end }}
{{- end }}
{{- end -}}

{{/*
The flows `echoflow deploy` registers (echoflow.deploy.FLOWS, in order); each becomes the
deployment <flow>/<deployments.name>; watch-prefix is added only with watch settings
(_watch.tpl), as deploy does. tests/chart checks this list, the chart README and the
top-level README against FLOWS; `helm test` reads FLOWS in the image itself.
*/}}
{{- define "echoflow.flows" -}}
convert-raw-sonar convert-batch convert-cruise run-recipe
{{- end -}}

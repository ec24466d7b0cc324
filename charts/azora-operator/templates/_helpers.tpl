{{- define "azora.labels" -}}
app.kubernetes.io/name: azora-operator
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}
{{- define "azora.selector" -}}
app.kubernetes.io/name: azora-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

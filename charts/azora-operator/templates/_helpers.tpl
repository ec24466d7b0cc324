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
{{- /*
The PodDisruptionBudget API: what the cluster serves (helm install/upgrade, `helm template --dry-run=server`
see the real discovery), else by the Kubernetes version (client-only `helm template`: --kube-version).
*/ -}}
{{- define "azora.pdbApiVersion" -}}
{{- if .Capabilities.APIVersions.Has "policy/v1/PodDisruptionBudget" -}}
policy/v1
{{- else if .Capabilities.APIVersions.Has "policy/v1beta1/PodDisruptionBudget" -}}
policy/v1beta1
{{- else if semverCompare ">=1.21-0" .Capabilities.KubeVersion.Version -}}
policy/v1
{{- else -}}
policy/v1beta1
{{- end -}}
{{- end -}}

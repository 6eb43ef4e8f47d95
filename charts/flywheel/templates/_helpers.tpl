{{/* The release's name for every object, at most 63 characters. */}}
{{- define "flywheel.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "flywheel.selectorLabels" -}}
app.kubernetes.io/name: flywheel-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "flywheel.labels" -}}
{{ include "flywheel.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "flywheel.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{/* The rules the operator needs, exact verbs per resource, nothing "*". */}}
{{- define "flywheel.rules" -}}
# The four kinds: watched, their status and kopf's annotations/finalizer patched.
- apiGroups: [mlops.flywheel.dev]
  resources: [datasets, trainingruns, modelversions, inferenceservices]
  verbs: [get, list, watch, patch]
- apiGroups: [mlops.flywheel.dev]
  resources: [datasets/status, trainingruns/status, modelversions/status, inferenceservices/status]
  verbs: [get, patch]
# A TrainingRun creates its ModelVersion; a drift detection creates a TrainingRun.
- apiGroups: [mlops.flywheel.dev]
  resources: [trainingruns, modelversions]
  verbs: [create]
# Children carry blockOwnerDeletion owner references to these.
- apiGroups: [mlops.flywheel.dev]
  resources: [datasets/finalizers, trainingruns/finalizers, inferenceservices/finalizers]
  verbs: [update]
- apiGroups: [batch]
  resources: [jobs]
  verbs: [get, list, watch, create]
- apiGroups: [batch]
  resources: [cronjobs]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [""]
  resources: [pods]
  verbs: [get, list, watch]
- apiGroups: [apps]
  resources: [deployments]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [""]
  resources: [services]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [autoscaling]
  resources: [horizontalpodautoscalers]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [gateway.networking.k8s.io]
  resources: [httproutes]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: ["", events.k8s.io]
  resources: [events]
  verbs: [create, patch]
{{- end -}}

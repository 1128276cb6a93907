{{/* Labels every object of the release carries. */}}
{{- define "mmesh.labels" -}}
app.kubernetes.io/name: mmesh
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end }}

{{/* Selector of the operator pods (distinct from the runtime pods' labels). */}}
{{- define "mmesh.operatorSelector" -}}
app.kubernetes.io/name: mmesh
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "mmesh.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{ default .Values.operator.name .Values.serviceAccount.name }}
{{- else -}}
{{ default "default" .Values.serviceAccount.name }}
{{- end -}}
{{- end }}

{{/* Cluster-wide RBAC names must not clash between releases (namespace-scope installs can
share a cluster). */}}
{{- define "mmesh.clusterRbacName" -}}
{{ printf "%s-%s-%s" .Values.operator.name .Release.Namespace .Release.Name | trunc 253 | trimSuffix "-" }}
{{- end }}

{{/* The Secret holding the operator's own etcd connection. */}}
{{- define "mmesh.operatorEtcdSecret" -}}
{{- if .Values.etcd.existingSecret -}}
{{ .Values.etcd.existingSecret }}
{{- else if .Values.namespaceScope -}}
{{ .Values.etcd.secretName }}
{{- else -}}
{{ printf "%s-operator" .Values.etcd.secretName }}
{{- end -}}
{{- end }}

{{- define "mmesh.etcdEndpoints" -}}
{{- if .Values.quickstart -}}
{{ printf "http://etcd.%s.svc:2379" .Release.Namespace }}
{{- else -}}
{{ .Values.etcd.connection.endpoints }}
{{- end -}}
{{- end }}

{{/* "true" when this chart writes the operator's etcd Secret. */}}
{{- define "mmesh.createEtcdSecret" -}}
{{- if and (not .Values.etcd.existingSecret) (include "mmesh.etcdEndpoints" .) -}}
true
{{- end -}}
{{- end }}

{{/* The runtime pods' Service name and ports, as the operator will configure them. */}}
{{- define "mmesh.serviceName" -}}
{{ dig "inferenceServiceName" "modelmesh-serving" .Values.servingConfig }}
{{- end }}

{{- define "mmesh.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .Values.operator.runAsUser }}
runAsGroup: {{ .Values.operator.runAsUser }}
fsGroup: {{ .Values.operator.runAsUser }}
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "mmesh.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop:
    - ALL
{{- end }}

{{- define "mmesh.imagePullSecrets" -}}
{{- with .Values.imagePullSecrets -}}
imagePullSecrets:
{{- range . }}
  - name: {{ . }}
{{- end }}
{{- end -}}
{{- end }}

{{/* Selector of a quickstart pod; argument: (list $ "etcd"|"minio"). */}}
{{- define "mmesh.quickstartSelector" -}}
app.kubernetes.io/name: mmesh
app.kubernetes.io/instance: {{ (index . 0).Release.Name }}
app.kubernetes.io/component: {{ printf "quickstart-%s" (index . 1) }}
{{- end }}

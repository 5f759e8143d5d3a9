{{- define "lakeload.labels" -}}
app.kubernetes.io/name: lakeload
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}
{{- define "lakeload.roleKind" -}}
{{- if .Values.watchAllNamespaces }}ClusterRole{{ else }}Role{{ end }}
{{- end }}
{{- define "lakeload.operatorImage" -}}
{{ .Values.image.operator.repository }}:{{ .Values.image.operator.tag | default .Chart.AppVersion }}
{{- end }}
{{- define "lakeload.workerImage" -}}
{{ .Values.image.worker.repository }}:{{ .Values.image.worker.tag | default .Chart.AppVersion }}
{{- end }}
{{- /* Non-root, no privileges, read-only root: what both images are built for. */ -}}
{{- define "lakeload.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities: {drop: [ALL]}
{{- end }}
{{- define "lakeload.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
seccompProfile: {type: RuntimeDefault}
{{- end }}
{{- /* The account of worker pods whose EtlRun names none. */ -}}
{{- define "lakeload.workerServiceAccount" -}}
{{ .Values.workerServiceAccount | default (printf "%s-worker" .Release.Name) }}
{{- end }}

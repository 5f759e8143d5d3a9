{{- define "lakeload.labels" -}}
app.kubernetes.io/name: lakeload
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}
{{- define "lakeload.roleKind" -}}
{{- if .Values.watchAllNamespaces }}ClusterRole{{ else }}Role{{ end }}
{{- end }}

{{- define "kastell.labels" -}}
app.kubernetes.io/name: kastell-operator
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/part-of: kastell
{{- end }}
{{- define "kastell.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag }}
{{- end }}

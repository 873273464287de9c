{{/* Chart name, or nameOverride. */}}
{{- define "lb-l7-webhook.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Object name prefix: fullnameOverride, the release name when it contains the chart name, else RELEASE-NAME. */}}
{{- define "lb-l7-webhook.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "lb-l7-webhook.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "lb-l7-webhook.selectorLabels" -}}
app.kubernetes.io/name: {{ include "lb-l7-webhook.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Labels of every object: the selector labels, the chart's, and commonLabels. */}}
{{- define "lb-l7-webhook.labels" -}}
helm.sh/chart: {{ include "lb-l7-webhook.chart" . }}
{{ include "lb-l7-webhook.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: lb-l7-webhook
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* metadata.labels and, when .Values.annotations is set, metadata.annotations; indented for metadata. */}}
{{- define "lb-l7-webhook.metadata" -}}
labels:
  {{- include "lb-l7-webhook.labels" . | nindent 2 }}
{{- with .Values.annotations }}
annotations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{- define "lb-l7-webhook.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}
{{- end }}

{{/* The Secret with the serving certificate: certificates.secretName, else a per-mode default. */}}
{{- define "lb-l7-webhook.secretName" -}}
{{- $mode := .Values.certificates.mode }}
{{- if .Values.certificates.secretName }}
{{- .Values.certificates.secretName }}
{{- else if eq $mode "self" }}
{{- printf "%s-certs" (include "lb-l7-webhook.fullname" .) }}
{{- else if eq $mode "cert-manager" }}
{{- printf "%s-tls" (include "lb-l7-webhook.fullname" .) }}
{{- else }}
{{- fail "certificates.secretName is required with certificates.mode=secret: the name of a kubernetes.io/tls Secret (keys tls.crt, tls.key) in the release namespace" }}
{{- end }}
{{- end }}

{{/* The pods need a ServiceAccount token only when serve talks to the API server. */}}
{{- define "lb-l7-webhook.needsToken" -}}
{{- if or (eq .Values.certificates.mode "self") .Values.reconciler.enabled }}true{{ else }}false{{ end }}
{{- end }}

{{/* The serving certificate's DNS names. */}}
{{- define "lb-l7-webhook.serviceDNSNames" -}}
{{- $svc := include "lb-l7-webhook.fullname" . }}
{{- $ns := .Release.Namespace -}}
- {{ $svc }}
- {{ $svc }}.{{ $ns }}
- {{ $svc }}.{{ $ns }}.svc
- {{ $svc }}.{{ $ns }}.svc.{{ .Values.clusterDomain }}
{{- end }}

{{/* An IPv4 or IPv6 address (for extraSANs). */}}
{{- define "lb-l7-webhook.isIP" -}}
{{- if or (regexMatch "^[0-9]{1,3}(\\.[0-9]{1,3}){3}$" .) (regexMatch "^[0-9a-fA-F:]*:[0-9a-fA-F:.]*$" .) }}true{{ end }}
{{- end }}

{{/* The lease the reconciler's leader holds; serve's name for it. */}}
{{- define "lb-l7-webhook.leaseName" -}}
lb-l7-webhook-reconciler
{{- end }}

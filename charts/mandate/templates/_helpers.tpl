{{/* Name of the chart, overridable. */}}
{{- define "mandate.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Full name: the release name, prefixed with the chart name unless it already contains it. */}}
{{- define "mandate.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "mandate.selectorLabels" -}}
app.kubernetes.io/name: {{ include "mandate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "mandate.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "mandate.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: mandate
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "mandate.serviceAccountName" -}}
{{- default (include "mandate.fullname" .) .Values.serviceAccount.name -}}
{{- end -}}

{{- define "mandate.webhookService" -}}
{{- printf "%s-webhook" (include "mandate.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "mandate.tlsSecret" -}}
{{- printf "%s-webhook-tls" (include "mandate.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "mandate.certificate" -}}
{{- printf "%s-webhook" (include "mandate.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "mandate.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/*
The namespaces no webhook ever reviews: the control plane's own, the node leases, mandate's own
namespace (so mandate can always be repaired), and any the user adds.
*/}}
{{- define "mandate.excludedNamespaces" -}}
{{- $ns := list "kube-system" "kube-node-lease" .Release.Namespace -}}
{{- $ns = concat $ns .Values.webhook.excludeNamespaces | uniq -}}
{{- toJson $ns -}}
{{- end -}}

{{/*
A namespaceSelector: the exclusions, the given mode expression, and the user's extra selector.
Call with (dict "root" $ "mode" <matchExpression dict, or nil>).
*/}}
{{- define "mandate.namespaceSelector" -}}
{{- $root := .root -}}
{{- $exprs := list (dict "key" "kubernetes.io/metadata.name" "operator" "NotIn" "values" (include "mandate.excludedNamespaces" $root | fromJsonArray)) -}}
{{- if .mode }}{{- $exprs = append $exprs .mode -}}{{- end -}}
{{- $exprs = concat $exprs ($root.Values.webhook.namespaceSelector.matchExpressions | default list) -}}
{{- $sel := dict "matchExpressions" $exprs -}}
{{- with $root.Values.webhook.namespaceSelector.matchLabels }}
{{- $_ := set $sel "matchLabels" . -}}
{{- end -}}
{{- toYaml $sel -}}
{{- end -}}

{{/* clientConfig of one webhook entry. Call with (dict "root" $ "path" "/validate/pods" "caBundle" <b64 or "">). */}}
{{- define "mandate.clientConfig" -}}
{{- $root := .root -}}
{{- if $root.Values.webhook.url }}
url: {{ printf "%s%s" (trimSuffix "/" $root.Values.webhook.url) .path | quote }}
{{- else }}
service:
  name: {{ include "mandate.webhookService" $root }}
  namespace: {{ $root.Release.Namespace }}
  path: {{ .path }}
  port: {{ $root.Values.service.webhookPort }}
{{- end }}
{{- with .caBundle }}
caBundle: {{ . }}
{{- end }}
{{- end -}}

{{- /*
The Secret holding the CA whose client certificates a port verifies: the port's
`clientAuth.secretName`, else the one the chart renders. Called with (dict "root" . "port" "webhook")
or "authz".
*/ -}}
{{- define "mandate.clientCaSecret" -}}
{{- $clientAuth := (index .root.Values .port).clientAuth -}}
{{- if $clientAuth.secretName -}}
{{- $clientAuth.secretName -}}
{{- else -}}
{{- printf "%s-%s-client-ca" (include "mandate.fullname" .root) .port | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "mandate.metricsService" -}}
{{- printf "%s-metrics" (include "mandate.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

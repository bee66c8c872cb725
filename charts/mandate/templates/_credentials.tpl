{{/*
The MutatingWebhookConfiguration that gives each agent pod one projected ServiceAccount token per
live tool (`/mutate/pods`): the tool's audience, the identity's TTL, read-only at
/var/run/mandate.dev/tools/<tool>/token in every container. Rendered from webhook.yaml, which
passes the caBundle it generated, so both configurations trust the same CA. Mirrored in
config/webhook/manifests.yaml and e2e/src/admission.rs (a test compares them).

The same scope as the validating pod webhooks 1 and 2: every pod in an agent namespace, and
agent-labelled pods elsewhere; pod CREATEs only (volumes cannot change later). Fail, as those:
an agent pod must not start without its credentials because mandate was down. IfNeeded: when a
later mutating webhook changes the pod, mandate runs again; its patch is idempotent (a pod that
already holds its tokens gets none), and the validating webhooks judge the final pod.
Call with (dict "root" $ "caBundle" <b64 or "">).
*/}}
{{- define "mandate.credentialsWebhook" -}}
{{- $root := .root -}}
{{- $podCreates := list (dict "apiGroups" (list "") "apiVersions" (list "v1") "operations" (list "CREATE") "resources" (list "pods") "scope" "Namespaced") -}}
apiVersion: admissionregistration.k8s.io/v1
kind: MutatingWebhookConfiguration
metadata:
  name: {{ include "mandate.fullname" $root }}
  labels:
    {{- include "mandate.labels" $root | nindent 4 }}
  {{- if and $root.Values.certManager.enabled (not $root.Values.webhook.url) }}
  annotations:
    cert-manager.io/inject-ca-from: {{ printf "%s/%s" $root.Release.Namespace (include "mandate.certificate" $root) }}
  {{- end }}
webhooks:
# 1. Every pod in a namespace labelled mandate.dev/mode (Fail, as the validating pod webhook).
- name: tool-tokens.namespaces.mandate.dev
  admissionReviewVersions: ["v1"]
  sideEffects: None
  timeoutSeconds: {{ $root.Values.webhook.timeoutSeconds }}
  failurePolicy: {{ $root.Values.webhook.failurePolicy }}
  matchPolicy: Equivalent
  reinvocationPolicy: IfNeeded
  clientConfig:
    {{- include "mandate.clientConfig" (dict "root" $root "path" "/mutate/pods" "caBundle" .caBundle) | trim | nindent 4 }}
  namespaceSelector:
    {{- include "mandate.namespaceSelector" (dict "root" $root "mode" (dict "key" "mandate.dev/mode" "operator" "Exists")) | nindent 4 }}
  rules:
    {{- toYaml $podCreates | nindent 4 }}
# 2. Pods labelled mandate.dev/agent everywhere else (Fail: only agent pods match).
- name: tool-tokens.agents.mandate.dev
  admissionReviewVersions: ["v1"]
  sideEffects: None
  timeoutSeconds: {{ $root.Values.webhook.timeoutSeconds }}
  failurePolicy: {{ $root.Values.webhook.failurePolicy }}
  matchPolicy: Equivalent
  reinvocationPolicy: IfNeeded
  clientConfig:
    {{- include "mandate.clientConfig" (dict "root" $root "path" "/mutate/pods" "caBundle" .caBundle) | trim | nindent 4 }}
  namespaceSelector:
    {{- include "mandate.namespaceSelector" (dict "root" $root "mode" (dict "key" "mandate.dev/mode" "operator" "DoesNotExist")) | nindent 4 }}
  objectSelector:
    matchExpressions:
    - key: mandate.dev/agent
      operator: Exists
  rules:
    {{- toYaml $podCreates | nindent 4 }}
{{- end }}

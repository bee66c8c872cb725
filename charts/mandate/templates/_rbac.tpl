{{/* The ClusterRole's rules; config/rbac/role.yaml holds the same list (a test compares them). */}}
{{- define "mandate.clusterRules" }}
- apiGroups: ["mandate.dev"]
  resources: ["agentidentities", "toolbindings", "delegationpolicies"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["mandate.dev"]
  resources: ["agentidentities/status", "toolbindings/status", "delegationpolicies/status"]
  verbs: ["patch"]
- apiGroups: [""]
  resources: ["serviceaccounts"]
  verbs: ["list", "watch", "create", "patch"]
- apiGroups: ["networking.k8s.io"]
  resources: ["networkpolicies"]
  verbs: ["list", "watch", "create", "patch"]
- apiGroups: [""]
  resources: ["namespaces", "services", "secrets"]
  verbs: ["list", "watch"]
- apiGroups: ["discovery.k8s.io"]
  resources: ["endpointslices"]
  verbs: ["list", "watch"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create"]
- apiGroups: ["authentication.k8s.io"]
  resources: ["tokenreviews"]
  verbs: ["create"]
{{- end }}

{{/* The leader-election Role's rules: the Lease is created once, then read and renewed by name. */}}
{{- define "mandate.leaseRules" }}
- apiGroups: ["coordination.k8s.io"]
  resources: ["leases"]
  verbs: ["create"]
- apiGroups: ["coordination.k8s.io"]
  resources: ["leases"]
  resourceNames: [{{ .Values.leaderElection.leaseName | quote }}]
  verbs: ["get", "patch"]
{{- end }}

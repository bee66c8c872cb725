#!/usr/bin/env bash
# `make demo`: a first look at mandate on the local control plane, in plain terminal output.
#
# Starts the control plane (building it on first use), installs the CRDs and the Helm chart's
# ServiceAccount and RBAC, runs mandate as a local process with a token of that ServiceAccount,
# registers the chart's webhook configuration pointed at it, and walks through the samples.
# Every manifest it pipes into kubectl is printed first. The webhooks are scoped to namespaces
# labelled for the demo, and the demo shows what that leaves unreviewed (an agent pod in
# `default`). The control plane and mandate keep running afterwards so you can explore.
#
# Usage: e2e/demo.sh          run the demo
#        e2e/demo.sh stop     stop the demo's mandate process and remove its webhook configuration
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)
cd "$root"
# shellcheck source=e2e/versions.sh
source "$here/versions.sh"

state=${MANDATE_E2E_STATE:-$here/.state}
demo=$state/demo
ns=mandate-demo
system=mandate-system
release=mandate
admin_port=${MANDATE_DEMO_ADMIN_PORT:-18080}
webhook_port=${MANDATE_DEMO_WEBHOOK_PORT:-19443}
authz_port=${MANDATE_DEMO_AUTHZ_PORT:-19444}
webhook_name=mandate-demo
# The demo's webhooks see only namespaces carrying this label, so they never touch anything
# else on this control plane (tests may share it). A real install has no such label.
demo_label=mandate.dev/demo

bold='' dim='' reset=''
if [[ -t 1 ]]; then
  bold=$(tput bold 2>/dev/null || true)
  dim=$(tput dim 2>/dev/null || true)
  reset=$(tput sgr0 2>/dev/null || true)
fi
step_no=0
step() {
  step_no=$((step_no + 1))
  printf '\n%s== %d. %s%s\n' "$bold" "$step_no" "$1" "$reset"
  shift
  local line
  for line in "$@"; do printf '   %s\n' "$line"; done
}
# Shows a command, then runs it.
show() {
  printf '%s$ %s%s\n' "$dim" "$*" "$reset"
  "$@"
}
# Shows the manifest on stdin as the here-document of the kubectl command that applies it
# (after comment lines saying where it came from, when given), then runs that command on it.
# Only a caBundle is shortened in what is shown: a base64 certificate tells a reader nothing.
show_apply() { # comment lines or "", kubectl arguments (the manifest goes in as -f -)
  local comment=$1 manifest line
  shift
  manifest=$(cat)
  if [[ -n "$comment" ]]; then
    while IFS= read -r line; do printf '%s# %s%s\n' "$dim" "$line" "$reset"; done <<<"$comment"
  fi
  printf '%s$ kubectl %s -f - <<EOF%s\n' "$dim" "$*" "$reset"
  sed -E 's|^([[:space:]]*caBundle: ).{64,}$|\1<base64 of the CA from e2e/certs.sh, shortened here>|' \
    <<<"$manifest"
  printf '%sEOF%s\n' "$dim" "$reset"
  kubectl "$@" -f - <<<"$manifest"
}

stop_mandate() {
  if [[ -s "$demo/mandate.pid" ]] && kill -0 "$(cat "$demo/mandate.pid")" 2>/dev/null; then
    kill "$(cat "$demo/mandate.pid")"
    echo "stopped mandate (pid $(cat "$demo/mandate.pid"))"
  fi
  rm -f "$demo/mandate.pid"
}

if [[ "${1:-}" == stop ]]; then
  stop_mandate
  if [[ -s "$state/kubeconfig" ]]; then
    eval "$(bash "$here/cluster.sh" env)"
    kubectl delete validatingwebhookconfiguration "$webhook_name" --ignore-not-found
  fi
  exit 0
fi

cat <<EOF
${bold}mandate${reset}: every AI agent on Kubernetes acts under a mandate: an accountable owner, its own
workload identity, an explicit and time-bounded list of tools, and bounded delegation. This demo
runs mandate against a real (local) Kubernetes control plane and shows what it does.
EOF

step "Start a local Kubernetes control plane" \
  "etcd, kube-apiserver and kube-controller-manager $KUBE_VERSION, built from source on" \
  "first use (about 7 minutes on 2 cores; cached afterwards). No kubelet: pods are stored, never run."
bin=$(bash "$here/build.sh" --print)
# The Go builds print nothing for minutes: report which binaries are ready every 20 seconds.
(
  started=$(date +%s)
  while sleep 20; do
    ready=$(for b in etcd kube-apiserver kube-controller-manager kubectl helm; do
      [[ -x "$bin/$b" ]] && printf '%s ' "$b"
    done)
    printf '   ... %ds, built so far: %s\n' "$(($(date +%s) - started))" "${ready:-none yet}"
  done
) &
progress=$!
trap 'kill $progress 2>/dev/null || true' EXIT
bash "$here/cluster.sh" up
kill "$progress" 2>/dev/null || true
eval "$(bash "$here/cluster.sh" env)"

step "Build mandate" "One Rust binary: the operator, the admission webhook and the CLI."
cargo build --bin mandate
mandate=$root/target/debug/mandate

step "Install the CRDs" "AgentIdentity, ToolBinding and DelegationPolicy (kubectl get mandate lists all three)."
show kubectl apply --server-side --force-conflicts --field-manager=mandate-demo -f crds/

step "Install mandate's ServiceAccount and RBAC from the Helm chart" \
  "Only the verbs mandate uses: watch its kinds and write their status, apply ServiceAccounts" \
  "and NetworkPolicies, watch Namespaces/Services/EndpointSlices, list Secrets' metadata (never" \
  "get), write Events, and renew its leader Lease."
kubectl create namespace "$system" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
helm template "$release" charts/mandate --namespace "$system" --kube-version "$KUBE_VERSION" \
  --show-only templates/serviceaccount.yaml --show-only templates/rbac.yaml |
  show_apply "rendered by: helm template $release charts/mandate --namespace $system --kube-version $KUBE_VERSION \\
    --show-only templates/serviceaccount.yaml --show-only templates/rbac.yaml" apply

step "Run mandate as a local process, as that ServiceAccount" \
  "It authenticates with a token from 'kubectl create token', so everything below also proves the" \
  "chart's RBAC is enough. Log: $demo/mandate.log"
mkdir -p "$demo"
stop_mandate >/dev/null
token=$(kubectl create token "$release" -n "$system" --duration=24h)
server=$(kubectl config view --minify -o jsonpath='{.clusters[0].cluster.server}')
ca_file=$(kubectl config view --minify -o jsonpath='{.clusters[0].cluster.certificate-authority}')
cat >"$demo/kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: local
  cluster: {server: $server, certificate-authority: $ca_file}
users:
- name: mandate
  user: {token: $token}
contexts:
- name: mandate
  context: {cluster: local, user: mandate}
current-context: mandate
EOF
chmod 600 "$demo/kubeconfig"
bash "$here/certs.sh" ca "$demo/certs"
bash "$here/certs.sh" serving "$demo/certs" webhook "$demo/certs"
KUBECONFIG=$demo/kubeconfig setsid "$mandate" run \
  --admin-addr "127.0.0.1:$admin_port" --webhook-addr "127.0.0.1:$webhook_port" \
  --authz-addr "127.0.0.1:$authz_port" \
  --tls-cert "$demo/certs/webhook.crt" --tls-key "$demo/certs/webhook.key" \
  --namespace "$system" --log-format json >>"$demo/mandate.log" 2>&1 </dev/null &
echo $! >"$demo/mandate.pid"
for i in $(seq 1 150); do
  curl -fsS "http://127.0.0.1:$admin_port/readyz" >/dev/null 2>&1 && break
  kill -0 "$(cat "$demo/mandate.pid")" 2>/dev/null || { tail -20 "$demo/mandate.log"; exit 1; }
  sleep 0.2
done
show curl -sS "http://127.0.0.1:$admin_port/readyz"
echo

step "Register the admission webhook (the chart's webhook configuration)" \
  "In a cluster the API server calls mandate's Service; here it calls the local process at" \
  "https://127.0.0.1:$webhook_port with a certificate from e2e/certs.sh." \
  "${bold}Scoped to this demo:${reset} every webhook's namespaceSelector also requires the label" \
  "$demo_label=true (webhook.namespaceSelector.matchLabels), so mandate reviews nothing in a" \
  "namespace without it. An agent pod in 'default' is admitted unreviewed (a later step shows" \
  "it); so are Deployments and legacy token Secrets there, and mandate resources there get" \
  "only the API server's schema checks. A real install has no such selector: its webhooks" \
  "cover every namespace but kube-system, kube-node-lease and its own."
helm template "$webhook_name" charts/mandate --namespace "$system" --kube-version "$KUBE_VERSION" \
  --set fullnameOverride="$webhook_name" --set certManager.enabled=true \
  --set webhook.url="https://127.0.0.1:$webhook_port" \
  --set webhook.caBundle="$(base64 -w0 <"$demo/certs/ca.crt")" \
  --set-string "webhook.namespaceSelector.matchLabels.mandate\.dev/demo=true" \
  --show-only templates/webhook.yaml |
  show_apply "rendered by: helm template $webhook_name charts/mandate --namespace $system --kube-version $KUBE_VERSION \\
    --set fullnameOverride=$webhook_name --set certManager.enabled=true \\
    --set webhook.url=https://127.0.0.1:$webhook_port --set webhook.caBundle=<base64 CA> \\
    --set-string 'webhook.namespaceSelector.matchLabels.mandate\\.dev/demo=true' \\
    --show-only templates/webhook.yaml" apply

step "Create a namespace for agents and turn admission on" \
  "Like Pod Security Admission: label it audit, then warn, then enforce. We go straight to enforce."
if kubectl get namespace "$ns" >/dev/null 2>&1; then
  echo "   (removing the namespace left by an earlier demo)"
  kubectl delete namespace "$ns" --wait=true >/dev/null
fi
show kubectl create namespace "$ns"
show kubectl label namespace "$ns" mandate.dev/mode=enforce "$demo_label=true"

step "Apply the samples" \
  "Three agents (config/samples): a read-only researcher, a write-capable code agent, and a" \
  "planner that delegates to an executor; their ToolBindings, a DelegationPolicy, and the" \
  "Services their tools call. mandate's webhook validates each one as it is applied."
# A ToolBinding is judged against the webhook's view of the cluster, which learns of the
# AgentIdentity applied just before it a moment later: apply again until everything is in, and
# report each object's first change.
printf '%s$ kubectl apply -k config/samples -n %s%s\n' "$dim" "$ns" "$reset"
applied=$demo/samples-applied.txt
: >"$applied"
for i in $(seq 1 20); do
  if kubectl apply -k config/samples -n "$ns" >>"$applied" 2>"$demo/samples-error.txt"; then
    break
  fi
  [[ $i == 20 ]] && { cat "$demo/samples-error.txt"; exit 1; }
  sleep 0.5
done
awk '$2 != "unchanged" && !($1 in seen) { seen[$1] = 1; print }' "$applied"
show kubectl wait --for=condition=Ready agentidentity --all -n "$ns" --timeout=60s

step "What mandate knows" "kubectl get mandate lists identities, bindings and delegation policies."
show kubectl get mandate -n "$ns"

step "Each agent gets its own ServiceAccount with a SPIFFE ID" \
  "spiffe://<trust domain>/ns/<namespace>/sa/<name>: the form Istio and SPIRE use."
show kubectl get serviceaccounts -n "$ns" -l app.kubernetes.io/managed-by=mandate \
  -o custom-columns='SERVICEACCOUNT:.metadata.name,SPIFFE ID:.metadata.annotations.mandate\.dev/spiffe-id,AUTOMOUNT:.automountServiceAccountToken'

step "...and a default-deny NetworkPolicy that opens only its tools" \
  "The researcher may reach DNS, the catalogue Service's pods and the search provider's ranges."
show kubectl describe networkpolicy mandate-researcher -n "$ns"

step "An agent pod with a mandate is admitted" \
  "It names its identity, runs as the identity's ServiceAccount and mounts no long-lived token."
pod() { # name, labels (JSON), serviceAccountName, automount[, namespace (default: the demo's)]
  cat <<EOF
{"apiVersion": "v1", "kind": "Pod",
 "metadata": {"name": "$1", "namespace": "${5:-$ns}", "labels": $2},
 "spec": {"serviceAccountName": "$3", "automountServiceAccountToken": $4,
          "containers": [{"name": "agent", "image": "registry.example/agent:1"}]}}
EOF
}
pod researcher '{"mandate.dev/agent": "researcher"}' researcher false | show_apply "" apply

step "A pod without a mandate is refused, with every reason" \
  "No mandate.dev/agent label: in an enforce namespace every pod is an agent pod."
pod stray '{}' default true | show_apply "" apply || true
echo
echo "   An agent whose identity has no tools bound, running as the default ServiceAccount:"
show_apply "" apply -n "$ns" <<EOF
apiVersion: mandate.dev/v1alpha1
kind: AgentIdentity
metadata: {name: intern}
spec:
  owner: {kind: User, name: bob}
  class: ReadOnly
  purpose: Summarises tickets (no tools granted yet)
EOF
sleep 1
pod intern '{"mandate.dev/agent": "intern"}' default true | show_apply "" apply || true

step "What this demo's scoping leaves out: an agent pod in 'default'" \
  "The demo's webhooks only see namespaces labelled $demo_label=true, and 'default' is not." \
  "So this pod, which claims to be the researcher, runs as the default ServiceAccount and" \
  "automounts its token, is admitted without mandate ever seeing it. A real install would refuse it" \
  "(no AgentIdentity researcher in 'default'; mandate's --default-mode is enforce)." \
  "--dry-run=server goes through admission like a real create but stores nothing."
pod impostor '{"mandate.dev/agent": "researcher"}' default true default |
  show_apply "" apply --dry-run=server || true
echo
echo "   The same pod in $ns (labelled $demo_label=true) is refused:"
pod impostor '{"mandate.dev/agent": "researcher"}' default true |
  show_apply "" apply --dry-run=server || true

step "The inventory" "Every agent with owner, class, SPIFFE ID, tools and expiry, and what is unmanaged."
if "$mandate" inventory --help >/dev/null 2>&1; then
  show "$mandate" inventory -n "$ns"
else
  # >>> LEAD: call `mandate inventory` here once it exists (e.g. "$mandate" inventory -n "$ns") <<<
  echo "   (mandate inventory is not built into this binary yet)"
fi

cat <<EOF

${bold}Done.${reset} The control plane and mandate keep running, so you can explore:

  eval \$(bash e2e/cluster.sh env)       # kubectl and helm for this control plane
  kubectl get mandate -n $ns
  kubectl describe agentidentity researcher -n $ns
  tail -f $demo/mandate.log

Here mandate's webhooks see only namespaces labelled $demo_label=true: add that label (and
mandate.dev/mode) to a namespace to try mandate there.

Stop mandate:            bash e2e/demo.sh stop
Stop the control plane:  make cluster-down
EOF

#!/usr/bin/env bash
# A real local Kubernetes control plane on 127.0.0.1: etcd, kube-apiserver and
# kube-controller-manager built by e2e/build.sh. No kubelet and no scheduler: pods are stored
# and stay Pending, which is all admission, projection and garbage collection need.
#
# Usage: e2e/cluster.sh up          build if needed, start, wait for /readyz (a second up is harmless)
#        e2e/cluster.sh down        stop what this script started and delete the etcd data
#        e2e/cluster.sh env         print `export KUBECONFIG=... PATH=...` for a shell
#        e2e/cluster.sh logs [NAME] print the logs (etcd, kube-apiserver, kube-controller-manager)
#        e2e/cluster.sh restart-apiserver   stop and start kube-apiserver only (for resilience tests;
#                                           MANDATE_E2E_DOWNTIME=N keeps it down N seconds)
#        e2e/cluster.sh status      print which components run
#
# Environment: MANDATE_E2E_STATE (default e2e/.state), MANDATE_E2E_ETCD_PORT (23790),
# MANDATE_E2E_APISERVER_PORT (26443), MANDATE_E2E_CACHE (see e2e/versions.sh).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=e2e/versions.sh
source "$here/versions.sh"

state=${MANDATE_E2E_STATE:-$here/.state}
etcd_port=${MANDATE_E2E_ETCD_PORT:-23790}
api_port=${MANDATE_E2E_APISERVER_PORT:-26443}
pki=$state/pki
logs=$state/logs
run=$state/run
kubeconfig=$state/kubeconfig
server=https://127.0.0.1:$api_port
service_cidr=10.0.0.0/24

log() { printf '[e2e/cluster] %s\n' "$*" >&2; }

alive() {
  local pid_file=$run/$1.pid
  [[ -s "$pid_file" ]] && kill -0 "$(cat "$pid_file")" 2>/dev/null
}

start() {
  local name=$1
  shift
  if alive "$name"; then
    return 0
  fi
  mkdir -p "$logs" "$run"
  # setsid: the component outlives this script and is stopped only through its pid file.
  setsid "$MANDATE_E2E_BIN/$name" "$@" >>"$logs/$name.log" 2>&1 </dev/null &
  echo $! >"$run/$name.pid"
}

stop() {
  local name=$1 pid i
  alive "$name" || { rm -f "$run/$name.pid"; return 0; }
  pid=$(cat "$run/$name.pid")
  kill -TERM "$pid" 2>/dev/null || true
  for i in $(seq 1 50); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.2
  done
  kill -KILL "$pid" 2>/dev/null || true
  rm -f "$run/$name.pid"
}

write_kubeconfig() {
  local path=$1 user=$2
  cat >"$path" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: mandate-e2e
  cluster:
    server: $server
    certificate-authority: $pki/ca.crt
users:
- name: $user
  user:
    client-certificate: $pki/$user.crt
    client-key: $pki/$user.key
contexts:
- name: mandate-e2e
  context: {cluster: mandate-e2e, user: $user}
current-context: mandate-e2e
EOF
}

pki() {
  local certs=$here/certs.sh
  bash "$certs" ca "$pki"
  [[ -s $pki/kube-apiserver.crt ]] || bash "$certs" serving "$pki" kube-apiserver "$pki"
  [[ -s $pki/admin.crt ]] || bash "$certs" client "$pki" admin admin system:masters "$pki"
  [[ -s $pki/kube-controller-manager.crt ]] ||
    bash "$certs" client "$pki" kube-controller-manager system:kube-controller-manager "" "$pki"
  # The API server's client certificate for webhooks, from a CA of its own, so a webhook that
  # trusts only that CA (mandate run --webhook-client-ca) refuses every other client, the
  # admin's certificate included.
  bash "$certs" ca "$pki/webhook-clients"
  [[ -s $pki/webhook-client.crt ]] ||
    bash "$certs" client "$pki" webhook-client kube-apiserver-webhook-client "" "$pki/webhook-clients"
  if [[ ! -s $pki/sa.key ]]; then
    openssl genrsa -out "$pki/sa.key" 2048 2>/dev/null
    openssl rsa -in "$pki/sa.key" -pubout -out "$pki/sa.pub" 2>/dev/null
  fi
  # Written on every start, so a state dir from an older checkout gets the current policy.
  cat >"$state/audit-policy.yaml" <<'EOF'
# Metadata level keeps admission webhooks' audit annotations in the log without bodies. A
# resource name matches no subresource: connections into pods are listed as well.
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
- level: Metadata
  resources:
  - group: ""
    resources: [pods, pods/exec, pods/attach, pods/portforward, pods/proxy, serviceaccounts, secrets]
  - group: apps
  - group: batch
  - group: mandate.dev
- level: None
EOF
  # The API server presents that certificate to every webhook that asks for one (`*`: a
  # webhook registered by URL is matched by host and port, and the tests' ports vary); a
  # webhook that does not ask sees no difference.
  cat >"$state/webhook-client.kubeconfig" <<EOF
apiVersion: v1
kind: Config
users:
- name: '*'
  user:
    client-certificate: $pki/webhook-client.crt
    client-key: $pki/webhook-client.key
EOF
  cat >"$state/admission-config.yaml" <<EOF
apiVersion: apiserver.config.k8s.io/v1
kind: AdmissionConfiguration
plugins:
- name: ValidatingAdmissionWebhook
  configuration:
    apiVersion: apiserver.config.k8s.io/v1
    kind: WebhookAdmissionConfiguration
    kubeConfigFile: $state/webhook-client.kubeconfig
- name: MutatingAdmissionWebhook
  configuration:
    apiVersion: apiserver.config.k8s.io/v1
    kind: WebhookAdmissionConfiguration
    kubeConfigFile: $state/webhook-client.kubeconfig
EOF
  write_kubeconfig "$kubeconfig" admin
  write_kubeconfig "$state/kube-controller-manager.kubeconfig" kube-controller-manager
}

curl_api() {
  curl -sS --max-time 5 --cacert "$pki/ca.crt" --cert "$pki/admin.crt" --key "$pki/admin.key" "$server$1"
}

wait_for() {
  local what=$1 seconds=$2 check=$3 i
  for i in $(seq 1 $((seconds * 5))); do
    if eval "$check" >/dev/null 2>&1; then
      return 0
    fi
    sleep 0.2
  done
  log "$what did not become ready in ${seconds}s; last log lines:"
  tail -n 30 "$logs/$what.log" >&2 || true
  return 1
}

start_etcd() {
  start etcd \
    --name mandate-e2e --data-dir "$state/etcd" \
    --listen-client-urls "http://127.0.0.1:$etcd_port" \
    --advertise-client-urls "http://127.0.0.1:$etcd_port" \
    --listen-peer-urls http://127.0.0.1:0 \
    --unsafe-no-fsync=true --log-level warn
  wait_for etcd 30 "curl -sf http://127.0.0.1:$etcd_port/health"
}

start_apiserver() {
  start kube-apiserver \
    --etcd-servers "http://127.0.0.1:$etcd_port" \
    --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$api_port" \
    --tls-cert-file "$pki/kube-apiserver.crt" --tls-private-key-file "$pki/kube-apiserver.key" \
    --client-ca-file "$pki/ca.crt" \
    --authorization-mode RBAC \
    --service-account-issuer https://kubernetes.default.svc.cluster.local \
    --service-account-key-file "$pki/sa.pub" \
    --service-account-signing-key-file "$pki/sa.key" \
    --service-cluster-ip-range "$service_cidr" \
    --allow-privileged=true \
    --endpoint-reconciler-type none \
    --admission-control-config-file "$state/admission-config.yaml" \
    --audit-policy-file "$state/audit-policy.yaml" \
    --audit-log-path "$logs/audit.log" --audit-log-maxsize 100 --audit-log-maxbackup 1
  wait_for kube-apiserver 90 "[[ \$(curl_api /readyz) == ok ]]"
}

start_controller_manager() {
  start kube-controller-manager \
    --kubeconfig "$state/kube-controller-manager.kubeconfig" \
    --authentication-kubeconfig "$state/kube-controller-manager.kubeconfig" \
    --authorization-kubeconfig "$state/kube-controller-manager.kubeconfig" \
    --bind-address 127.0.0.1 --secure-port 0 \
    --leader-elect=false \
    --use-service-account-credentials=true \
    --service-account-private-key-file "$pki/sa.key" \
    --root-ca-file "$pki/ca.crt" \
    --service-cluster-ip-range "$service_cidr" \
    --controllers 'garbage-collector-controller,namespace-controller,deployment-controller,replicaset-controller,statefulset-controller,daemonset-controller,job-controller,cronjob-controller,serviceaccount-controller,serviceaccount-token-controller,endpointslice-controller,root-ca-certificate-publisher-controller,legacy-serviceaccount-token-cleaner-controller,clusterrole-aggregation-controller'
  # The controller manager has no health port here; it is up once it created the
  # kube-root-ca.crt ConfigMap in the default namespace.
  wait_for kube-controller-manager 60 \
    "curl_api /api/v1/namespaces/default/configmaps/kube-root-ca.crt | grep -q '\"kind\": \"ConfigMap\"'"
}

up() {
  local started
  started=$(date +%s)
  bash "$here/build.sh" >/dev/null
  mkdir -p "$state"
  pki
  start_etcd
  start_apiserver
  start_controller_manager
  log "up in $(($(date +%s) - started))s: $server (KUBECONFIG=$kubeconfig)"
}

down() {
  stop kube-controller-manager
  stop kube-apiserver
  stop etcd
  rm -rf "$state/etcd"
  log "down"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  env)
    echo "export KUBECONFIG=$kubeconfig"
    echo "export PATH=$MANDATE_E2E_BIN:\$PATH"
    ;;
  logs)
    for name in ${2:-etcd kube-apiserver kube-controller-manager}; do
      echo "==> $logs/$name.log <=="
      tail -n "${LINES_PER_LOG:-100}" "$logs/$name.log" 2>/dev/null || true
    done
    ;;
  restart-apiserver)
    stop kube-apiserver
    sleep "${MANDATE_E2E_DOWNTIME:-0}"
    start_apiserver
    ;;
  status)
    for name in etcd kube-apiserver kube-controller-manager; do
      if alive "$name"; then echo "$name: running (pid $(cat "$run/$name.pid"))"; else echo "$name: stopped"; fi
    done
    ;;
  *)
    sed -n '2,16p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
    exit 2
    ;;
esac

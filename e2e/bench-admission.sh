#!/usr/bin/env bash
# `make bench-admission`: the admission path's figures, in one run (a benchmark, not a test).
#   1. criterion: one decision with 10,000 identities (benches/admission.rs);
#   2. load against the real HTTPS webhook (oha, from crates.io, cached) beside a webhook that
#      only parses the same ~5 KB body: throughput and p50/p99/p99.9 at 1,000 reviews/s and at
#      saturation;
#   3. pod creation through the real API server at 10 and 50 concurrent clients with no
#      admission policy, an equivalent ValidatingAdmissionPolicy, the parse-only webhook of 2
#      (what any webhook costs) and mandate's webhook;
#   4. each process's CPU per pod create with no policy, the parse-only webhook and mandate.
# Results are printed and written to target/bench-admission/. BENCH_ROUNDS (8) and BENCH_PODS
# (2,000 creates per configuration and round) size part 3.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "$here/.."
# shellcheck source=e2e/versions.sh
source e2e/versions.sh
out=target/bench-admission
mkdir -p "$out"
tools=$MANDATE_E2E_CACHE/tools
oha=$tools/bin/oha
log() { printf '\n== %s\n' "$*" >&2; }

if [[ ! -x $oha ]]; then
  log "installing oha into $tools (once)"
  cargo install oha --locked --root "$tools"
fi

log "building release binaries"
cargo build --release --bin mandate
cargo build --release -p mandate-e2e --bin webhook_load_target --bin bench_pod_create

log "1. criterion: one decision, 10,000 identities"
cargo bench --bench admission -- --noplot 2>&1 | tee "$out/criterion.txt" | grep -E "^(decide|parse)|time:"

log "2. HTTPS load: mandate vs a parse-only webhook (oha, $(nproc) cores shared with the load generator)"
certs=$(mktemp -d)
bash e2e/certs.sh ca "$certs"
bash e2e/certs.sh serving "$certs" webhook "$certs"
target/release/webhook_load_target 127.0.0.1:19443 127.0.0.1:19444 "$certs/webhook.crt" "$certs/webhook.key" 10000 &
target_pid=$!
trap 'kill $target_pid 2>/dev/null || true' EXIT
for i in $(seq 1 50); do
  curl -sk -o /dev/null https://127.0.0.1:19443/ && curl -sk -o /dev/null https://127.0.0.1:19444/ && break
  sleep 0.2
done
body=tests/fixtures/admission/pod-create.json
load() { # name url extra-args...
  local name=$1 url=$2
  shift 2
  "$oha" --no-tui --insecure -m POST -H 'content-type: application/json' -D "$body" \
    --output-format json "$@" "$url" >"$out/$name.json"
  python3 - "$out/$name.json" "$name" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
s, p = d["summary"], d["latencyPercentiles"]
codes = d.get("statusCodeDistribution", {})
print(f'{sys.argv[2]:<28} {s["requestsPerSec"]:>9.0f} req/s  p50 {p["p50"]*1e3:6.3f} ms  '
      f'p99 {p["p99"]*1e3:6.3f} ms  p99.9 {p["p99.9"]*1e3:6.3f} ms  status {codes}')
PY
}
for target in mandate:19443 baseline:19444; do
  name=${target%%:*} port=${target##*:}
  load "$name-rate-1000" "https://127.0.0.1:$port/validate/pods" -z 15s -q 1000 -c 16
  load "$name-saturation" "https://127.0.0.1:$port/validate/pods" -z 15s -c 64
done
kill $target_pid 2>/dev/null || true
trap - EXIT

log "3. pod creation through the API server: none vs ValidatingAdmissionPolicy vs a parse-only webhook vs mandate"
bash e2e/cluster.sh up
eval "$(bash e2e/cluster.sh env)"
kubectl apply --server-side -f crds/ >/dev/null
run=$$
ns_none=bench-none-$run ns_vap=bench-vap-$run ns_noop=bench-noop-$run ns_mandate=bench-mandate-$run
# In this order everywhere below (the summary names them so).
bench_namespaces=("$ns_none" "$ns_vap" "$ns_noop" "$ns_mandate")
for ns in "${bench_namespaces[@]}"; do
  kubectl create namespace "$ns" >/dev/null
done
kubectl label namespace "$ns_vap" "bench.mandate.dev/vap=$run" >/dev/null
# The same pods everywhere: the ServiceAccount admission plugin needs the account to exist
# (mandate projects its own).
for ns in "$ns_none" "$ns_vap" "$ns_noop"; do
  kubectl create serviceaccount bench-agent -n "$ns" >/dev/null
done
kubectl label namespace "$ns_mandate" mandate.dev/mode=enforce >/dev/null
cleanup() {
  kubectl delete validatingadmissionpolicybinding "bench-$run" --ignore-not-found >/dev/null || true
  kubectl delete validatingadmissionpolicy "bench-$run" --ignore-not-found >/dev/null || true
  kubectl delete validatingwebhookconfiguration "bench-$run" --ignore-not-found >/dev/null || true
  kubectl delete namespace "${bench_namespaces[@]}" --wait=false >/dev/null 2>&1 || true
  [[ -n ${operator_pid:-} ]] && kill "$operator_pid" 2>/dev/null || true
  [[ -n ${target_pid:-} ]] && kill "$target_pid" 2>/dev/null || true
}
trap cleanup EXIT
kubectl apply -f - >/dev/null <<EOF
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata: {name: bench-$run}
spec:
  failurePolicy: Fail
  matchConstraints:
    resourceRules:
    - {apiGroups: [""], apiVersions: [v1], operations: [CREATE], resources: [pods]}
  validations:
  - expression: "has(object.metadata.labels) && 'mandate.dev/agent' in object.metadata.labels"
    message: pods in this namespace must carry the mandate.dev/agent label
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata: {name: bench-$run}
spec:
  policyName: bench-$run
  validationActions: [Deny]
  matchResources:
    namespaceSelector:
      matchLabels: {bench.mandate.dev/vap: "$run"}
EOF
admin_port=18090 webhook_port=19445 authz_port=19446
target/release/mandate run --admin-addr 127.0.0.1:$admin_port --webhook-addr 127.0.0.1:$webhook_port --authz-addr 127.0.0.1:$authz_port \
  --tls-cert "$certs/webhook.crt" --tls-key "$certs/webhook.key" --lease-name "bench-$run" \
  --namespace default --log-level warn >"$out/operator.log" 2>&1 &
operator_pid=$!
# What any webhook costs through the API server, apart from mandate's decisions: the
# parse-only server of part 2, registered for a namespace of its own.
target/release/webhook_load_target 127.0.0.1:19443 127.0.0.1:19444 "$certs/webhook.crt" "$certs/webhook.key" 1 &
target_pid=$!
ca=$(base64 -w0 <"$certs/ca.crt")
kubectl apply -f - >/dev/null <<EOF
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingWebhookConfiguration
metadata: {name: bench-$run}
webhooks:
- name: pods.mandate.dev
  clientConfig: {url: "https://127.0.0.1:$webhook_port/validate/pods", caBundle: "$ca"}
  rules:
  - {apiGroups: [""], apiVersions: [v1], operations: [CREATE], resources: [pods]}
  namespaceSelector:
    matchLabels: {kubernetes.io/metadata.name: $ns_mandate}
  failurePolicy: Fail
  sideEffects: None
  admissionReviewVersions: [v1]
  timeoutSeconds: 5
- name: noop.bench.mandate.dev
  clientConfig: {url: "https://127.0.0.1:19444/validate/pods", caBundle: "$ca"}
  rules:
  - {apiGroups: [""], apiVersions: [v1], operations: [CREATE], resources: [pods]}
  namespaceSelector:
    matchLabels: {kubernetes.io/metadata.name: $ns_noop}
  failurePolicy: Fail
  sideEffects: None
  admissionReviewVersions: [v1]
  timeoutSeconds: 5
EOF
kubectl apply -n "$ns_mandate" -f - >/dev/null <<EOF
apiVersion: mandate.dev/v1alpha1
kind: AgentIdentity
metadata: {name: bench-agent}
spec:
  owner: {kind: Group, name: bench}
  purpose: benchmark agent
---
apiVersion: mandate.dev/v1alpha1
kind: ToolBinding
metadata: {name: bench-agent-tools}
spec:
  agent: bench-agent
  tools:
  - name: search
    actions: [read]
    destination: {external: {cidrs: [192.0.2.0/24], ports: [443]}}
EOF
kubectl wait -n "$ns_mandate" agentidentity/bench-agent --for=condition=Ready --timeout=60s >/dev/null
for i in $(seq 1 50); do curl -sf "http://127.0.0.1:$admin_port/readyz" >/dev/null && break; sleep 0.2; done
# Proof that mandate refuses a stray pod (bench_pod_create's own warm-up round proves each
# configuration admits the agent's pods: any refused create fails the run).
for i in $(seq 1 50); do curl -sk -o /dev/null https://127.0.0.1:19444/ && break; sleep 0.2; done
if refused=$(kubectl run stray -n "$ns_mandate" --image=registry.invalid/stray:1 --restart=Never 2>&1); then
  echo "mandate admitted a pod without an identity: the benchmark is not measuring mandate" >&2
  exit 1
elif ! grep -q NoIdentity <<<"$refused"; then
  echo "a stray pod was refused, but not by mandate: $refused" >&2
  exit 1
fi
# Eight rounds of 2,000 creates per configuration at each concurrency, the configurations
# taking turns in blocks of 250 (see e2e/src/bin/bench_pod_create.rs for why). The summary
# pools each configuration's latencies over the rounds: a p99 of 16,000 creates.
rounds=${BENCH_ROUNDS:-8}
pods_per_round=${BENCH_PODS:-2000}
: >"$out/pods.jsonl"
for clients in 10 50; do
  target/release/bench_pod_create "$clients" "$rounds" "$pods_per_round" bench-agent \
    "${bench_namespaces[@]}" >>"$out/pods.jsonl"
done
python3 - "$out/pods.jsonl" "${bench_namespaces[@]}" <<'PY' | tee "$out/pods.txt"
import json, math, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
names = dict(zip(sys.argv[2:], ("none", "vap", "noop", "mandate")))
def pct(xs, q):
    return xs[min(len(xs) - 1, max(0, math.ceil(len(xs) * q) - 1))]
print(f'{"config":<9} {"clients":<8} {"creates":>8} {"p50_ms":>7} {"p99_ms":>7} {"p99.9_ms":>8} {"creates/s":>10} {"p99/none":>9} {"p99-vap":>8}')
for clients in (10, 50):
    got = {names[r["namespace"]]: r for r in rows if r["clients"] == clients}
    p99 = {c: pct(r["latencies_ms"], 0.99) for c, r in got.items()}
    for config in ("none", "vap", "noop", "mandate"):
        r = got[config]
        lat = r["latencies_ms"]
        print(f'{config:<9} {clients:<8} {len(lat):>8} {pct(lat, 0.5):>7.2f} {p99[config]:>7.2f} {pct(lat, 0.999):>8.2f} '
              f'{r["creates_per_second"]:>10.0f} {p99[config] / p99["none"]:>8.2f}x {p99[config] - p99["vap"]:>+7.1f}')
print("targets: mandate's p99 at most 1.10x none's and at most 5 ms above vap's")
PY

log "4. where a create's CPU goes: each process's CPU per create, 50 clients, one configuration at a time"
# Sampled from /proc (utime + stime) over 10 s of steady creation, once bench_pod_create's
# warm-up round and its clean-up (about 7 s) are over.
run_dir=${MANDATE_E2E_STATE:-e2e/.state}/run
processes="etcd:$(cat "$run_dir/etcd.pid") kube-apiserver:$(cat "$run_dir/kube-apiserver.pid")"
processes+=" kube-controller-manager:$(cat "$run_dir/kube-controller-manager.pid")"
processes+=" mandate:$operator_pid parse-only-webhook:$target_pid"
sample() { # namespace: one line per process "name ticks", then "pods N"
  for p in $processes; do awk -v n="${p%%:*}" '{print n, $14 + $15}' "/proc/${p##*:}/stat"; done
  kubectl get --raw "/api/v1/namespaces/$1/pods?limit=1" |
    python3 -c 'import json,sys; d=json.load(sys.stdin); print("pods", d["metadata"].get("remainingItemCount", 0) + len(d["items"]))'
}
for config in none noop mandate; do
  ns_var=ns_$config
  target/release/bench_pod_create 50 1 100000 bench-agent "${!ns_var}" >/dev/null 2>&1 &
  creator=$!
  sleep 12
  sample "${!ns_var}" >"$out/cpu-$config.before"
  sleep 10
  sample "${!ns_var}" >"$out/cpu-$config.after"
  kill "$creator" 2>/dev/null || true
  wait "$creator" 2>/dev/null || true
  kubectl delete --raw "/api/v1/namespaces/${!ns_var}/pods" >/dev/null
  sleep 10
done
python3 - "$out" "$(getconf CLK_TCK)" <<'PY' | tee "$out/cpu.txt"
import sys
out, tck = sys.argv[1], int(sys.argv[2])
print(f'{"config":<9} {"creates/s":>9}  CPU µs per create by process')
for config in ("none", "noop", "mandate"):
    b = dict(l.split() for l in open(f'{out}/cpu-{config}.before'))
    a = dict(l.split() for l in open(f'{out}/cpu-{config}.after'))
    pods = int(a.pop("pods")) - int(b.pop("pods"))
    us = {k: (int(a[k]) - int(b[k])) * 1e6 / tck / pods for k in b}
    print(f'{config:<9} {pods / 10:>9.0f}  ' + ", ".join(f'{k} {v:.0f}' for k, v in us.items() if v >= 1)
          + f'; total {sum(us.values()):.0f}')
PY
log "done: figures in $out/"

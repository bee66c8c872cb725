#!/usr/bin/env bash
# `make bench-admission`: the admission path's figures, in one run (a benchmark, not a test).
#   1. criterion: one decision with 10,000 identities (benches/admission.rs);
#   2. load against the real HTTPS webhook (oha, from crates.io, cached) beside a webhook that
#      only parses the same ~5 KB body: throughput and p50/p99/p99.9 at 1,000 reviews/s and at
#      saturation;
#   3. pod creation through the real API server at 10 and 50 concurrent clients with no
#      admission policy, an equivalent ValidatingAdmissionPolicy, the parse-only webhook of 2
#      (what any webhook costs) and mandate's webhook.
# Results are printed and written to target/bench-admission/. BENCH_ROUNDS (5) and BENCH_PODS
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
kubectl create namespace "$ns_none" >/dev/null
kubectl create namespace "$ns_vap" >/dev/null
kubectl create namespace "$ns_noop" >/dev/null
kubectl create namespace "$ns_mandate" >/dev/null
kubectl label namespace "$ns_vap" "bench.mandate.dev/vap=$run" >/dev/null
# The same pods everywhere: the ServiceAccount admission plugin needs the account to exist.
kubectl create serviceaccount bench-agent -n "$ns_none" >/dev/null
kubectl create serviceaccount bench-agent -n "$ns_vap" >/dev/null
kubectl create serviceaccount bench-agent -n "$ns_noop" >/dev/null
kubectl label namespace "$ns_mandate" mandate.dev/mode=enforce >/dev/null
cleanup() {
  kubectl delete validatingadmissionpolicybinding "bench-$run" --ignore-not-found >/dev/null || true
  kubectl delete validatingadmissionpolicy "bench-$run" --ignore-not-found >/dev/null || true
  kubectl delete validatingwebhookconfiguration "bench-$run" --ignore-not-found >/dev/null || true
  kubectl delete namespace "$ns_none" "$ns_vap" "$ns_noop" "$ns_mandate" --wait=false >/dev/null 2>&1 || true
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
admin_port=18090 webhook_port=19445
target/release/mandate run --admin-addr 127.0.0.1:$admin_port --webhook-addr 127.0.0.1:$webhook_port \
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
# Warm-up, and proof that each configuration admits what it should and mandate refuses a stray pod.
target/release/bench_pod_create "$ns_mandate" 1 5 bench-agent >/dev/null
for i in $(seq 1 50); do curl -sk -o /dev/null https://127.0.0.1:19444/ && break; sleep 0.2; done
target/release/bench_pod_create "$ns_noop" 1 5 bench-agent >/dev/null
if target/release/bench_pod_create "$ns_mandate" 1 1 >/dev/null 2>&1; then
  echo "mandate admitted a pod without an identity: the benchmark is not measuring mandate" >&2
  exit 1
fi
# Rounds of 2,000 creates per configuration and concurrency, each round in a rotated order so
# drift hits each configuration alike. Pods are deleted after every round, so that no
# configuration runs against an API server holding more pods than another. The summary pools
# each configuration's latencies over all rounds (a p99 of 10,000 samples, not the median of
# five p99s of 2,000, each of which rests on its 20 slowest creates).
pods_per_run=${BENCH_PODS:-2000}
rounds=${BENCH_ROUNDS:-5}
configs=(none vap noop mandate)
: >"$out/pods.jsonl"
for round in $(seq 1 "$rounds"); do
  order=("${configs[@]:$(((round - 1) % 4))}" "${configs[@]:0:$(((round - 1) % 4))}")
  for clients in 10 50; do
    for config in "${order[@]}"; do
      ns_var=ns_$config
      result=$(target/release/bench_pod_create "${!ns_var}" "$clients" "$pods_per_run" bench-agent)
      echo "{\"config\": \"$config\", \"round\": $round, \"result\": $result}" >>"$out/pods.jsonl"
    done
  done
  for ns in "$ns_none" "$ns_vap" "$ns_noop" "$ns_mandate"; do
    kubectl delete --raw "/api/v1/namespaces/$ns/pods" >/dev/null
  done
  for i in $(seq 1 120); do
    left=0
    for ns in "$ns_none" "$ns_vap" "$ns_noop" "$ns_mandate"; do
      left=$((left + $(kubectl get --raw "/api/v1/namespaces/$ns/pods?limit=1" | python3 -c 'import json,sys; d=json.load(sys.stdin); print(len(d["items"]))')))
    done
    [[ $left == 0 ]] && break
    sleep 1
  done
done
python3 - "$out/pods.jsonl" <<'PY' | tee "$out/pods.txt"
import json, math, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, math.ceil(len(xs) * q) - 1))]
print(f'{"config":<9} {"clients":<8} {"p50_ms":>7} {"p99_ms":>7} {"creates/s":>10} {"p99/none":>9} {"p99-vap":>8}   p99 per round')
for clients in (10, 50):
    pooled = {}
    for config in ("none", "vap", "noop", "mandate"):
        rs = [r["result"] for r in rows if r["config"] == config and r["result"]["clients"] == clients]
        lat = [l for r in rs for l in r["latencies_ms"]]
        pooled[config] = (pct(lat, 0.50), pct(lat, 0.99), statistics.median(r["creates_per_second"] for r in rs), rs)
    for config, (p50, p99, rate, rs) in pooled.items():
        print(f'{config:<9} {clients:<8} {p50:>7.2f} {p99:>7.2f} {rate:>10.0f} {p99 / pooled["none"][1]:>8.2f}x {p99 - pooled["vap"][1]:>+7.1f}   '
              + ", ".join(f'{r["p99_ms"]:.1f}' for r in rs))
print("targets: mandate's p99 at most 1.10x none's and at most 5 ms above vap's")
PY
log "done: figures in $out/"

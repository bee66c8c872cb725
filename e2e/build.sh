#!/usr/bin/env bash
# Builds the local control plane (etcd, kube-apiserver, kube-controller-manager, kubectl) from
# the Kubernetes release pinned in e2e/controlplane/go.mod, and helm from helm.sh/helm, into a
# cache outside the repository keyed by version. Binaries already in the cache are reused, so
# only the first run on a machine pays for the build.
#
# Usage: e2e/build.sh            build what is missing, print the bin directory on the last line
#        e2e/build.sh --print    only print the bin directory
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=e2e/versions.sh
source "$here/versions.sh"

if [[ "${1:-}" == "--print" ]]; then
  echo "$MANDATE_E2E_BIN"
  exit 0
fi

mkdir -p "$MANDATE_E2E_BIN"
export CGO_ENABLED=0 GOTOOLCHAIN=local GOFLAGS=-mod=mod

log() { printf '[e2e/build] %s\n' "$*" >&2; }

k8s_ldflags() {
  local major minor pkg flags=""
  major=$(echo "$KUBE_VERSION" | sed -E 's/^v([0-9]+)\..*/\1/')
  minor=$(echo "$KUBE_VERSION" | sed -E 's/^v[0-9]+\.([0-9]+)\..*/\1/')
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    flags+=" -X $pkg.gitVersion=$KUBE_VERSION -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
    flags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
  done
  echo "-s -w$flags"
}

build_k8s() {
  local name=$1 pkg=$2 started
  if [[ -x "$MANDATE_E2E_BIN/$name" ]]; then
    log "$name $KUBE_VERSION: cached"
    return
  fi
  started=$(date +%s)
  log "$name $KUBE_VERSION: building (the first build takes a while on 2 cores)"
  (cd "$here/controlplane" &&
    go build -trimpath -ldflags "$(k8s_ldflags)" -o "$MANDATE_E2E_BIN/$name.tmp" "$pkg")
  mv "$MANDATE_E2E_BIN/$name.tmp" "$MANDATE_E2E_BIN/$name"
  log "$name: built in $(($(date +%s) - started))s"
}

build_helm() {
  local started gobin
  if [[ -x "$MANDATE_E2E_BIN/helm" ]]; then
    log "helm $HELM_VERSION: cached"
    return
  fi
  started=$(date +%s)
  log "helm $HELM_VERSION: building"
  # Helm stays out of the control-plane module: its client-go pin conflicts with the
  # staging replacements there, and it builds cleanly with go install.
  gobin=$(mktemp -d)
  GOFLAGS= GOBIN="$gobin" go install -trimpath \
    -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION -X helm.sh/helm/v3/internal/version.gitTreeState=clean" \
    "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
  mv "$gobin/helm" "$MANDATE_E2E_BIN/helm"
  rmdir "$gobin"
  log "helm: built in $(($(date +%s) - started))s"
}

build_k8s etcd go.etcd.io/etcd/server/v3
build_k8s kube-apiserver k8s.io/kubernetes/cmd/kube-apiserver
build_k8s kube-controller-manager k8s.io/kubernetes/cmd/kube-controller-manager
build_k8s kubectl k8s.io/kubernetes/cmd/kubectl
build_helm

echo "$MANDATE_E2E_BIN"

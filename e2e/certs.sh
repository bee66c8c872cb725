#!/usr/bin/env bash
# Certificates for the local control plane and for webhooks registered with clientConfig.url.
#
# Usage: e2e/certs.sh ca DIR                  a CA in DIR/ca.{crt,key} (kept if present)
#        e2e/certs.sh serving DIR NAME CA_DIR  DIR/NAME.{crt,key}: serving cert for 127.0.0.1,
#                                              ::1 and localhost, signed by CA_DIR/ca
#        e2e/certs.sh client DIR NAME CN ORG CA_DIR
#                                              DIR/NAME.{crt,key}: client cert (ORG may be "")
#
# Everything is openssl (present on the machine); keys are EC P-256, valid for a year.
set -euo pipefail

days=365

ca() {
  local dir=$1
  mkdir -p "$dir"
  [[ -s "$dir/ca.crt" && -s "$dir/ca.key" ]] && return 0
  openssl ecparam -name prime256v1 -genkey -noout -out "$dir/ca.key" 2>/dev/null
  openssl req -x509 -new -key "$dir/ca.key" -sha256 -days "$days" -subj "/CN=mandate-e2e-ca" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -out "$dir/ca.crt" 2>/dev/null
}

sign() {
  local dir=$1 name=$2 subj=$3 ext=$4 ca_dir=$5 conf
  mkdir -p "$dir"
  conf=$(mktemp)
  printf '%s\n' "$ext" >"$conf"
  openssl ecparam -name prime256v1 -genkey -noout -out "$dir/$name.key" 2>/dev/null
  openssl req -new -key "$dir/$name.key" -subj "$subj" -out "$dir/$name.csr" 2>/dev/null
  openssl x509 -req -in "$dir/$name.csr" -CA "$ca_dir/ca.crt" -CAkey "$ca_dir/ca.key" \
    -CAcreateserial -days "$days" -sha256 -extfile "$conf" -out "$dir/$name.crt" 2>/dev/null
  rm -f "$conf" "$dir/$name.csr"
}

serving() {
  local dir=$1 name=$2 ca_dir=$3
  sign "$dir" "$name" "/CN=$name" \
    "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,IP:::1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,IP:10.0.0.1" \
    "$ca_dir"
}

client() {
  local dir=$1 name=$2 cn=$3 org=$4 ca_dir=$5 subj
  subj="/CN=$cn"
  [[ -n "$org" ]] && subj="/O=$org$subj"
  sign "$dir" "$name" "$subj" \
    "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=clientAuth" \
    "$ca_dir"
}

cmd=${1:-}
shift || true
case "$cmd" in
  ca) ca "$@" ;;
  serving) serving "$@" ;;
  client) client "$@" ;;
  *)
    echo "usage: $0 ca DIR | serving DIR NAME CA_DIR | client DIR NAME CN ORG CA_DIR" >&2
    exit 2
    ;;
esac

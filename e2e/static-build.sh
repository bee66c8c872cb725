#!/usr/bin/env bash
# The Dockerfile's build step without a container engine: runs the exact `cargo build` command
# of the Dockerfile's builder stage (read from the Dockerfile) for the static musl target, then
# checks the binary is statically linked.
#
# Usage: e2e/static-build.sh           (TARGET=... to override, as the Dockerfile's ARG)
#
# The musl target cannot be downloaded on every machine. Without it this says so loudly and
# exits 0 (as `make test` treats a missing clippy); MANDATE_REQUIRE_STATIC=1 makes it an error.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "$here/.."

TARGET=${TARGET:-$(sed -n 's/^ARG TARGET=//p' Dockerfile | head -1)}
# The builder's command, e.g. cargo build --release --locked --target "$TARGET" --bin mandate
command=$(grep -o 'cargo build [^\\&]*' Dockerfile | head -1 | sed 's/[[:space:]]*$//')
if [[ -z "$TARGET" || -z "$command" ]]; then
  echo "e2e/static-build.sh: cannot find ARG TARGET or the cargo build command in Dockerfile" >&2
  exit 1
fi
echo "[static-build] Dockerfile command: $command (TARGET=$TARGET)"

sysroot=$(rustc --print sysroot)
if [[ ! -d "$sysroot/lib/rustlib/$TARGET/lib" ]]; then
  echo "!!!!! WARNING: the Rust target $TARGET is not installed (rustup target add $TARGET): SKIPPING the static build !!!!!"
  installed=$(for lib in "$sysroot"/lib/rustlib/*/lib; do basename "$(dirname "$lib")"; done | tr '\n' ' ')
  echo "!!!!! installed targets: ${installed}!!!!!"
  if [[ "${MANDATE_REQUIRE_STATIC:-}" == 1 ]]; then
    exit 1
  fi
  exit 0
fi

eval "$command"
binary=target/$TARGET/release/mandate
[[ -x "$binary" ]] || { echo "[static-build] $binary was not built" >&2; exit 1; }
if command -v readelf >/dev/null; then
  if readelf -l "$binary" | grep -q 'INTERP'; then
    echo "[static-build] $binary asks for a dynamic loader: not static" >&2
    exit 1
  fi
elif ldd "$binary" >/dev/null 2>&1; then
  echo "[static-build] ldd lists shared libraries for $binary: not static" >&2
  exit 1
fi
"$binary" --version
echo "[static-build] OK: $binary is a static binary"

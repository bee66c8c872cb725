# syntax=docker/dockerfile:1.7
# mandate: one static binary on distroless/static, non-root, no shell.
#
#   docker build -t mandate:dev .
#
# The builder's cargo command is the one e2e/static-build.sh runs (that script reads it from
# here), so the test suite exercises the image's build step without a container engine.

ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-alpine AS builder
# ring (TLS) compiles a little C and assembly: gcc and the musl headers.
RUN apk add --no-cache gcc musl-dev
ARG TARGET=x86_64-unknown-linux-musl
RUN rustup target add "$TARGET"
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --target "$TARGET" --bin mandate \
    && install -D -m 0755 "target/$TARGET/release/mandate" /out/mandate

FROM gcr.io/distroless/static:nonroot
COPY --from=builder /out/mandate /mandate
USER 65532:65532
# 8080: /metrics, /healthz, /readyz. 9443: the admission webhook (HTTPS).
EXPOSE 8080 9443
ENTRYPOINT ["/mandate"]
CMD ["run"]

# syntax=docker/dockerfile:1
# lb-l7-webhook, demo-server and demo-client in one small image that runs as a non-root user.
#
#   docker build -t lb-l7-webhook:dev .
#   kind load docker-image lb-l7-webhook:dev            # kind
#   k3d image import lb-l7-webhook:dev -c CLUSTER       # k3d
#
# The chart and deploy/ run `lb-l7-webhook serve ...`; the demo runs `demo-server` / `demo-client` (all on PATH).
# tests/dockerfile.rs checks that every path copied below and every binary built exists in the workspace, and CI
# lints this file with hadolint.

ARG RUST_VERSION=1.95

# --- build: release binaries (no protoc needed: crates/demo/build.rs compiles the protos in pure Rust) ---
FROM rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
# Only what the build reads: the workspace manifests, the three crates, the protos, the default policy the core
# embeds (include_str!), and the bench sources Cargo.toml names.
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY crates ./crates
COPY protos ./protos
COPY benches ./benches
COPY deploy/base/policy.yaml ./deploy/base/policy.yaml
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p lb-l7-webhook -p lb-l7-demo \
      --bin lb-l7-webhook --bin demo-server --bin demo-client \
 && mkdir -p /out \
 && cp target/release/lb-l7-webhook target/release/demo-server target/release/demo-client /out/

# --- run: glibc + libgcc, no shell, no package manager; user nonroot (65532) ---
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/ /usr/local/bin/
USER 65532:65532
# 8443: the webhook (HTTPS). 8080: /healthz, /readyz, /metrics.
EXPOSE 8443 8080
ENTRYPOINT ["/usr/local/bin/lb-l7-webhook"]
CMD ["serve"]

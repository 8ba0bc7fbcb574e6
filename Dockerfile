# The connector's binaries in one image: connector-ingress, connector-workers (every role and the
# admin commands), corelink-sign and snap-sign (development keys and signed requests), and
# paysafe-sim (the Paysafe API simulator). docker-compose.yml runs every service from it.
#
#   docker build -t connector:dev .
#
# Stage 1 builds with the workspace's locked dependencies; stage 2 is a slim Debian with only
# what the binaries need at run time: libssl3 (josekit and snap-sign link OpenSSL), the CA
# bundle, and curl for the health checks (and for operators inside the container).

# The workspace needs Rust 1.88 or later (rust-version in Cargo.toml); builder and runtime are
# both Debian bookworm so the glibc and OpenSSL the binaries link against are the same.
ARG RUST_VERSION=1
FROM rust:${RUST_VERSION}-bookworm AS builder
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends pkg-config libssl-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p connector-ingress -p connector-workers -p paysafe-sim \
       -p connector-evidence \
 && mkdir -p /out \
 && cp target/release/connector-ingress target/release/connector-workers \
       target/release/corelink-sign target/release/snap-sign target/release/paysafe-sim \
       target/release/connector-evidence /out/

FROM debian:bookworm-slim AS runtime
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ca-certificates libssl3 curl \
 && rm -rf /var/lib/apt/lists/*
# An unprivileged user. /var/lib/connector/dev belongs to it so that a named volume mounted
# there (the compose stack's development keys) starts out writable by it.
RUN groupadd --system --gid 10001 connector \
 && useradd --system --uid 10001 --gid connector --home-dir /var/lib/connector --shell /usr/sbin/nologin connector \
 && mkdir -p /etc/connector/examples /var/lib/connector/dev \
 && chown -R connector:connector /var/lib/connector
COPY --from=builder /out/ /usr/local/bin/
# Every option with its default and why it exists.
COPY config/ingress.example.toml config/workers.example.toml /etc/connector/examples/
USER connector
WORKDIR /var/lib/connector
# No entrypoint: each compose service names its binary, e.g.
#   connector-ingress --config /etc/connector/ingress.toml
#   connector-workers --config /etc/connector/workers.toml run --role apply
CMD ["connector-ingress", "--help"]

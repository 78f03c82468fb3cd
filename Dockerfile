# The runner image: `streaming-connector run --config /etc/connector/connector.yaml`.
# Multi-stage: build with the Rust toolchain and the C/protobuf tools librdkafka and the
# Pulsar client need, then copy the one binary onto a small Debian base with the TLS
# runtime and curl (the task definition's health check calls /healthz with it).
# Build for Fargate ARM64:  docker build --platform linux/arm64 -t streaming-connector .

FROM rust:1.95-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends protobuf-compiler cmake libssl-dev zlib1g-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p streaming-connector \
 && cp target/release/streaming-connector /streaming-connector

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libssl3 curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --no-create-home connector
COPY --from=build /streaming-connector /usr/local/bin/streaming-connector
USER 10001
EXPOSE 9898
ENTRYPOINT ["/usr/local/bin/streaming-connector"]
CMD ["run", "--config", "/etc/connector/connector.yaml"]

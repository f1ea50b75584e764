# syntax=docker/dockerfile:1
#
# The gateway's container image: built with the Rust toolchain of Cargo.toml's
# rust-version, run as a non-root user on a distroless base (glibc, CA
# certificates, nothing else: no shell, no package manager).
#
#   docker build -t iot-jobs-gateway .
#   docker run -p 50051:50051 -p 9464:9464 -p 8081:8081 \
#     -e GATEWAY_REGION=eu-west-1 iot-jobs-gateway
#
# tests/it/deploy/ runs this file's ENTRYPOINT, CMD and ENV (listen addresses
# moved to loopback) against the AWS IoT Jobs simulator.

# Debian 12 (bookworm), the same glibc as the run stage's base.
FROM rust:1.94.1-bookworm AS build
WORKDIR /src
# Only what the binary is built from: tests, docs and deploy files changing
# do not invalidate the build.
COPY Cargo.toml Cargo.lock build.rs ./
COPY proto ./proto
COPY src ./src
# The registry and target directories are BuildKit caches, so a rebuild after
# a source change recompiles the gateway, not its dependencies. The binary is
# copied out of the cache, which is not part of the image.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin iot-jobs-gateway \
    && cp target/release/iot-jobs-gateway /usr/local/bin/iot-jobs-gateway

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /usr/local/bin/iot-jobs-gateway /usr/local/bin/iot-jobs-gateway
# Inside a container the gateway listens on every interface; the ports are
# the ones deploy/kubernetes.yaml names (gRPC, metrics, plaintext health).
ENV GATEWAY_LISTEN=0.0.0.0:50051 \
    GATEWAY_METRICS_LISTEN=0.0.0.0:9464 \
    GATEWAY_HEALTH_LISTEN=0.0.0.0:8081 \
    GATEWAY_LOG_FORMAT=json
EXPOSE 50051 9464 8081
# uid 65532, as the manifest's runAsUser says.
USER nonroot:nonroot
ENTRYPOINT ["/usr/local/bin/iot-jobs-gateway"]
CMD ["serve"]

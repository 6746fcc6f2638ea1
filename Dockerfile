# Build image for the appliance firmware (x86-64, CPU only). The Jetson image is
# built the same way on an aarch64 builder. The result runs fully offline.
FROM rust:1.95-bookworm AS build
WORKDIR /src
RUN apt-get update && apt-get install -y --no-install-recommends cmake && rm -rf /var/lib/apt/lists/*
COPY . .
RUN cargo build --release -p cxr-appliance --features jpeg-ls

FROM debian:bookworm-slim
RUN useradd --system --home /var/lib/cxr cxr
COPY --from=build /src/target/release/cxr-appliance /usr/local/bin/cxr-appliance
USER cxr
ENTRYPOINT ["/usr/local/bin/cxr-appliance"]
CMD ["--help"]

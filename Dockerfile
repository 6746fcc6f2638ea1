# Build image for the appliance firmware (x86-64, CPU only). The Jetson image is
# built the same way on an aarch64 builder. The result runs fully offline.
FROM rust:1.95-bookworm AS build
WORKDIR /src
RUN apt-get update && apt-get install -y --no-install-recommends cmake && rm -rf /var/lib/apt/lists/*
COPY . .
# The firmware is fixed to the release profile at build time: release-signed
# bundles only, trust store in /etc/cxr-appliance/trust, state in
# /var/lib/cxr-appliance. Without the default features it carries no
# development profile or key and no test machinery, and it refuses
# --board, --board-file, CXR_BOARD, --state-dir and CXR_STATE_DIR.
ENV CXR_DEFAULT_BOARD=x86-release
RUN cargo build --release -p cxr-appliance --no-default-features --features firmware,jpeg-ls

FROM debian:bookworm-slim
RUN useradd --system --home /var/lib/cxr-appliance cxr \
    && mkdir -p /etc/cxr-appliance/trust /var/lib/cxr-appliance \
    && chown cxr /var/lib/cxr-appliance && chmod 700 /var/lib/cxr-appliance
# The release public keys (*.pub.toml from `cxr-trainer keygen --role release`)
# and revoked.toml belong in this read-only directory of the image.
COPY board-config/trust/ /etc/cxr-appliance/trust/
COPY --from=build /src/target/release/cxr-appliance /usr/local/bin/cxr-appliance
USER cxr
# The DICOM receiver (the x86-release profile's [serve] section). The
# profile's allow-list is empty until a site's image names its modalities.
EXPOSE 11112
# SIGTERM (docker stop) makes `serve` stop accepting, finish the transfers
# in progress, and flush; give it the time.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/cxr-appliance"]
CMD ["serve"]

# jamf-sync container image: a build stage with the Rust toolchain, a small Debian runtime.
#   docker build -t jamf-sync .
#   docker run -v jamf-sync:/var/lib/jamf-sync -p 9464:9464 \
#     -e JAMF_SYNC__JAMF__URL=https://example.jamfcloud.com -e JAMF_SYNC__JAMF__CLIENT_ID=... \
#     -e JAMF_SYNC__JAMF__CLIENT_SECRET_FILE=/run/secrets/jamf_client_secret jamf-sync
# Configuration comes from JAMF_SYNC__* variables (or a mounted TOML file via JAMF_SYNC_CONFIG);
# secrets from mounted files through the *_file keys.
#
# Base images: pin them by digest for reproducible, tamper-evident builds, e.g.
#   docker build --build-arg RUST_IMAGE=rust:1-bookworm@sha256:<digest> \
#     --build-arg RUNTIME_IMAGE=debian:bookworm-slim@sha256:<digest> -t jamf-sync .
# (`docker buildx imagetools inspect debian:bookworm-slim` prints the current digest). The
# container check in CI builds from a local base image by digest through the same argument.
ARG RUST_IMAGE=rust:1-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

FROM ${RUST_IMAGE} AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked && strip target/release/jamf-sync

FROM ${RUNTIME_IMAGE} AS runtime
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="jamf-sync" \
      org.opencontainers.image.description="Keeps an up-to-date copy of a Jamf Pro fleet's device inventory in PostgreSQL or SQLite" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="MIT OR Apache-2.0" \
      org.opencontainers.image.source="https://github.com/jamf-sync/jamf-sync"
# ca-certificates: TLS to Jamf and PostgreSQL is verified against the system roots.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --user-group --home-dir /var/lib/jamf-sync --shell /usr/sbin/nologin jamf-sync \
    && mkdir -p /var/lib/jamf-sync \
    && chown jamf-sync:jamf-sync /var/lib/jamf-sync \
    && chmod 0700 /var/lib/jamf-sync
COPY --from=build /src/target/release/jamf-sync /usr/local/bin/jamf-sync
USER 10001:10001
WORKDIR /var/lib/jamf-sync
VOLUME ["/var/lib/jamf-sync"]
# The SQLite default (sqlite://jamf-sync.db) is relative to WORKDIR: it lands in the volume.
# No database URL here: an environment variable would override a mounted config file's.
ENV JAMF_SYNC__SERVER__LISTEN=0.0.0.0:9464 \
    JAMF_SYNC__LOG__FORMAT=json
# 9464: /metrics, /healthz, /readyz, /status (and webhooks unless webhooks.listen moves them).
EXPOSE 9464
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["/usr/local/bin/jamf-sync", "healthcheck"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/jamf-sync"]
CMD ["run"]

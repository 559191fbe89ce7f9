# Minimal image; the deployment issue hardens it (distroless/non-root details, healthcheck).
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home /var/lib/jamf-sync jamf-sync \
    && mkdir -p /var/lib/jamf-sync && chown jamf-sync /var/lib/jamf-sync
COPY --from=build /src/target/release/jamf-sync /usr/local/bin/jamf-sync
USER jamf-sync
WORKDIR /var/lib/jamf-sync
VOLUME /var/lib/jamf-sync
ENV JAMF_SYNC__DATABASE__URL=sqlite:///var/lib/jamf-sync/jamf-sync.db \
    JAMF_SYNC__SERVER__LISTEN=0.0.0.0:9464 \
    JAMF_SYNC__LOG__FORMAT=json
EXPOSE 9464
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s CMD ["/usr/local/bin/jamf-sync", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/jamf-sync"]
CMD ["run"]

# cryptoworker container image: a scratch image with the stripped binary, the healthcheck probe
# and the three shared objects they load (about 6 MB), running as uid 65532. See deploy/README.md.
#
#   docker build -t cryptoworker .            (or: podman build --format docker -t cryptoworker .)
#
# HEALTHCHECK is part of the Docker image format only: with podman/buildah build with
# `--format docker`, or the OCI image silently drops it.
# deploy/container/Containerfile.prebuilt has the same runtime stage for a binary built on the
# host (used by scripts/test-container where base images cannot be pulled); keep them in step
# (the test compares them).

FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY crates ./crates
COPY migrations ./migrations
COPY bench/db_ingest.rs ./bench/db_ingest.rs
COPY deploy/container ./deploy/container
RUN cargo build --release --locked \
 && deploy/container/rootfs.sh target/release/cryptoworker /rootfs

# --- runtime stage (keep identical to deploy/container/Containerfile.prebuilt) ---
FROM scratch
COPY --from=build /rootfs /
USER 65532:65532
WORKDIR /var/lib/cryptoworker
ENV WORKER_HOST=0.0.0.0 WORKER_PORT=8082 DB_SPOOL_DIR=/var/lib/cryptoworker/spool
EXPOSE 8082
VOLUME ["/var/lib/cryptoworker/spool"]
HEALTHCHECK --interval=15s --timeout=5s --start-period=10s --retries=3 CMD ["/usr/local/bin/healthcheck"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/cryptoworker"]
CMD ["run"]

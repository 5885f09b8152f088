# Two-stage build: compile with the Rust toolchain, run on a slim Debian.
# (No Docker engine runs on the development machines; this file is kept simple and standard.)
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY migrations ./migrations
COPY bench/db_ingest.rs ./bench/db_ingest.rs
RUN cargo build --release --locked && strip target/release/cryptoworker

FROM debian:bookworm-slim
RUN useradd --system --home /var/lib/cryptoworker --create-home cryptoworker
COPY --from=build /src/target/release/cryptoworker /usr/local/bin/cryptoworker
USER cryptoworker
WORKDIR /var/lib/cryptoworker
ENV WORKER_HOST=0.0.0.0 WORKER_PORT=8082 DB_SPOOL_DIR=/var/lib/cryptoworker/spool
EXPOSE 8082
STOPSIGNAL SIGTERM
ENTRYPOINT ["cryptoworker"]
CMD ["run"]

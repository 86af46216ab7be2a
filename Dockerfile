# latchkey's production image: `docker build -t latchkey .`, or `docker compose up` (see
# docker-compose.yml and docs/DEPLOY.md). Plain Dockerfile syntax, no BuildKit-only features,
# so Docker with or without BuildKit, and podman, build it alike.
#
# The build stage's Rust is at least the workspace's rust-version and the newest one that the
# locked dependencies of the release build declare (scripts/docker-check fails otherwise).

FROM rust:1.95-bookworm AS build
WORKDIR /src

# The dependencies, in a layer of their own that is rebuilt only when a manifest or the lock
# file changes: the workspace's manifests with empty sources, built once.
COPY Cargo.toml Cargo.lock ./
COPY crates/latchkey-db/Cargo.toml crates/latchkey-db/
COPY crates/latchkey-sessions/Cargo.toml crates/latchkey-sessions/
COPY crates/latchkey-auth/Cargo.toml crates/latchkey-auth/
RUN mkdir -p src crates/latchkey-db/src crates/latchkey-sessions/src crates/latchkey-auth/src \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs crates/latchkey-db/src/lib.rs crates/latchkey-sessions/src/lib.rs \
        crates/latchkey-auth/src/lib.rs \
    && cargo build --release --locked \
    && rm -rf src crates/*/src

# The application. COPY keeps the files' own times, which may be older than the empty sources
# built above: touching the crate roots makes cargo rebuild the workspace's crates.
COPY . .
RUN touch src/main.rs src/lib.rs crates/*/src/lib.rs \
    && cargo build --release --locked \
    && cp target/release/latchkey /usr/local/bin/latchkey


FROM debian:bookworm-slim
# A user of its own, with a fixed id (for volume permissions and runAsNonRoot). /app/data is the
# one writable directory: the default SQLite database lives there when DATABASE_URL is unset.
RUN groupadd --system --gid 10001 latchkey \
    && useradd --system --uid 10001 --gid latchkey --home-dir /app --no-create-home \
        --shell /usr/sbin/nologin latchkey \
    && mkdir -p /app/data \
    && chown latchkey:latchkey /app/data
# Templates and migrations are built into the binary; the static files are served from disk.
COPY --from=build /usr/local/bin/latchkey /usr/local/bin/latchkey
COPY static /app/static
WORKDIR /app
ENV APP_ENV=production \
    BIND=0.0.0.0:8080 \
    STATIC_DIR=/app/static
USER 10001:10001
EXPOSE 8080
# latchkey drains requests in flight on SIGTERM, for up to SHUTDOWN_TIMEOUT (default 30s): give
# it longer than that before the engine kills it (stop_grace_period, docker stop --time).
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["latchkey", "healthcheck"]
CMD ["latchkey", "serve"]

# Multi-stage build: dependencies are compiled in their own layer, so a change
# to birdsong's code rebuilds only birdsong's crates.
FROM rust:1.95-bookworm AS build
# libsoxr: the resampler the audio crate links (librosa's own).
RUN apt-get update \
 && apt-get install -y --no-install-recommends libsoxr-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# 1. Manifests only, with empty crate roots: builds and caches dependencies.
COPY Cargo.toml Cargo.lock ./
COPY common/Cargo.toml common/
COPY audio/Cargo.toml audio/
COPY model/Cargo.toml model/
COPY s3local/Cargo.toml s3local/
COPY testkit/Cargo.toml testkit/
COPY ingest/Cargo.toml ingest/
COPY registry/Cargo.toml registry/
COPY bench/Cargo.toml bench/
COPY producer/Cargo.toml producer/
COPY worker/Cargo.toml worker/
COPY retrainer/Cargo.toml retrainer/
COPY api/Cargo.toml api/
RUN for d in common audio model s3local testkit ingest registry; do mkdir -p $d/src && echo "" > $d/src/lib.rs; done \
 && for d in producer worker retrainer api bench; do mkdir -p $d/src && echo "fn main() {}" > $d/src/main.rs; done \
 && mkdir -p migrations \
 && cargo build --release --workspace --bins 2>/dev/null || true
# 2. The real sources.
COPY . .
RUN touch common/src/lib.rs audio/src/lib.rs model/src/lib.rs s3local/src/lib.rs \
    ingest/src/lib.rs registry/src/lib.rs \
 && cargo build --release --workspace --bins \
 && mkdir /out \
 && find target/release -maxdepth 1 -type f -executable -name 'birdsong-*' -exec cp {} /out/ \;

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl libsoxr0 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 birdsong \
 && useradd --system --uid 10001 --gid birdsong --home-dir /var/lib/birdsong birdsong
COPY --from=build /out/ /usr/local/bin/
# Numeric, so that Kubernetes' runAsNonRoot can verify it (deploy/ runs the
# pods as 10001).
USER 10001:10001
ENTRYPOINT []
CMD ["birdsong-worker"]

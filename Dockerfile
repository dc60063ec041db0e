# The markov image: one executable, every role a subcommand (`markov gateway`, `markov trainer`, …).
#
#   docker build -t markov:local .
#   docker run --rm -e REDIS_URL=redis://host:6379 markov:local trainer
#
# Two stages: a Swift toolchain image compiles a release binary with the Swift runtime linked in statically,
# then a slim Debian image receives only that binary, its resource bundle and the C libraries it links.

# ---------------------------------------------------------------------------------------------------------
# Build stage
# ---------------------------------------------------------------------------------------------------------
FROM swift:6.3-bookworm AS build

# The system libraries the package links: hiredis (CHiredis) and libcurl (CCurl), which SwiftPM finds with
# pkg-config, and zlib, which compress-nio links for the gateway's compressed WebSocket.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libhiredis-dev libcurl4-openssl-dev zlib1g-dev pkg-config \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /src

# Resolve dependencies in their own layer, so editing a source file does not download them again.
# `Package.*` also picks up Package.resolved when the checkout has one.
COPY Package.* ./
RUN swift package resolve

COPY . .

# --static-swift-stdlib links the Swift runtime and Foundation into the binary, so the runtime image needs no
# Swift toolchain. The binary is left unstripped so crash backtraces keep their symbols.
# SwiftPM resource bundles are looked up next to the executable, so they are staged beside it:
# markov_MarkovChains.resources holds the Redis Functions library (ChainLibrary.lua), markov_LocalConsole.resources
# the web console's page (`markov up`).
RUN swift build -c release --product markov --static-swift-stdlib \
    && mkdir -p /staging \
    && cp .build/release/markov /staging/ \
    && cp -R .build/release/*.resources /staging/

# ---------------------------------------------------------------------------------------------------------
# Runtime stage
# ---------------------------------------------------------------------------------------------------------
FROM debian:bookworm-slim

# Only what the binary loads at run time: hiredis (Redis protocol parser), libcurl (Discord REST) and zlib
# (gateway compression), CA certificates for TLS to Discord, and time zone data. libstdc++ and libgcc come
# with the base image.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libhiredis0.14 libcurl4 zlib1g ca-certificates tzdata \
    && rm -rf /var/lib/apt/lists/*

# A fixed, numeric non-root user: Kubernetes' runAsNonRoot can only verify a numeric USER.
RUN groupadd --system --gid 10001 markov \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin markov

WORKDIR /app
COPY --from=build /staging/ /app/

# The address and port of /health, /ready and /metrics: every interface in a container, so that Prometheus and
# the platform's probes reach them (the default outside one is 127.0.0.1).
ENV MARKOV_HTTP_HOST=0.0.0.0
ENV MARKOV_HTTP_PORT=9090
EXPOSE 9090

USER 10001:10001

# Healthy while the role's /ready answers 200 (`markov probe` asks http://127.0.0.1:$MARKOV_HTTP_PORT/ready).
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 CMD ["/app/markov", "probe"]

# Every role handles SIGTERM (the default stop signal) and shuts down gracefully.
ENTRYPOINT ["/app/markov"]
CMD ["--help"]

# Tutti in a container: `docker build -t tutti .`, then see compose.yaml (a hub and a player).
# Run it with `network_mode: host` (compose.yaml does): mDNS discovery and multicast streams do
# not cross Docker's bridge and its NAT, and players time packets on the host's clock anyway.

# Build: the workspace's release binary (ALSA headers for cpal, cmake for libopus).
FROM rust:1.95-bookworm AS build
RUN apt-get update \
    && apt-get install -y --no-install-recommends libasound2-dev pkg-config cmake \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p tutti \
    && install -m 0755 target/release/tutti /usr/local/bin/tutti \
    && strip --strip-debug /usr/local/bin/tutti

# Run: the binary, ALSA's library (and its PulseAudio plugin, for a host's sound server
# shared into the container), as an unprivileged user in the audio group.
FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends libasound2 libasound2-plugins ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system tutti \
    && useradd --system --gid tutti --groups audio --home-dir /var/lib/tutti --no-create-home tutti \
    && install -d -o tutti -g tutti -m 0750 /var/lib/tutti
COPY --from=build /usr/local/bin/tutti /usr/bin/tutti
USER tutti
WORKDIR /var/lib/tutti
ENV TUTTI_PAIRING=/var/lib/tutti/pairing.json
VOLUME ["/var/lib/tutti"]
ENTRYPOINT ["/usr/bin/tutti"]
CMD ["serve", "--state", "/var/lib/tutti/hub.json"]

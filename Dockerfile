# wsbridge container image: Debian 12 (bookworm) slim, non-root, the binary and its runtime
# libraries only. Build from the repository root:
#   docker build -t wsbridge:0.1.0 .
# The Helm chart (helm/wsbridge) runs it with a read-only root filesystem; the preStop hook
# uses the base image's `sleep`.

FROM debian:bookworm-slim AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      build-essential cmake pkg-config \
      libevent-dev libssl-dev libjansson-dev libjwt-dev librdkafka-dev librabbitmq-dev zlib1g-dev libavro-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY CMakeLists.txt ./
COPY cmake/ cmake/
COPY clients/js/ clients/js/
COPY util/ util/
COPY config/ config/
COPY auth/ auth/
COPY connectors/ connectors/
COPY bridge/ bridge/
RUN cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DWSB_TESTS=OFF \
 && cmake --build build --target wsbridge -j"$(nproc)" \
 && strip build/wsbridge \
 && ./build/wsbridge --version

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      libevent-2.1-7 libevent-core-2.1-7 libevent-pthreads-2.1-7 libevent-openssl-2.1-7 \
      libjansson4 libjwt0 librdkafka1 librabbitmq4 libavro23 libssl3 zlib1g ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /etc/wsbridge
COPY --from=build /src/build/wsbridge /usr/local/bin/wsbridge
# 65532: an unprivileged id with no entry in /etc/passwd and no shell login (the chart's
# runAsUser).
USER 65532:65532
EXPOSE 8080 9090
ENTRYPOINT ["/usr/local/bin/wsbridge"]
CMD ["--config", "/etc/wsbridge/config/wsbridge.json"]

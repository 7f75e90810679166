#!/usr/bin/env bash
# Installs everything wsbridge needs to build, run and test, from Debian 12 packages.
# Idempotent; run as root.
set -euo pipefail

PKGS=(
  build-essential cmake pkg-config clang clang-format git ca-certificates curl
  libevent-dev libssl-dev libjansson-dev libjwt-dev librdkafka-dev librabbitmq-dev zlib1g-dev
  libcmocka-dev libclang-rt-14-dev
  python3 python3-pytest python3-websockets python3-jwt python3-pika python3-confluent-kafka
  python3-cryptography kcat rabbitmq-server procps
)

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

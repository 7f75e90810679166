#!/usr/bin/env bash
# Installs everything wsbridge needs to build, run and test, from Debian 12 packages.
# Idempotent; run as root.
set -euo pipefail

PKGS=(
  build-essential cmake pkg-config clang clang-format git ca-certificates curl
  libevent-dev libssl-dev libjansson-dev libjwt-dev librdkafka-dev librabbitmq-dev zlib1g-dev
  libavro-dev
  libcmocka-dev libclang-rt-14-dev
  python3 python3-pytest python3-websockets python3-jwt python3-pika python3-confluent-kafka
  python3-cryptography python3-avro kcat rabbitmq-server procps
  # tests/ops: the Helm chart rendered offline (Go text/template + sprig, values.schema.json
  # through gojsonschema as helm does), YAML, Prometheus text
  golang-go golang-github-masterminds-sprig-dev golang-gopkg-yaml.v2-dev
  golang-github-xeipuuv-gojsonschema-dev python3-yaml
  python3-prometheus-client
  # tests/integration/test_83_amqps: its throwaway CA and certificates
  openssl
  # tests/integration/test_90_browser: headless chromium, driven by playwright-core (npm)
  chromium
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

# npm packages, each folder pinned by its package-lock.json: tests/ops (Kubernetes API
# schemas (kubernetes-models) and a Dockerfile linter (dockerfilelint)), tests/browser
# (playwright-core, which drives Debian's chromium and downloads no browser). Node.js comes
# with the machine image; Debian's nodejs/npm are the fallback.
if ! command -v npm >/dev/null 2>&1 || ! command -v node >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
fi
root="$(cd "$(dirname "$0")/.." && pwd)"
for dir in "$root/tests/ops" "$root/tests/browser"; do
  if [ ! -f "$dir/node_modules/.wsb-stamp" ] || \
     [ "$dir/package-lock.json" -nt "$dir/node_modules/.wsb-stamp" ]; then
    echo "setup: npm ci in ${dir#"$root"/}"
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
    touch "$dir/node_modules/.wsb-stamp"
  fi
done

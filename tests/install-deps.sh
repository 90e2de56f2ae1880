#!/usr/bin/env bash
# Installs what building and testing the gateway needs on a fresh Debian or
# Ubuntu machine. Idempotent: installs only what is missing.
#   - cmake, a C toolchain, make, pkg-config: Pingora's zlib-ng and aws-lc
#     builds, jemalloc (the gateway's allocator)
#   - curl: the integration tests use it as a real client
#   - redis-server, redis-tools: fleet rate-limit tests start their own
#     Redis (and a six-node Redis Cluster, and a TLS one) on loopback ports
#   - iproute2: the multi-host tests make network namespaces (`ip netns`)
#   - haproxy: the client-address tests put one in front of the gateway
#     (`send-proxy`, `send-proxy-v2`)
#   - dnsmasq (Debian's dnsmasq-base: the binary without the system service,
#     so nothing starts or takes port 53): DNS discovery tests start their
#     own on a loopback port
#   - python3 with PyJWT and cryptography (Debian's python3-jwt,
#     python3-cryptography): the identity tests cross-check tokens with an
#     independent JWT implementation
#   - Rust (rustup, stable) when cargo is missing
set -euo pipefail

need=()
command -v cmake >/dev/null 2>&1 || need+=(cmake)
command -v cc >/dev/null 2>&1 || need+=(build-essential)
command -v make >/dev/null 2>&1 || need+=(make)   # jemalloc's build (tikv-jemalloc-sys)
command -v pkg-config >/dev/null 2>&1 || need+=(pkg-config)
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
[ -x /usr/sbin/haproxy ] || command -v haproxy >/dev/null 2>&1 || need+=(haproxy)
command -v dnsmasq >/dev/null 2>&1 || [ -x /usr/sbin/dnsmasq ] || need+=(dnsmasq-base)
[ -x /usr/sbin/ip ] || command -v ip >/dev/null 2>&1 || need+=(iproute2)   # network-namespace tests
command -v redis-cli >/dev/null 2>&1 || need+=(redis-tools)               # Redis Cluster tests
[ -e /etc/ssl/certs/ca-certificates.crt ] || need+=(ca-certificates)
# Debian's python3 (not a pyenv/venv one on PATH) is where python3-jwt lands.
if [ -x /usr/bin/python3 ]; then
  /usr/bin/python3 -c 'import jwt' >/dev/null 2>&1 || need+=(python3-jwt)
  /usr/bin/python3 -c 'import cryptography' >/dev/null 2>&1 || need+=(python3-cryptography)
else
  need+=(python3 python3-jwt python3-cryptography)
fi

if [ ${#need[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "install-deps: installing ${need[*]}" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
  if [ -x "$HOME/.cargo/bin/cargo" ]; then
    echo "install-deps: cargo is in ~/.cargo/bin; run: . \"\$HOME/.cargo/env\"" >&2
  else
    echo "install-deps: installing Rust with rustup" >&2
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal -c rustfmt,clippy
    echo "install-deps: now run: . \"\$HOME/.cargo/env\"" >&2
  fi
  exit 1
fi

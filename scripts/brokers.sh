#!/usr/bin/env bash
# Installs the local brokers the runner's tests use, only when missing:
# - tansu (Kafka protocol): `cargo install tansu --locked --features dynostore` into
#   $TOOLS_DIR (default ~/.cache/bronze-connector/tools, outside the clone, so a later CI
#   run reuses it). The first install compiles for about 11 minutes.
# - pulsar-lite (Pulsar protocol) and confluent-kafka come from requirements-dev.txt (.venv).
# The tests start and stop their own broker processes on free ports; this script only
# makes sure the binaries exist and prints where they are.
set -euo pipefail
cd "$(dirname "$0")/.."

# The `pulsar` crate's build compiles the Pulsar protocol with protoc.
if ! command -v protoc >/dev/null; then
  echo "installing protoc (Debian protobuf-compiler)"
  if [ "$(id -u)" = 0 ]; then apt-get install -y -q protobuf-compiler >/dev/null
  else sudo apt-get install -y -q protobuf-compiler >/dev/null; fi
fi
TOOLS_DIR="${TOOLS_DIR:-$HOME/.cache/bronze-connector/tools}"
TANSU_VERSION="${TANSU_VERSION:-0.6.0}"

tansu_bin="$TOOLS_DIR/bin/tansu"
if [ -x "$tansu_bin" ] && "$tansu_bin" --version 2>/dev/null | grep -q "$TANSU_VERSION"; then
  echo "tansu $TANSU_VERSION already installed at $tansu_bin"
elif command -v tansu >/dev/null && tansu --version 2>/dev/null | grep -q "$TANSU_VERSION"; then
  mkdir -p "$TOOLS_DIR/bin"
  ln -sf "$(command -v tansu)" "$tansu_bin"
  echo "tansu $TANSU_VERSION found on PATH, linked at $tansu_bin"
else
  echo "installing tansu $TANSU_VERSION into $TOOLS_DIR (first time: ~11 minutes)"
  # Its own target dir, outside the clone, so a retry resumes where it stopped.
  CARGO_TARGET_DIR="$TOOLS_DIR/target" cargo install tansu --version "$TANSU_VERSION" \
    --locked --features dynostore --root "$TOOLS_DIR"
  rm -rf "$TOOLS_DIR/target"
fi

pulsar_lite=".venv/lib/python3.11/site-packages/pulsar_lite/bin/pulsar-lite"
if [ ! -x "$pulsar_lite" ]; then
  pulsar_lite="$(.venv/bin/python -c 'import pulsar_lite, os; print(os.path.join(os.path.dirname(pulsar_lite.__file__), "bin", "pulsar-lite"))')"
fi
[ -x "$pulsar_lite" ] || { echo "pulsar-lite binary not found (make venv installs it)" >&2; exit 1; }
echo "pulsar-lite at $pulsar_lite"

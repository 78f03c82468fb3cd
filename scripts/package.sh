#!/usr/bin/env bash
# Builds the deployable Lambda artifacts of the three functions (the two consumers and the
# publisher): `cargo lambda build --arm64 --output-format zip` with Zig (PyPI
# ziglang) as the cross linker, then checks each bootstrap is an aarch64 ELF.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.venv/bin
"$venv/python" -c "import ziglang" 2>/dev/null || "$venv/pip" install --quiet ziglang
rustup target list --installed | grep -qx aarch64-unknown-linux-gnu || rustup target add aarch64-unknown-linux-gnu
# The consumers with the `lambda` profile (Cargo.toml): size-optimised except the crates a
# landing spends its CPU in, so less of the binary is resident (BENCHMARKS.md).
"$venv/cargo-lambda" lambda build --profile lambda --arm64 --output-format zip \
  --bin kinesis-consumer --bin kafka-consumer
# The publisher on its own, with the release profile (its CPU is Parquet, Arrow and zstd, all
# of it hot): built together, its dependencies (Arrow, Parquet, iceberg) could
# unify features of crates the consumers share with it.
"$venv/cargo-lambda" lambda build --release --arm64 --output-format zip --bin bronze-publisher
for fn in kinesis-consumer kafka-consumer bronze-publisher; do
  zip="${CARGO_TARGET_DIR:-target}/lambda/$fn/bootstrap.zip"
  [ -f "$zip" ] || { echo "missing $zip" >&2; exit 1; }
  "$venv/python" - "$zip" <<'PY'
import sys, zipfile
path = sys.argv[1]
with zipfile.ZipFile(path) as z:
    data = z.read("bootstrap")
# ELF header: magic, 64-bit class, e_machine at offset 18 (0xB7 = EM_AARCH64).
assert data[:4] == b"\x7fELF", f"{path}: bootstrap is not an ELF file"
assert data[4] == 2, f"{path}: bootstrap is not 64-bit"
machine = int.from_bytes(data[18:20], "little")
assert machine == 0xB7, f"{path}: bootstrap is for machine {machine:#x}, not aarch64"
print(f"{path}: aarch64 ELF bootstrap, {len(data)} bytes")
PY
done

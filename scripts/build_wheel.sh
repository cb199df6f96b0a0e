#!/usr/bin/env bash
# Builds keras-attn's binary wheels: one abi3 wheel per CPU (every CPython >= 3.10), tagged
# manylinux2014 (glibc 2.17 or later), with the release profile of Cargo.toml (thin LTO, one
# codegen unit, symbols stripped). Installing such a wheel needs no Rust toolchain.
#
#   bash scripts/build_wheel.sh                      # x86-64 wheel into dist/
#   bash scripts/build_wheel.sh --target aarch64     # 64-bit ARM wheel (cross-compiled)
#   bash scripts/build_wheel.sh --target all --out wheels
#
# The wheels are linked by Zig (the `ziglang` package from PyPI) against glibc 2.17's symbols, so
# that they run on older systems than the build machine. An aarch64 build also needs Rust's
# standard library for that target (`rustup target add aarch64-unknown-linux-gnu`, done here when
# rustup can); nothing else, as the core uses no C code.
set -euo pipefail
cd "$(dirname "$0")/.."

out=dist
targets=(x86_64)
while [[ $# -gt 0 ]]; do
    case "$1" in
        --out) out="$2"; shift 2 ;;
        --target)
            case "$2" in
                x86_64 | aarch64) targets=("$2") ;;
                all) targets=(x86_64 aarch64) ;;
                *) echo "build_wheel.sh: --target must be x86_64, aarch64 or all; got '$2'" >&2; exit 2 ;;
            esac
            shift 2 ;;
        *) echo "build_wheel.sh: unknown argument '$1' (expected --out DIR, --target ARCH)" >&2; exit 2 ;;
    esac
done

python -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
    "maturin>=1.7,<2" "ziglang>=0.13,<0.18"
mkdir -p "$out"
for arch in "${targets[@]}"; do
    triple="$arch-unknown-linux-gnu"
    if ! rustup target list --installed 2>/dev/null | grep -qx "$triple"; then
        rustup target add "$triple" || {
            echo "build_wheel.sh: Rust's standard library for $triple is missing and rustup" \
                "could not install it; see docs/deployment.md (Binary wheels)." >&2
            exit 1
        }
    fi
    rm -f "$out"/keras_attn-*-manylinux*_"$arch".whl
    python -m maturin build --release --quiet --zig --compatibility manylinux2014 \
        --target "$triple" --out "$out"
done
ls -l "$out"/keras_attn-*.whl

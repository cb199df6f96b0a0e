#!/usr/bin/env bash
# Installs keras-attn with its test extras (building the Rust core with maturin), builds the
# binary wheel, then runs the Rust tests, the whole Python suite on the TensorFlow backend (with
# the wheel installed in a fresh virtual environment without TensorFlow or cargo), and the layer
# tests once more on JAX.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install --upgrade --quiet pip
python -m pip install --quiet -e ".[test]"
cargo test --release --quiet
bash scripts/build_wheel.sh --out dist
KERAS_ATTN_WHEEL="$(ls dist/keras_attn-*-manylinux*_x86_64.whl)" \
    python -m pytest -q -p no:cacheprovider tests
KERAS_BACKEND=jax python -m pytest -q -p no:cacheprovider -m "not tf_only" tests/layers

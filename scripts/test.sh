#!/usr/bin/env bash
# Installs keras-attn with its test extras (building the Rust core with maturin) and with PyTorch
# and pytorchcv (whose models the weight conversion is checked against; about 3 GB of wheels the
# first time, as PyTorch's PyPI builds bring their CUDA libraries), then runs the
# Rust tests, clippy (warnings are errors), the Python suite on the TensorFlow backend, and once
# more on JAX the layer tests and those of the model tools (insert_attention, mobilenet,
# attention_maps, grad_cam; their export checks need TensorFlow and are marked tf_only).
# The Python tests run on every core (pytest-xdist; a test file stays on one worker, so the
# models a file exports once are shared by its tests; PYTEST_WORKERS=0 runs them without workers).
#
#   bash scripts/test.sh         # everything but the tests marked slow
#   bash scripts/test.sh --all   # the slow tests too: the complete set, as CI runs it (with the
#                                # x86-64 wheel built and run without TensorFlow, and the core
#                                # checked to compile for aarch64)
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in
  "") tensorflow=(-m "not slow"); jax=(-m "not tf_only and not slow"); all=0 ;;
  --all) tensorflow=(); jax=(-m "not tf_only"); all=1 ;;
  *) echo "usage: bash scripts/test.sh [--all]" >&2; exit 2 ;;
esac
python -m pip install --upgrade --quiet pip
python -m pip install --quiet -e ".[test,pytorchcv]"
cargo test --release --quiet
# Clippy's default lints, those for `unsafe` code among them (a missing `# Safety` section,
# dereferencing a raw-pointer argument of a safe function).
cargo clippy --release --quiet -p keras-attn-core --all-targets --features python -- -D warnings
if [[ $all == 1 ]]; then
  # ARM boards: the scalar and NEON kernels must at least compile for aarch64.
  # (The target's standard library comes from rustup's servers: where they cannot be reached,
  # the check is skipped with a note rather than failing the run.)
  if rustup target list --installed | grep -qx aarch64-unknown-linux-gnu \
      || rustup target add aarch64-unknown-linux-gnu; then
    cargo check --release --quiet -p keras-attn-core --target aarch64-unknown-linux-gnu
  else
    echo "note: the aarch64 Rust target could not be installed; aarch64 compile check skipped" >&2
  fi
fi
workers=(-n "${PYTEST_WORKERS:-auto}" --dist loadfile)
python -m pytest -q -p no:cacheprovider "${workers[@]}" "${tensorflow[@]}" tests
KERAS_BACKEND=jax python -m pytest -q -p no:cacheprovider "${workers[@]}" "${jax[@]}" tests/layers \
  tests/test_insert_attention.py tests/test_mobilenet.py tests/test_attention_maps.py \
  tests/test_grad_cam.py

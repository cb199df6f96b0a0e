"""The C example (examples/c/run_fused.c): built against the crate's C library and LiteRT's,
it runs a fused model and prints what `keras_attn.edge.Runtime` computes."""

import os
import shutil
import subprocess

import numpy as np
import pytest

keras = pytest.importorskip("keras")
pytest.importorskip("ai_edge_litert", reason="the example links ai-edge-litert's libLiteRt.so")

import keras_attn  # noqa: E402
from keras_attn import edge  # noqa: E402
from keras_attn.export import to_tflite  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMPILER = shutil.which("cc") or shutil.which("gcc")


@pytest.mark.skipif(COMPILER is None or shutil.which("cargo") is None,
                    reason="building the C example needs a C compiler and cargo")
def test_c_example_runs_a_fused_model(tmp_path):
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "keras-attn-core"], cwd=ROOT,
                   check=True, timeout=600)
    crate_lib = os.path.join(ROOT, "target", "release")
    litert_lib = os.path.dirname(edge.litert_library())
    program = tmp_path / "run_fused"
    subprocess.run(
        [COMPILER, "-O2", "-Wall", "-Werror", "-I", os.path.join(ROOT, "include"),
         os.path.join(ROOT, "examples", "c", "run_fused.c"), "-o", str(program),
         f"-L{crate_lib}", "-lkeras_attn_core", f"-L{litert_lib}", "-l:libLiteRt.so",
         f"-Wl,-rpath,{crate_lib}", f"-Wl,-rpath,{litert_lib}", "-lm"],
        check=True, timeout=120,
    )
    inputs = keras.Input((7, 9, 5), batch_size=2)
    h = keras.layers.Conv2D(5, 3, padding="same")(inputs)
    model = keras.Model(inputs, keras_attn.BAM(reduction_ratio=2)(keras_attn.CBAM(2)(h)))
    path = str(tmp_path / "fused.tflite")
    to_tflite(model, path, fused_attention=True, batch_size=2)

    result = subprocess.run([str(program), path, "1"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    printed = np.array([float(v) for v in result.stdout.split()], np.float32)
    x = np.sin(0.1 * np.arange(2 * 7 * 9 * 5, dtype=np.float32)).reshape(2, 7, 9, 5)
    want = edge.Runtime(path, threads=1)(x)
    np.testing.assert_allclose(printed, want.ravel(), atol=1e-6, rtol=1e-6)
    np.testing.assert_allclose(want, np.asarray(model(x, training=False)), atol=1e-5, rtol=0)
    # int8 gate weights, as edge.Runtime(gate_weights="int8") computes them.
    result = subprocess.run([str(program), path, "1", "int8-gates"], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    printed = np.array([float(v) for v in result.stdout.split()], np.float32)
    int8_gates = edge.Runtime(path, threads=1, gate_weights="int8")(x)
    assert not np.array_equal(int8_gates, want)
    np.testing.assert_allclose(printed, int8_gates.ravel(), atol=1e-6, rtol=1e-6)

    # The same C function registers the int8 kernels: an int8 model with float I/O runs as is.
    path = str(tmp_path / "fused_int8.tflite")
    data = np.random.default_rng(0).normal(size=(8, 7, 9, 5)).astype(np.float32)
    to_tflite(model, path, "int8", representative_data=data, fused_attention=True, batch_size=2)
    result = subprocess.run([str(program), path, "1"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    printed = np.array([float(v) for v in result.stdout.split()], np.float32)
    np.testing.assert_allclose(printed, edge.Runtime(path, threads=1)(x).ravel(), atol=1e-6,
                               rtol=1e-6)

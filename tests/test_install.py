"""The runtime without TensorFlow: `keras_attn.edge` and `keras_attn.kernels` import neither
TensorFlow nor Keras, the layers still load lazily, and the binary wheel runs a fused model in a
fresh virtual environment that holds only NumPy, LiteRT and the wheel."""

import glob
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

keras = pytest.importorskip("keras")
pytest.importorskip("ai_edge_litert", reason="keras_attn.edge runs models in ai-edge-litert")

import keras_attn  # noqa: E402
from keras_attn.export import to_tflite  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The folder holding the `keras_attn` package this test session imports (the source tree in an
# editable install), for subprocesses started from outside the repository.
PACKAGE_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(keras_attn.__file__)))

# Run by a subprocess: loads the fused model with `keras_attn.edge`, checks a kernel against
# NumPy, and reports the output and which heavy frameworks ended up in `sys.modules`.
EDGE_SCRIPT = """
import json, sys
import numpy as np
import keras_attn, keras_attn.edge, keras_attn.kernels

model_path, x_path, out_path = sys.argv[1:4]
x = np.load(x_path)
run = keras_attn.edge.Runtime(model_path, threads=1)
np.save(out_path, run(x))
mean, peak = keras_attn.kernels.channel_pool(x)
np.testing.assert_allclose(mean, x.mean(axis=(1, 2)), atol=1e-5)
np.testing.assert_array_equal(peak, x.max(axis=(1, 2)))
print(json.dumps({
    "heavy": sorted({m.split(".")[0] for m in sys.modules} & {"tensorflow", "keras", "jax"}),
    "package": keras_attn.__file__,
    "version": keras_attn.__version__,
}))
"""


def _clean_env(path):
    """The environment for a subprocess: our PATH, and no PYTHONPATH or Keras backend choice."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "KERAS_BACKEND")}
    env["PATH"] = path
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    return env


def _run(cmd, cwd, env, timeout=600):
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{cmd} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def fused_model(tmp_path_factory):
    """(path of a fused CBAM `.tflite`, path of an input `.npy`, the Keras model's output)."""
    folder = tmp_path_factory.mktemp("install")
    inputs = keras.Input((8, 8, 16), batch_size=1)
    h = keras.layers.Conv2D(16, 3, padding="same")(inputs)
    model = keras.Model(inputs, keras_attn.CBAM(reduction_ratio=4)(h))
    x = np.random.default_rng(0).normal(size=(1, 8, 8, 16)).astype("float32")
    path = str(folder / "cbam_fused.tflite")
    to_tflite(model, path, fused_attention=True, batch_size=1)
    x_path = str(folder / "x.npy")
    np.save(x_path, x)
    return path, x_path, np.asarray(model(x, training=False))


def _check_edge_run(python, fused_model, cwd, env):
    path, x_path, want = fused_model
    out_path = os.path.join(cwd, "y.npy")
    report = json.loads(
        _run([python, "-c", EDGE_SCRIPT, path, x_path, out_path], cwd, env).splitlines()[-1]
    )
    assert report["heavy"] == []
    np.testing.assert_allclose(np.load(out_path), want, atol=1e-5, rtol=0)
    return report


def test_edge_and_kernels_import_neither_tensorflow_nor_keras(fused_model, tmp_path):
    env = _clean_env(os.environ["PATH"])
    env["PYTHONPATH"] = PACKAGE_PARENT
    report = _check_edge_run(sys.executable, fused_model, str(tmp_path), env)
    assert report["version"] == keras_attn.__version__


def test_layers_load_on_first_use_and_register_for_keras_files(tmp_path):
    model = keras.Sequential([keras.Input((6, 6, 4)), keras_attn.CBAM(reduction_ratio=2)])
    path = str(tmp_path / "cbam.keras")
    model.save(path)
    script = (
        "import sys, keras, keras_attn\n"
        "model = keras.saving.load_model(sys.argv[1])\n"
        "assert type(model.layers[0]) is keras_attn.CBAM, model.layers\n"
        "assert keras_attn.get_attention('bam') is keras_attn.layers.BAM\n"
        "assert keras_attn.export.to_tflite is not None and 'CBAM' in dir(keras_attn)\n"
    )
    env = _clean_env(os.environ["PATH"])
    env["PYTHONPATH"] = PACKAGE_PARENT
    _run([sys.executable, "-c", script, path], str(tmp_path), env)
    # Keras imported after keras_attn: the layers register then, without being touched.
    keras_second = (
        "import sys, keras_attn\n"
        "assert 'keras' not in sys.modules\n"
        "import keras\n"
        "model = keras.saving.load_model(sys.argv[1])\n"
        "assert type(model.layers[0]).__name__ == 'CBAM', model.layers\n"
    )
    _run([sys.executable, "-c", keras_second, path], str(tmp_path), env)
    with pytest.raises(AttributeError, match="no attribute 'CBAMM'"):
        keras_attn.CBAMM  # noqa: B018


def _wheel(tmp_path_factory):
    """The x86-64 wheel: the one `KERAS_ATTN_WHEEL` names (already built), else built here."""
    if os.environ.get("KERAS_ATTN_WHEEL"):
        return os.environ["KERAS_ATTN_WHEEL"]
    out = tmp_path_factory.mktemp("wheel")
    _run(["bash", os.path.join(ROOT, "scripts", "build_wheel.sh"), "--out", str(out)], ROOT,
         dict(os.environ), timeout=1800)
    (wheel,) = glob.glob(str(out / "*.whl"))
    return wheel


@pytest.mark.slow
def test_wheel_runs_fused_model_in_venv_without_tensorflow(fused_model, tmp_path_factory):
    wheel = _wheel(tmp_path_factory)
    name = os.path.basename(wheel)
    python_tag, abi_tag, platform_tags = name[: -len(".whl")].split("-")[-3:]
    assert (python_tag, abi_tag) == ("cp310", "abi3"), name
    assert all(t.startswith("manylinux") and t.endswith("_x86_64") for t in platform_tags.split(".")), name
    folder = tmp_path_factory.mktemp("venv")
    venv = str(folder / "venv")
    _run([sys.executable, "-m", "venv", venv], str(folder), _clean_env(os.environ["PATH"]))
    python = os.path.join(venv, "bin", "python")
    # No Rust toolchain on PATH: the wheel must install without compiling anything.
    path = os.pathsep.join([os.path.join(venv, "bin"), "/usr/bin", "/bin"])
    assert shutil.which("cargo", path=path) is None and shutil.which("rustc", path=path) is None
    env = _clean_env(path)
    pip = [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    _run([*pip, "numpy", "ai-edge-litert"], str(folder), env)
    _run([*pip, "--no-deps", wheel], str(folder), env)
    check = "import importlib.util as u; print([m for m in ('tensorflow', 'keras') if u.find_spec(m)])"
    assert _run([python, "-c", check], str(folder), env).strip() == "[]"
    report = _check_edge_run(python, fused_model, str(folder), env)
    assert report["package"].startswith(venv), report["package"]

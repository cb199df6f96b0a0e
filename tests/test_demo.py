"""`keras-attn demo`: a reduced run (--quick: 400 digits at 16x16, one epoch) writes every
artifact under --out, prints both tables, and its LiteRT models agree with Keras."""

import json
import os
import subprocess
import sys

import pytest

from keras_attn import logs

pytestmark = [pytest.mark.tf_only, pytest.mark.slow]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """The demo as a user runs it: its own process, stdout and stderr as they would see them."""
    out = tmp_path_factory.mktemp("demo") / "out"
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    done = subprocess.run(
        [sys.executable, "-m", "keras_attn", "demo", "--out", str(out), "--quick"],
        capture_output=True, text=True, timeout=600, env=env,
    )
    assert done.returncode == 0, done.stderr
    with open(out / "results.json") as f:
        return out, done.stdout, json.load(f), done.stderr


def test_no_tensorflow_or_litert_log_lines(demo):
    *_, stderr = demo
    native = [line for line in stderr.splitlines() if logs.is_native_log_line(line.encode())]
    assert native == []
    assert "cuInit" not in stderr and "XNNPACK delegate" not in stderr


def test_writes_everything_under_out(demo):
    out, *_ = demo
    for name in ("plain", "cbam", "bam"):
        assert (out / "models" / f"{name}.keras").stat().st_size > 0
        assert (out / "saved_model" / name / "saved_model.pb").exists()
        for quantization in ("float32", "int8"):
            assert (out / "tflite" / f"{name}_{quantization}.tflite").read_bytes()[4:8] == b"TFL3"
    assert (out / "attention_maps.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_prints_both_tables(demo):
    _, printed, results, _ = demo
    for text in ("no attention", "CBAM", "BAM", "params", "test accuracy", "train step (ms)",
                 "agrees w/ Keras", "cosine w/ Keras", "int8", "float32"):
        assert text in printed
    assert f"{results['models']['cbam']['params']:,}" in printed


def test_litert_models_match_keras(demo):
    _, _, results, _ = demo
    assert (results["image_size"], results["epochs"]) == (16, 1)
    for name, model in results["models"].items():
        assert model["keras_reload_max_abs_diff"] < 1e-6, name
        assert model["params"] > 0 and model["train_step_ms"] > 0
        f32, int8 = model["litert_float32"], model["litert_int8"]
        assert f32["max_abs_diff"] < 1e-4 and f32["agreement"] == 1.0, name
        assert f32["cosine"] > 0.99999 and 0.9 < int8["cosine"] <= 1.0 + 1e-9, name
        assert f32["accuracy"] == pytest.approx(model["accuracy"])
        assert f32["fully_delegated"] and int8["fully_delegated"], name
        assert int8["size_bytes"] < f32["size_bytes"] / 1.5, name
    # Attention adds parameters: the channel MLPs (CBAM), the gates' convolutions (BAM).
    params = {name: m["params"] for name, m in results["models"].items()}
    assert params["plain"] < params["cbam"] < params["bam"]


def test_python_m_entry_point_and_bad_epochs(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "keras_attn", "demo", "--epochs", "0", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 2
    assert done.stderr.splitlines()[-1].endswith("--epochs must be at least 1; got 0")
    assert not any(logs.is_native_log_line(line.encode()) for line in done.stderr.splitlines())
    assert os.listdir(tmp_path) == []


def test_bench_subcommand_hands_its_options_to_the_benchmark(monkeypatch):
    import keras_attn.bench
    from keras_attn import cli

    received = []
    monkeypatch.setattr(keras_attn.bench, "main",
                        lambda argv, prog: received.append((argv, prog)) or 7)
    assert cli.main(["bench", "--out", "b", "--quick"]) == 7
    assert received == [(["--out", "b", "--quick"], "keras-attn bench")]

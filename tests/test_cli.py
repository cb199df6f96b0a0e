"""The `keras-attn` command and what a new user meets first: a clear error for a checkout
without its compiled core, and quiet output (no TensorFlow or LiteRT C++ log lines)."""

import os
import shutil
import subprocess
import sys

import pytest

import keras_attn
from keras_attn import logs

PACKAGE = os.path.dirname(keras_attn.__file__)


def test_checkout_without_compiled_core_says_what_to_do(tmp_path):
    shutil.copytree(PACKAGE, tmp_path / "keras_attn",
                    ignore=shutil.ignore_patterns("*.so", "*.pyd", "__pycache__"))
    done = subprocess.run([sys.executable, "-c", "import keras_attn"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, PYTHONPATH=""))
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("ModuleNotFoundError: keras_attn was imported from ")
    assert str(tmp_path / "keras_attn") in last
    assert "pip install -e ." in last and "run Python from another folder" in last


@pytest.mark.parametrize("line", [
    b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    b"I0000 00:00:1796312890.100226   22624 port.cc:153] oneDNN custom operations are on.",
    b"E0000 00:00:1796312935.412053   22624 cuda_platform.cc:52] failed call to cuInit: INTERNAL",
    b"W1203 10:11:12.123456    7 tf_tfl_flatbuffer_helpers.cc:364] Ignored output_format.",
    b"To enable the following instructions: AVX2 AVX512F FMA, in other operations, rebuild",
    b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.",
    b"WARNING: [npu_registry.cc:34] NPU accelerator could not be loaded and registered.",
    b"fully_quantize: 0, inference_type: 6, input_inference_type: FLOAT32",
])
def test_native_log_lines_are_recognised(line):
    assert logs.is_native_log_line(line)


@pytest.mark.parametrize("line", [
    b"F0000 00:00:1796312935.412053   22624 op.cc:52] Check failed: fatal lines stay",
    b"ERROR: Didn't find op for builtin opcode 'CONV_2D'",
    b"Traceback (most recent call last):",
    b"Fatal Python error: Segmentation fault",
    b"UserWarning: INFO: in the middle of a line",
])
def test_other_lines_are_kept(line):
    assert not logs.is_native_log_line(line)


def test_bench_report_is_one_table_per_thread_count_with_full_reasons():
    from keras_attn import bench

    reason = "ValueError: the converter refused the op because it needs a Flex kernel."
    records = [
        dict(op="cbam", shape=[1, 8, 8, 4], data_format="channels_last", threads=t, peer=peer,
             median_s=None if peer == "litert" else 1e-4 * (k + 1), min_s=None, map_bytes=1024,
             read_probe_s=1e-5, **({"error": reason} if peer == "litert" else {}))
        for t in (1, 2) for k, peer in enumerate(bench.PEERS)
    ]
    report = bench.tables(records)
    assert report.count("| op | shape |") == 2
    assert "target" not in report.lower() and "issue" not in report.lower()
    assert report.count(f"- LiteRT XNNPACK, cbam: {reason}\n") == 1  # whole, once, below


def test_bench_help_names_the_subcommand(capsys):
    from keras_attn import cli

    with pytest.raises(SystemExit):
        cli.main(["bench", "--help"])
    assert capsys.readouterr().out.startswith("usage: keras-attn bench ")


def _run_python(code, timeout=300):
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=timeout, env=env)


def test_help_is_quick_and_imports_no_tensorflow():
    done = _run_python(
        "import sys\n"
        "from keras_attn.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "print(sorted({'tensorflow', 'keras', 'ai_edge_litert'} & set(sys.modules)))\n"
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: keras-attn ")
    assert done.stdout.splitlines()[-1] == "[]"
    assert done.stderr == ""


@pytest.mark.tf_only
def test_quiet_drops_native_logs_and_keeps_python_output(tmp_path):
    done = _run_python(
        "from keras_attn import logs\n"
        "assert logs.quiet()\n"
        "import os, warnings\n"
        "import keras, numpy as np\n"
        "from keras_attn.export import LiteRTModel, to_tflite\n"
        "model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])\n"
        f"report = to_tflite(model, {str(tmp_path / 'm.tflite')!r})\n"
        "LiteRTModel(report.path)(np.ones((1, 4), 'float32'))\n"
        "warnings.warn('a Python warning stays')\n"
        "os.write(2, b'a native line that is not a log line stays\\n')\n"
    )
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    assert [line for line in lines if logs.is_native_log_line(line.encode())] == []
    assert "UserWarning: a Python warning stays" in done.stderr
    assert lines[-1] == "a native line that is not a log line stays"
    assert len(lines) <= 4, done.stderr


def test_filter_passes_other_lines_in_order_and_a_last_partial_line(tmp_path):
    source = os.pipe()
    out = tmp_path / "stderr"
    os.write(source[1], b"kept 1\nINFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n"
                        b"I0000 00:00:1796312890.100226   22624 port.cc:153] oneDNN\n"
                        b"kept 2\nno newline at the end")
    os.close(source[1])
    with open(out, "wb") as f:
        logs._filter(source[0], f.fileno())
    os.close(source[0])
    assert out.read_bytes() == b"kept 1\nkept 2\nno newline at the end"


def test_verbose_leaves_stderr_alone():
    # Another test in this process may have installed the filter already: verbose changes
    # nothing either way, and says whether it is on.
    stderr, installed = sys.stderr, logs._installed
    fd2 = os.fstat(2)
    assert logs.quiet(verbose=True) is installed
    assert sys.stderr is stderr
    assert (os.fstat(2).st_dev, os.fstat(2).st_ino) == (fd2.st_dev, fd2.st_ino)

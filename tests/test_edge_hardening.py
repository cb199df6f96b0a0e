"""Corrupted and hostile `.tflite` files: `keras_attn.edge.Runtime` and `read_tflite` raise
`ValueError` for each, and never crash the process (each file of the corpus is loaded in a
child process, so that a signal or an abort would be seen)."""

import json
import os
import random
import subprocess
import sys
import textwrap

import numpy as np
import pytest

keras = pytest.importorskip("keras")
pytest.importorskip("ai_edge_litert", reason="keras_attn.edge runs models in ai-edge-litert")

import keras_attn  # noqa: E402
from keras_attn import _rust, edge  # noqa: E402
from keras_attn.export import read_tflite, to_tflite  # noqa: E402
from keras_attn.export.flatbuffer import flatbuffer_utils  # noqa: E402
from keras_attn.export.fused import align_buffers  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def fused(tmp_path_factory):
    """name -> path of a small fused model (one CBAM, one SE node; one int8 CBAM node after a
    convolution, with int8 input and output)."""
    folder = tmp_path_factory.mktemp("hardening")
    paths = {}
    for name, block, shape in [
        ("cbam", keras_attn.CBAM(reduction_ratio=2, kernel_size=3), (5, 5, 4)),
        ("se", keras_attn.SqueezeExcite(reduction_ratio=2), (4, 4, 4)),
    ]:
        inputs = keras.Input(shape, batch_size=1)
        model = keras.Model(inputs, block(inputs))
        paths[name] = str(folder / f"{name}.tflite")
        to_tflite(model, paths[name], fused_attention=True, batch_size=1)
    keras.utils.set_random_seed(3)
    inputs = keras.Input((5, 6, 8), batch_size=1)
    h = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(inputs)
    model = keras.Model(inputs, keras_attn.CBAM(reduction_ratio=2, kernel_size=3)(h))
    paths["cbam_int8"] = str(folder / "cbam_int8.tflite")
    data = np.random.default_rng(0).uniform(-1, 1, size=(8, 5, 6, 8)).astype("float32")
    to_tflite(model, paths["cbam_int8"], "int8", representative_data=data, io_dtype="int8",
              fused_attention=True, batch_size=1)
    return paths


def _rewrite(path, out, change):
    """Writes `path` with `change(model)` applied to its object-API model to `out`."""
    fbu = flatbuffer_utils()
    with open(path, "rb") as f:
        model = fbu.read_model_from_bytearray(bytearray(f.read()))
    change(model)
    with open(out, "wb") as f:
        f.write(align_buffers(bytes(fbu.convert_object_to_bytearray(model))))
    return str(out)


def _oversized_input(model):
    model.subgraphs[0].tensors[0].shape = np.array([1, 1 << 20, 1 << 20, 4], np.int32)


def _short_weight_buffer(model):
    # A constant whose buffer holds fewer bytes than its shape needs.
    graph = model.subgraphs[0]
    tensor = next(t for t in graph.tensors if t.buffer and model.buffers[t.buffer].data is not None)
    model.buffers[tensor.buffer].data = model.buffers[tensor.buffer].data[:-4]


def _op_input_out_of_range(model):
    op = model.subgraphs[0].operators[0]
    op.inputs = np.array(op.inputs, np.int32)
    op.inputs[1] = len(model.subgraphs[0].tensors) + 3


def _signature_names_a_weight(model):
    model.signatureDefs[0].inputs[0].tensorIndex = 1


def _bad_opcode_index(model):
    model.subgraphs[0].operators[0].opcodeIndex = 7


def _se_weights_for_half_the_channels(model):
    # Weights consistent with each other (2 -> 2 -> 2), for a map of 4 channels.
    graph = model.subgraphs[0]
    op = graph.operators[0]
    for index, shape in zip(op.inputs[1:5], [(2, 2), (2,), (2, 2), (2,)]):
        tensor = graph.tensors[index]
        tensor.shape = np.array(shape, np.int32)
        values = np.full(shape, 0.5, np.float32)
        model.buffers[tensor.buffer].data = np.frombuffer(values.tobytes(), np.uint8)


def _int8_op(model):
    operators = model.subgraphs[0].operators
    (op,) = [o for o in operators if model.operatorCodes[o.opcodeIndex].customCode]
    return op


def _set_quantization_vector(index, value):
    """A change that sets value `index` of the int8 op's quantization vector."""

    def change(model):
        tensor = model.subgraphs[0].tensors[_int8_op(model).inputs[-2]]
        values = np.frombuffer(bytes(model.buffers[tensor.buffer].data), np.float32).copy()
        values[index] = value
        model.buffers[tensor.buffer].data = np.frombuffer(values.tobytes(), np.uint8)

    return change


def _set_tensor_quantization(role, field, value):
    """A change that sets the scale or zero point of the int8 op's map or output tensor."""

    def change(model):
        op = _int8_op(model)
        tensor = model.subgraphs[0].tensors[op.inputs[0] if role == "map" else op.outputs[0]]
        values = getattr(tensor.quantization, field).copy()
        values[0] = value
        setattr(tensor.quantization, field, values)

    return change


def _set_option(key, value):
    from flatbuffers import flexbuffers

    def change(model):
        op = _int8_op(model)
        options = flexbuffers.Loads(bytes(op.customOptions))
        options[key] = value
        op.customOptions = list(flexbuffers.Dumps(options))

    return change


def _vector_and_options_disagree_with_the_map(model):
    # Consistent with each other, not with the map tensor the builtin ops quantize.
    _set_quantization_vector(0, 0.5)(model)
    _set_option("input_scale", float(np.float32(0.5)))(model)


# int8 files: name -> (change, what the error says).
INT8_CORRUPTIONS = {
    "vector_nan_scale": (
        _set_quantization_vector(0, np.nan), "input_scale must be a finite number > 0, got NaN"
    ),
    "vector_zero_scale": (
        _set_quantization_vector(2, 0.0), "output_scale must be a finite number > 0, got 0"
    ),
    "vector_inf_scale": (
        _set_quantization_vector(2, np.inf), "output_scale must be a finite number > 0, got inf"
    ),
    "vector_zero_point_300": (
        _set_quantization_vector(1, 300),
        "input_zero_point must be an integer in -128..=127, got 300",
    ),
    "vector_fractional_zero_point": (
        _set_quantization_vector(3, 0.5), "output_zero_point must be an integer"
    ),
    "map_nan_scale": (
        _set_tensor_quantization("map", "scale", np.nan),
        "the feature map of subgraphs[0].operators[1] (KerasAttnCBAM): "
        "its scale must be a finite number > 0, got NaN",
    ),
    "output_negative_scale": (
        _set_tensor_quantization("output", "scale", -1.0),
        "the output of subgraphs[0].operators[1] (KerasAttnCBAM): "
        "its scale must be a finite number > 0, got -1",
    ),
    "map_zero_point_1000": (
        _set_tensor_quantization("map", "zeroPoint", 1000),
        "its zero point must be an integer in -128..=127, got 1000",
    ),
    "options_inf_scale": (
        _set_option("output_scale", float("inf")),
        "output_scale must be a finite number > 0, got inf",
    ),
    "options_disagree_with_the_vector": (
        _set_option("input_scale", 0.25), "the custom options' quantization"
    ),
    "vector_disagrees_with_the_map": (
        _vector_and_options_disagree_with_the_map, "where the op's quantization vector"
    ),
}


def _corpus(fused, folder):
    """Corrupted files: truncated, byte-flipped (seeded), and rewritten to be inconsistent."""
    paths = []
    rng = random.Random(12)
    for name, path in fused.items():
        with open(path, "rb") as f:
            data = f.read()
        for i in range(40):
            mutant = bytearray(data)
            if i % 8 == 0:
                mutant = mutant[: rng.randrange(len(mutant))]
            else:
                for _ in range(rng.randint(1, 3)):
                    mutant[rng.randrange(len(mutant))] = rng.randrange(256)
            paths.append(str(folder / f"{name}_mutant{i}.tflite"))
            with open(paths[-1], "wb") as f:
                f.write(mutant)
    for change in [
        _oversized_input,
        _short_weight_buffer,
        _op_input_out_of_range,
        _signature_names_a_weight,
        _bad_opcode_index,
    ]:
        paths.append(_rewrite(fused["cbam"], folder / f"{change.__name__}.tflite", change))
    change = _se_weights_for_half_the_channels
    paths.append(_rewrite(fused["se"], folder / f"{change.__name__}.tflite", change))
    for name, (change, _) in INT8_CORRUPTIONS.items():
        paths.append(_rewrite(fused["cbam_int8"], folder / f"int8_{name}.tflite", change))
    return paths


_CHILD = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    from keras_attn import edge
    for path in sys.argv[1:]:
        print(json.dumps(["start", path]), flush=True)
        try:
            run = edge.Runtime(path, threads=1)
            run([np.zeros(s, d) for s, d in zip(run.input_shapes, run.input_dtypes)])
            outcome = ["loaded", ""]
        except Exception as err:
            outcome = [type(err).__name__, str(err)]
        print(json.dumps([outcome[0], path, outcome[1]]), flush=True)
    """
)


def _load_each_in_a_child(paths):
    """{path: (outcome, message)}: the exception's type name, "loaded", or "died (rc)" when the
    child was killed by a signal or aborted (the next child goes on after that file)."""
    env = {**os.environ, "PYTHONPATH": ROOT, "TF_CPP_MIN_LOG_LEVEL": "3"}
    results, todo = {}, list(paths)
    while todo:
        child = subprocess.run(
            [sys.executable, "-c", _CHILD, *todo], capture_output=True, text=True, env=env,
            timeout=600,
        )
        for line in child.stdout.splitlines():
            outcome, path, *message = json.loads(line)
            if outcome != "start":
                results[path] = (outcome, message[0])
        todo = [p for p in todo if p not in results]
        if todo:
            results[todo[0]] = (f"died ({child.returncode})", child.stderr[-500:])
            todo = todo[1:]
    return results


def test_corrupted_models_raise_value_error_and_never_crash(fused, tmp_path):
    paths = _corpus(fused, tmp_path)
    results = _load_each_in_a_child(paths)
    bad = {p: r for p, r in results.items() if r[0] not in ("loaded", "ValueError")}
    assert not bad, bad
    # Each rewritten file is refused, with a message that names what is wrong.
    expected = {
        "_oversized_input": "over the 2147483648 accepted",
        "_short_weight_buffer": "bytes, shape",
        "_op_input_out_of_range": "operators[0].inputs[1]: tensor",
        "_signature_names_a_weight": "is not one of subgraph 0's inputs",
        "_bad_opcode_index": "operator code 7 is out of range",
        "_se_weights_for_half_the_channels": "the weights are for 2 channels, the feature map has 4",
    }
    for name, message in expected.items():
        path = str(tmp_path / f"{name}.tflite")
        assert results[path][0] == "ValueError", (name, results[path])
        assert message in results[path][1], results[path]
        if name != "_se_weights_for_half_the_channels":  # found by the verifier, before LiteRT
            assert f"{path!r} is not a valid .tflite model" in results[path][1]
    # An int8 op's quantization: the error names the tensor (or, for the custom options, the
    # operator) that holds the bad value.
    for name, (_, message) in INT8_CORRUPTIONS.items():
        path = str(tmp_path / f"int8_{name}.tflite")
        outcome, text = results[path]
        assert outcome == "ValueError", (name, text)
        assert f"{path!r} is not a valid .tflite model" in text, (name, text)
        assert message in text, (name, text)
        assert "subgraphs[0].tensors[" in text or name.startswith("options"), (name, text)
        assert "subgraphs[0].operators[1] (KerasAttnCBAM)" in text, (name, text)
    refused = sum(r[0] == "ValueError" for r in results.values())
    assert refused > len(paths) // 2, results


@pytest.mark.parametrize("name", ["se", "cbam_int8"])
def test_verifier_fuzz_loop(fused, name):
    # In process: the verifier is safe Rust, so a bug shows as a panic (not a ValueError).
    # The int8 model exercises the checks of its op's quantization too.
    with open(fused[name], "rb") as f:
        data = f.read()
    _rust.verify_tflite(data)
    rng = random.Random(3)
    for _ in range(3000):
        mutant = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            mutant[rng.randrange(len(mutant))] = rng.randrange(256)
        try:
            _rust.verify_tflite(bytes(mutant))
        except ValueError:
            pass


def test_short_file_names_the_file(tmp_path):
    path = tmp_path / "tiny.tflite"
    path.write_bytes(b"\x08\x00\x00\x00TFL3")
    with pytest.raises(ValueError, match=r"tiny\.tflite.*is not a valid \.tflite model"):
        edge.Runtime(path)


def test_read_tflite_raises_value_error_naming_the_file(fused, tmp_path):
    with open(fused["cbam"], "rb") as f:
        data = f.read()
    rng = random.Random(5)
    path = str(tmp_path / "mutant.tflite")
    errors = 0
    for _ in range(200):
        mutant = bytearray(data)
        for _ in range(rng.randint(1, 3)):
            mutant[rng.randrange(8, len(mutant))] = rng.randrange(256)
        with open(path, "wb") as f:
            f.write(mutant)
        try:
            read_tflite(path)
        except ValueError as err:
            assert repr(path) in str(err)
            errors += 1
    # Corrupt offsets make the generated reader raise struct.error, IndexError, TypeError...
    assert errors > 20
    with pytest.raises(ValueError, match="the bytes given"):
        read_tflite(bytes(data[:40]))


def test_runtime_runs_the_bytes_it_verified_after_the_file_changes(fused, tmp_path):
    # LiteRT gets the verified bytes, not the file: overwritten in place (the same inode, as
    # a memory map would see it) or deleted after load, the model runs as loaded.
    path = tmp_path / "model.tflite"
    data = open(fused["cbam"], "rb").read()
    path.write_bytes(data)
    run = edge.Runtime(path, threads=1)
    x = np.random.default_rng(0).normal(size=run.input_shapes[0]).astype(np.float32)
    want = run(x)
    with open(path, "r+b") as f:
        f.write(bytes(len(data)))
    np.testing.assert_array_equal(run(x), want)
    path.unlink()
    np.testing.assert_array_equal(run(x), want)
    np.testing.assert_array_equal(edge.Runtime(fused["cbam"], threads=1)(x), want)

"""Loading the CBAM/BAM authors' and pytorchcv's PyTorch weights into keras_attn models and layers.

PyTorch is never imported here at module import time: `load_torch_state_dict` takes NumPy arrays,
and only `load_torch_checkpoint` (which must unpickle a `.pth` file) needs torch installed.
"""

import collections.abc
import os

import keras
import numpy as np

from keras_attn.convert._names import TORCH_BN_EPSILON, TORCH_BN_MOMENTUM, torch_names
from keras_attn.convert._pytorchcv import pytorchcv_keys

_DATA_PARALLEL_PREFIX = "module."


class StateDictMismatchError(ValueError):
    """A state dict that does not fit the model or holds bad values; lists every problem at once.

    Attributes:
        missing: keys the model needs that the state dict lacks.
        unexpected: keys of the state dict the model has no place for.
        mismatched: `"key: checkpoint shape ..., model expects ..."` lines.
        invalid: `"key: what is wrong"` lines for values that cannot be loaded (not real
            numbers, NaN or infinite, negative BatchNorm variances).
    """

    def __init__(self, target, missing, unexpected, mismatched, invalid=()):
        self.missing = list(missing)
        self.unexpected = list(unexpected)
        self.mismatched = list(mismatched)
        self.invalid = list(invalid)
        sections = [
            (f"{len(items)} {title}" + ("" if len(items) == 1 else "s") + ":\n  "
             + "\n  ".join(items))
            for title, items in (("missing key", self.missing),
                                 ("unexpected key", self.unexpected),
                                 ("shape mismatch", self.mismatched),
                                 ("bad value", self.invalid))
            if items
        ]
        super().__init__(f"The state dict does not fit {target!r}.\n" + "\n".join(sections))


def load_torch_state_dict(model_or_layer, state_dict, *, allow_non_finite=False):
    """Loads a PyTorch state dict (the authors' or pytorchcv's) into a keras_attn model or layer.

    Keys are the authors' names (`Jongchan/attention-module`): for a `keras_attn.models` ResNet
    the whole-network names (`conv1.weight`, `layer1.0.cbam.ChannelGate.mlp.1.weight`,
    `bam1.spatial_att.gate_s.gate_s_conv_di_0.weight`, `fc.bias`, ...); for a single layer the
    names inside that module (`ChannelGate.mlp.1.weight` for a `CBAM`). Or they are pytorchcv's
    names for the same networks (`cbam_resnet*`, `bam_resnet*` and the `seresnet*` whose
    bottlenecks stride in the 3x3 convolution: `features.stage1.unit1.body.conv1.conv.weight`,
    `...cbam.ch_gate.mlp.fc1.weight`, `output.bias`, ...); the naming is detected from the keys
    (the one that more keys match). The `module.` prefix that `torch.nn.DataParallel` adds is
    accepted and dropped.

    Conversions: Linear weights are transposed, convolution weights go from OIHW to HWIO,
    BatchNorm `running_mean`/`running_var` become the moving statistics (`num_batches_tracked`
    may be present or not and is ignored), and every loaded BatchNormalization gets PyTorch's
    epsilon (1e-5) and the Keras momentum equal to one minus the PyTorch momentum of the
    module the checkpoint comes from (0.9 for `nn.BatchNorm2d`; 0.99 for the authors' CBAM
    spatial gate, 0.9 for pytorchcv's). Every `BAM` gets `fusion="product"`, the fusion both
    codes (and so their weights) use. A model's
    already traced `fit`/`evaluate`/`predict` functions are discarded, so they retrace with these.

    Nothing is assigned unless every key fits and every value is good: every tensor is
    converted and checked first (real numbers, finite, BatchNorm `running_var` >= 0, the right
    shape), and only then are the variables assigned.

    Args:
        model_or_layer: a built Keras model or layer.
        state_dict: mapping from key to NumPy array (or torch tensor, if torch is installed).
        allow_non_finite: load NaN and infinite values instead of refusing them (to inspect a
            checkpoint whose training diverged).

    Raises:
        StateDictMismatchError: (a `ValueError`) listing all missing keys, unexpected keys,
            shape mismatches and bad values together.
        TypeError: for a non-mapping state dict, a value that is not an array, or a layer
            holding weights that has no PyTorch naming.
    """
    if not isinstance(model_or_layer, keras.layers.Layer):
        raise TypeError("`model_or_layer` must be a Keras model or layer, "
                        f"got {type(model_or_layer).__name__}.")
    if not isinstance(state_dict, collections.abc.Mapping):
        raise TypeError("`state_dict` must be a mapping from key names to arrays, "
                        f"got {type(state_dict).__name__}.")
    if not model_or_layer.built:
        raise ValueError(f"`model_or_layer` {model_or_layer.name!r} is not built: call it on an "
                         "input (or build it) before loading weights.")
    names = torch_names(model_or_layer)
    if names.unsupported:
        raise TypeError("These layers hold weights but have no PyTorch key names: "
                        + ", ".join(names.unsupported) + ".")

    given = _strip_data_parallel_prefix(state_dict)
    expected = {parameter.key: parameter for parameter in names.parameters}
    optional_keys = names.optional_keys
    renamed = pytorchcv_keys([*expected, *optional_keys])
    pytorchcv_names = {renamed[key]: parameter for key, parameter in expected.items()}
    from_pytorchcv = len(given.keys() & pytorchcv_names) > len(given.keys() & expected)
    if from_pytorchcv:
        expected = pytorchcv_names
        optional_keys = {renamed[key] for key in optional_keys}
    missing = sorted(expected.keys() - given.keys())
    unexpected = sorted(given.keys() - expected.keys() - optional_keys)
    mismatched = []
    invalid = []
    values = []
    for key, parameter in expected.items():
        if key not in given:
            continue
        array = _to_numpy(key, given[key])
        if parameter.layout == "linear" and array.ndim == 4 and array.shape[2:] == (1, 1):
            array = array[:, :, 0, 0]  # a 1x1 convolution standing in for a Linear layer
        if array.shape != parameter.torch_shape:
            mismatched.append(f"{key}: checkpoint {array.shape}, model expects "
                              f"{parameter.torch_shape}")
            continue
        value, problem = _checked_value(array, parameter, allow_non_finite)
        if problem:
            invalid.append(f"{key}: {problem}")
        else:
            values.append((parameter.variable, value))
    if missing or unexpected or mismatched or invalid:
        raise StateDictMismatchError(model_or_layer.name, missing, unexpected, mismatched,
                                     invalid)

    for variable, value in values:
        variable.assign(value)
    for batchnorm, torch_momentum in names.batchnorms:
        if from_pytorchcv:
            torch_momentum = TORCH_BN_MOMENTUM  # pytorchcv builds every BatchNorm with defaults
        batchnorm.momentum = 1.0 - torch_momentum
        batchnorm.epsilon = TORCH_BN_EPSILON
    for bam in names.bams:
        bam.fusion = "product"
    if isinstance(model_or_layer, keras.Model):
        # Traced functions froze the old fusion, epsilon and momentum (plain Python attributes).
        model_or_layer.train_function = None
        model_or_layer.test_function = None
        model_or_layer.predict_function = None


def load_torch_checkpoint(model, path, *, allow_non_finite=False):
    """Loads a `.pth` / `.pth.tar` checkpoint into `model` (see `load_torch_state_dict`).

    The file is read with `read_torch_checkpoint`, then handed to `load_torch_state_dict`.

    Args:
        model: a built Keras model or layer.
        path: path of the checkpoint file.
        allow_non_finite: passed to `load_torch_state_dict`.

    Raises:
        FileNotFoundError: when `path` is not a file.
        ValueError: when the file is empty or PyTorch cannot read it as a checkpoint, and as
            `load_torch_state_dict` raises.
        ImportError: when PyTorch is not installed (it says how to install it).
    """
    load_torch_state_dict(model, read_torch_checkpoint(path), allow_non_finite=allow_non_finite)


def read_torch_checkpoint(path):
    """Returns the state dict of a `.pth` / `.pth.tar` checkpoint file (torch tensors).

    Reads the file with `torch.load(path, map_location="cpu", weights_only=True)` (so no code in
    the file runs) and takes its `"state_dict"` entry when it has one (the authors' training
    script saves `{"epoch", "arch", "state_dict", ...}`).

    Raises:
        FileNotFoundError: when `path` is not a file.
        ValueError: when the file is empty or PyTorch cannot read it as a checkpoint.
        ImportError: when PyTorch is not installed (it says how to install it).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"`path` must be a checkpoint file, got {path!r} (no such file).")
    if os.path.getsize(path) == 0:
        raise ValueError(f"`path` {path!r} is an empty file (0 bytes), not a checkpoint; an "
                         "interrupted download or copy leaves such files: fetch it again.")
    torch = import_torch()
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises EOFError, RuntimeError, UnpicklingError, ...
        raise ValueError(f"`path` {path!r} could not be read as a PyTorch checkpoint "
                         f"({type(error).__name__}: {error}); is the file complete?") from error
    if isinstance(checkpoint, collections.abc.Mapping) and "state_dict" in checkpoint:
        checkpoint = checkpoint["state_dict"]
    return checkpoint


def import_torch():
    """Returns the torch module, or raises an ImportError that says how to install it."""
    try:
        import torch
    except ImportError as error:
        raise ImportError(
            "Reading .pth checkpoints needs PyTorch, and it is not installed. Install it with "
            "`pip install torch` (the CPU build is enough: `pip install torch --index-url "
            "https://download.pytorch.org/whl/cpu`), or read the tensors elsewhere and pass "
            "them as NumPy arrays to keras_attn.convert.load_torch_state_dict."
        ) from error
    return torch


def _strip_data_parallel_prefix(state_dict):
    stripped = {}
    for key, value in state_dict.items():
        if not isinstance(key, str):
            raise TypeError(f"`state_dict` keys must be strings, got {key!r}.")
        name = key.removeprefix(_DATA_PARALLEL_PREFIX)
        if name in stripped:
            raise ValueError(f"`state_dict` holds {name!r} twice, with and without the "
                             f"{_DATA_PARALLEL_PREFIX!r} prefix.")
        stripped[name] = value
    return stripped


def _to_numpy(key, value):
    # A torch.Tensor, recognised without importing torch.
    if hasattr(value, "detach") and hasattr(value, "cpu"):
        value = value.detach().cpu()
        if value.is_floating_point():
            value = value.float()  # NumPy has no bfloat16
        value = value.numpy()
    if not isinstance(value, (np.ndarray, np.generic, list, tuple, int, float)):
        raise TypeError(f"`state_dict[{key!r}]` must be an array, got {type(value).__name__}.")
    return np.asarray(value)


def _checked_value(array, parameter, allow_non_finite):
    """(the value in the variable's layout and dtype, None) or (None, what is wrong with it)."""
    if array.dtype.kind not in "iuf":
        what = {"c": "complex numbers", "b": "booleans", "U": "strings", "S": "bytes",
                "O": "Python objects"}.get(array.dtype.kind, f"dtype {array.dtype}")
        return None, f"holds {what}, expected real numbers"
    with np.errstate(over="ignore", invalid="ignore"):  # too large for float32: reported below
        value = _to_keras_layout(array, parameter.layout).astype(parameter.variable.dtype)
    if not allow_non_finite:
        non_finite = value.size - np.count_nonzero(np.isfinite(value))
        if non_finite:
            return None, (f"{non_finite} of {value.size} values are NaN or infinite (in the "
                          "variable's dtype); pass allow_non_finite=True to load them anyway")
    if parameter.kind == "batchnorm" and parameter.key.rsplit(".", 1)[-1] == "running_var":
        negative = np.count_nonzero(value < 0)
        if negative:
            return None, (f"{negative} negative variances (smallest {value.min():g}); "
                          "a BatchNorm variance must be >= 0")
    return value, None


def _to_keras_layout(array, layout):
    if layout == "conv":
        return array.transpose(2, 3, 1, 0)
    if layout == "linear":
        return array.T
    return array

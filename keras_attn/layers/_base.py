"""Plumbing shared by the attention layers: argument checks, data format, dtypes, output specs."""

import numbers

import keras
from keras import ops

from keras_attn.layers._pooling import channel_axis

DATA_FORMATS = ("channels_last", "channels_first")
_HALF_DTYPES = ("float16", "bfloat16")

# The input layouts by rank: 1D sequences, 2D images, 3D volumes.
_SPATIAL_NAMES = {3: "length", 4: "height, width", 5: "depth, height, width"}
_CONV_LAYERS = {3: keras.layers.Conv1D, 4: keras.layers.Conv2D, 5: keras.layers.Conv3D}


def layout(rank, data_format):
    """The axes of a map of `rank`, in words: `"(batch, height, width, channels)"` for rank 4."""
    spatial = _SPATIAL_NAMES[rank]
    if data_format == "channels_last":
        return f"(batch, {spatial}, channels)"
    return f"(batch, channels, {spatial})"


def conv_layer(rank):
    """The Keras convolution over the spatial axes of a map of `rank`: Conv1D, Conv2D or Conv3D."""
    return _CONV_LAYERS[rank]


def standardize_data_format(data_format):
    """Returns `data_format`, or the Keras default (`keras.config.image_data_format()`) for None."""
    if data_format is None:
        return keras.config.image_data_format()
    if data_format not in DATA_FORMATS:
        raise ValueError(
            f"`data_format` must be one of {DATA_FORMATS} or None; got {data_format!r}."
        )
    return data_format


def _is_int(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_positive_int(name, value):
    if not _is_int(value) or value < 1:
        raise ValueError(f"`{name}` must be a positive integer; got {value!r}.")
    return int(value)


def check_non_negative_int(name, value):
    if not _is_int(value) or value < 0:
        raise ValueError(f"`{name}` must be a non-negative integer; got {value!r}.")
    return int(value)


def check_odd_kernel_size(name, value):
    # Only odd sizes give the symmetric padding of the authors' `padding=(k - 1) // 2`.
    if not _is_int(value) or value < 1 or value % 2 == 0:
        raise ValueError(f"`{name}` must be a positive odd integer; got {value!r}.")
    return int(value)


def check_positive_number(name, value):
    if not isinstance(value, numbers.Real) or isinstance(value, bool) or not value > 0:
        raise ValueError(f"`{name}` must be a positive number; got {value!r}.")
    return value


def upcast(x):
    """Casts float16/bfloat16 to float32: reductions and gates must neither overflow nor round."""
    if keras.backend.standardize_dtype(x.dtype) in _HALF_DTYPES:
        return ops.cast(x, "float32")
    return x


class AttentionLayer(keras.layers.Layer):
    """Base of the attention layers: data format, input checks, output specs and gate dtype.

    Subclasses implement `build` (calling `_check_input_shape` first), `call(inputs, training=None,
    return_attention_scores=False)` and `compute_attention_scores_shape`; they override
    `compute_output_shape` only when the output shape differs from the input shape. `call` starts
    with `inputs = self._float_inputs(inputs)` and returns `self._empty_outputs(...)` for an empty
    batch. `SUPPORTED_RANKS` lists the input ranks the layer accepts.
    """

    SUPPORTED_RANKS = (3, 4, 5)

    def __init__(self, data_format=None, **kwargs):
        super().__init__(**kwargs)
        self.data_format = standardize_data_format(data_format)
        self.channel_axis = channel_axis(self.data_format)

    def _check_input_shape(self, input_shape):
        """Validates a build-time input shape; returns the number of channels."""
        input_shape = tuple(input_shape)
        rank = len(input_shape)
        if rank not in self.SUPPORTED_RANKS:
            expected = " or ".join(
                f"{r}-D {layout(r, self.data_format)}" for r in self.SUPPORTED_RANKS
            )
            raise ValueError(
                f"`inputs` of {type(self).__name__} must be {expected} for "
                f"data_format={self.data_format!r}; got shape {input_shape} of rank {rank}."
            )
        channels = input_shape[self.channel_axis]
        if channels is None:
            raise ValueError(
                f"The channel dimension of the `inputs` of {type(self).__name__} must be known "
                f"when it is built (axis {self.channel_axis} of {layout(rank, self.data_format)});"
                f" got shape {input_shape}."
            )
        self.input_spec = keras.InputSpec(ndim=rank, axes={self.channel_axis: channels})
        return channels

    def _float_inputs(self, inputs):
        """Integer and boolean inputs cast to the layer's compute dtype.

        Keras casts float inputs to the compute dtype and leaves integers alone; its Dense and
        BatchNormalization then compute in float. The gates must too: a sigmoid in int32 truncates.
        """
        if keras.backend.is_float_dtype(keras.backend.standardize_dtype(inputs.dtype)):
            return inputs
        return ops.cast(inputs, self.compute_dtype)

    def _empty_outputs(self, inputs, return_attention_scores):
        """Empty outputs (and scores) of the right shapes for a batch of zero, else None.

        Keras' Dense and BatchNormalization return an empty batch for an empty batch; TensorFlow's
        eager reductions and convolutions refuse one. Only a batch known to be empty (eager calls,
        traced JAX) takes this path; a symbolic batch size computes as usual.
        """
        if inputs.shape[0] != 0:
            return None

        def zeros(shape):
            return ops.zeros(shape, dtype=self.compute_dtype)

        outputs = zeros(self.compute_output_shape(tuple(inputs.shape)))
        if not return_attention_scores:
            return outputs
        scores_shape = self.compute_attention_scores_shape(tuple(inputs.shape))
        return outputs, keras.tree.map_shape_structure(zeros, scores_shape)

    def _gate_dtype(self):
        """Dtype policy of the sub-layers that act on pooled descriptors.

        Under mixed precision they run in float32: they are tiny, and float32 keeps the pooled sums
        and the gate logits from overflowing or rounding. Sub-layers that act on whole feature maps
        (BAM's spatial convolutions, SK's branches) keep the layer's own policy.
        """
        if self.compute_dtype in _HALF_DTYPES:
            return "float32"
        return self.dtype_policy

    def _channel_map_shape(self, input_shape):
        """Shape of a per-channel map: the input's with every spatial size 1, as (N, 1, 1, C)."""
        channels = input_shape[self.channel_axis]
        ones = (1,) * (len(input_shape) - 2)
        if self.data_format == "channels_last":
            return (input_shape[0], *ones, channels)
        return (input_shape[0], channels, *ones)

    def _spatial_map_shape(self, input_shape, channels=1):
        """Shape of a spatial map with `channels` channels: (N, H, W, 1) or (N, 1, H, W) at rank 4."""
        shape = list(input_shape)
        shape[self.channel_axis] = channels
        return tuple(shape)

    def _initializers(self, bias=True):
        """Fresh copies of the layer's initializers, for one sub-layer.

        An unseeded Keras initializer draws the same values at every call: sub-layers sharing one
        instance would start identical, and twin branches would then get identical gradients.
        """
        kwargs = {"kernel_initializer": self.kernel_initializer.clone()}
        if bias:
            kwargs["bias_initializer"] = self.bias_initializer.clone()
        return kwargs

    def _apply_gate(self, inputs, gate, return_attention_scores):
        """`inputs * gate`, the gate (computed in float32) cast to the inputs' dtype first."""
        gate = ops.cast(gate, inputs.dtype)
        outputs = inputs * gate
        if return_attention_scores:
            return outputs, gate
        return outputs

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def compute_attention_scores_shape(self, input_shape):
        raise NotImplementedError

    def compute_output_spec(self, inputs, training=None, return_attention_scores=False):
        def spec(shape):
            return keras.KerasTensor(shape, dtype=self.compute_dtype)

        outputs = spec(self.compute_output_shape(inputs.shape))
        if not return_attention_scores:
            return outputs
        scores_shape = self.compute_attention_scores_shape(inputs.shape)
        return outputs, keras.tree.map_shape_structure(spec, scores_shape)

    def get_config(self):
        config = super().get_config()
        config["data_format"] = self.data_format
        return config

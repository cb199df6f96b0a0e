"""The attention layers (Keras 3, `keras.ops` only)."""

from keras_attn.layers.bam import BAM, BAMChannelGate, BAMSpatialGate
from keras_attn.layers.cbam import CBAM
from keras_attn.layers.channel import ChannelAttention
from keras_attn.layers.eca import ECA
from keras_attn.layers.selective_kernel import SelectiveKernel
from keras_attn.layers.spatial import SpatialAttention
from keras_attn.layers.squeeze_excite import SqueezeExcite

__all__ = [
    "BAM",
    "BAMChannelGate",
    "BAMSpatialGate",
    "CBAM",
    "ChannelAttention",
    "ECA",
    "SelectiveKernel",
    "SpatialAttention",
    "SqueezeExcite",
]

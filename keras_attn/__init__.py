"""keras-attn: CBAM, BAM and channel-attention layers for Keras 3, with a Rust CPU core."""

from keras_attn import layers
from keras_attn._rust import __version__
from keras_attn.layers import (
    BAM,
    BAMChannelGate,
    BAMSpatialGate,
    CBAM,
    ECA,
    ChannelAttention,
    SelectiveKernel,
    SpatialAttention,
    SqueezeExcite,
)
from keras_attn.registry import get_attention

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
    "__version__",
    "get_attention",
    "layers",
]

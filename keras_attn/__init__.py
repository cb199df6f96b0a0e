"""keras-attn: CBAM, BAM and channel-attention layers for Keras 3, with a Rust CPU core."""

from keras_attn._rust import __version__

__all__ = ["__version__"]

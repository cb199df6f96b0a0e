"""Deployment: SavedModel for serving, LiteRT (TFLite) for devices, and a LiteRT runner.

Built on Keras' and TensorFlow's own exporters; see docs/deployment.md.
"""

from keras_attn.export.flatbuffer import TFLiteGraph, TFLiteOp, read_tflite
from keras_attn.export.litert import LiteRTModel
from keras_attn.export.saved_model import to_saved_model
from keras_attn.export.tflite import IO_DTYPES, QUANTIZATIONS, TFLiteReport, to_tflite

__all__ = [
    "IO_DTYPES",
    "LiteRTModel",
    "QUANTIZATIONS",
    "TFLiteGraph",
    "TFLiteOp",
    "TFLiteReport",
    "read_tflite",
    "to_saved_model",
    "to_tflite",
]

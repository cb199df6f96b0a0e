"""Deployment: SavedModel for serving, LiteRT (TFLite) for devices, and a LiteRT runner.

Built on Keras' and TensorFlow's own exporters; see docs/deployment.md. The names below load on
first use, so that `keras_attn.edge`, which reads `.tflite` files with this package's
`flatbuffer` module, imports neither Keras nor TensorFlow.
"""

import importlib

_MODULES = {
    "IO_DTYPES": "tflite",
    "LiteRTModel": "litert",
    "QUANTIZATIONS": "tflite",
    "TFLiteGraph": "flatbuffer",
    "TFLiteOp": "flatbuffer",
    "TFLiteReport": "tflite",
    "read_tflite": "flatbuffer",
    "to_saved_model": "saved_model",
    "to_tflite": "tflite",
}

__all__ = sorted(_MODULES)


def __getattr__(name):
    # PEP 562: each name's module is imported when the name is first looked up.
    if name in _MODULES:
        return getattr(importlib.import_module(f"keras_attn.export.{_MODULES[name]}"), name)
    raise AttributeError(f"module 'keras_attn.export' has no attribute {name!r}")


def __dir__():
    return sorted({*globals(), *_MODULES})

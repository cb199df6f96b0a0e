"""keras-attn: CBAM, BAM and channel-attention layers for Keras 3, with a Rust CPU core.

Keras and TensorFlow are imported only when something that needs them is first used: a layer
(`keras_attn.CBAM`, `keras_attn.layers`), `get_attention`, `attention_maps`, `keras_attn.models`,
`keras_attn.export` or `keras_attn.convert`. `keras_attn.edge` (running fused `.tflite` models)
and `keras_attn.kernels` need only NumPy (and LiteRT for `edge`), so they run on a device
without either.

The layers register themselves for `.keras` loading when their module is imported: at once
when Keras is already imported along with this package (it costs nothing more), else right
after Keras is first imported; so `keras.saving.load_model` finds them in either import order.
"""

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

try:
    from keras_attn._rust import __version__
except ModuleNotFoundError as _err:
    if _err.name != "keras_attn._rust":
        raise
    # A source checkout installed with `pip install .` shadows the installed package when Python
    # starts in the checkout; only an editable install builds the core into the checkout.
    raise ModuleNotFoundError(
        f"keras_attn was imported from {__path__[0]!r}, which has no compiled Rust core "
        "(keras_attn/_rust.abi3.so). If that is a source checkout, install it in editable mode "
        "from its root: pip install -e . (or run Python from another folder, so that the "
        "installed package is imported).",
        name="keras_attn._rust",
    ) from None

_LAYERS = (
    "BAM",
    "BAMChannelGate",
    "BAMSpatialGate",
    "CBAM",
    "ECA",
    "ChannelAttention",
    "SelectiveKernel",
    "SpatialAttention",
    "SqueezeExcite",
)
_SUBMODULES = (
    "convert", "cpu", "edge", "export", "kernels", "layers", "logs", "maps", "models", "registry"
)

__all__ = sorted([*_LAYERS, "__version__", "attention_maps", "get_attention", "layers"])


def __getattr__(name):
    # PEP 562: the layers and the submodules that need Keras load on first use.
    if name in _LAYERS:
        return getattr(importlib.import_module("keras_attn.layers"), name)
    if name == "get_attention":
        return importlib.import_module("keras_attn.registry").get_attention
    if name == "attention_maps":
        return importlib.import_module("keras_attn.maps").attention_maps
    if name in _SUBMODULES:
        return importlib.import_module(f"keras_attn.{name}")
    raise AttributeError(f"module 'keras_attn' has no attribute {name!r}")


def __dir__():
    return sorted({*globals(), *_LAYERS, *_SUBMODULES, "attention_maps", "get_attention"})


class _LayersAfterKeras(importlib.abc.MetaPathFinder):
    """Imports `keras_attn.layers` right after `keras` itself, so that the layers are registered
    for `.keras` loading without importing Keras here, before it is wanted."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "keras":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec("keras")
        if spec is None or spec.loader is None:
            return spec
        exec_module = spec.loader.exec_module

        def exec_then_register(module):
            exec_module(module)
            try:
                importlib.import_module("keras_attn.layers")
            except Exception as err:  # noqa: BLE001  (Keras itself must still import)
                warnings.warn(
                    f"keras_attn could not register its layers for .keras loading ({err}); "
                    "import keras_attn.layers before loading a .keras file.",
                    stacklevel=2,
                )

        spec.loader.exec_module = exec_then_register
        return spec


if "keras" in sys.modules:
    from keras_attn import layers  # noqa: F401  (registers the layers for `.keras` loading)
else:
    sys.meta_path.insert(0, _LayersAfterKeras())

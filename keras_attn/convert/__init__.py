"""Loading the CBAM/BAM authors' PyTorch weights (`Jongchan/attention-module`) into Keras."""

from keras_attn.convert.torch import (
    StateDictMismatchError,
    load_torch_checkpoint,
    load_torch_state_dict,
)

__all__ = ["StateDictMismatchError", "load_torch_checkpoint", "load_torch_state_dict"]

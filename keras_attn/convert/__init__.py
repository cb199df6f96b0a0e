"""Loading PyTorch weights into Keras: the CBAM/BAM authors' (`Jongchan/attention-module`) and
pytorchcv's copies of them."""

from keras_attn.convert.torch import (
    StateDictMismatchError,
    load_torch_checkpoint,
    load_torch_state_dict,
    read_torch_checkpoint,
)

__all__ = ["StateDictMismatchError", "load_torch_checkpoint", "load_torch_state_dict",
           "read_torch_checkpoint"]

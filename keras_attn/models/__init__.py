"""ResNets with CBAM, BAM, SE or any registered attention, built as the CBAM/BAM authors do,
MobileNet as in the CBAM paper, and `insert_attention` to add attention to an existing
functional model."""

from keras_attn.models._pretrained import CHECKPOINTS, Checkpoint
from keras_attn.models.imagenet import decode_predictions, load_image, preprocess_input
from keras_attn.models.insert import insert_attention
from keras_attn.models.mobilenet import mobilenet
from keras_attn.models.resnet import resnet, resnet18, resnet34, resnet50, resnet101, resnet152

__all__ = ["CHECKPOINTS", "Checkpoint", "decode_predictions", "insert_attention", "load_image",
           "mobilenet", "preprocess_input", "resnet", "resnet18", "resnet34", "resnet50",
           "resnet101", "resnet152"]

"""keras_attn.convert against pytorchcv's own model definitions, run in PyTorch.

Each pytorchcv model (built by the constructor `pytorchcv.model_provider.get_model(name)` calls,
without pretrained weights) gets random weights and random BatchNorm statistics; its `state_dict()` (as a dict, as a `.pth` file, with
DataParallel's prefix) is loaded into the matching keras_attn model, and both compute the logits
of the same random images in inference mode. pytorchcv's ResNets end with `AvgPool2d(7)`, so
224x224 is the input size they take.

Tolerance: the largest logit difference must stay under 1e-5 of the largest logit (float32
rounding; measured below 1e-6 on every model here). The last tests show that the comparison
catches the architecture details a wrong port gets wrong: the spatial gate's pool order, BAM's
gate fusion and the bottleneck's stride placement.
"""

import numpy as np
import pytest

torch = pytest.importorskip(
    "torch", reason="PyTorch is not installed; `pip install -e '.[pytorchcv]'` adds it")
pytest.importorskip(
    "pytorchcv", reason="pytorchcv is not installed; `pip install -e '.[pytorchcv]'` adds it")
# The modules that define the models, not `pytorchcv.model_provider`: that one imports
# torchvision, which imports torch._dynamo and so Triton, and Triton's LLVM aborts a process that
# has loaded TensorFlow's ("Option ... registered more than once").
from pytorchcv.models import bamresnet, cbamresnet, seresnet  # noqa: E402
from pytorchcv.models.bamresnet import BamBlock  # noqa: E402
from pytorchcv.models.cbamresnet import CbamBlock  # noqa: E402
from pytorchcv.models.common.att import SEBlock  # noqa: E402

from keras_attn import models  # noqa: E402
from keras_attn.convert import load_torch_checkpoint, load_torch_state_dict  # noqa: E402
from keras_attn.layers import BAM, CBAM, SqueezeExcite  # noqa: E402

LOGIT_RTOL = 1e-5
NUM_CLASSES = 10
IMAGE_SIZE = 224

# pytorchcv name -> (depth, attention) of the matching keras_attn.models.resnet.
FAST_MODELS = {
    "cbam_resnet18": (18, "cbam"),
    "bam_resnet18": (18, "bam"),
    "seresnet18": (18, "se"),
    "cbam_resnet50": (50, "cbam"),
    "bam_resnet50": (50, "bam"),
    "seresnet50b": (50, "se"),
}
DEEP_MODELS = {
    "cbam_resnet34": (34, "cbam"),
    "bam_resnet34": (34, "bam"),
    "seresnet34": (34, "se"),
    "cbam_resnet101": (101, "cbam"),
    "bam_resnet101": (101, "bam"),
    "seresnet101b": (101, "se"),
    "cbam_resnet152": (152, "cbam"),
}


def randomise(module, seed):
    """Random weights and BatchNorm statistics in every parameterised submodule of `module`."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, submodule in module.named_modules():
            if isinstance(submodule, (torch.nn.Conv2d, torch.nn.Linear)):
                fan_in = submodule.weight[0].numel()
                submodule.weight.normal_(0.0, (2.0 / fan_in) ** 0.5, generator=generator)
                if submodule.bias is not None:
                    submodule.bias.normal_(0.0, 0.1, generator=generator)
            elif isinstance(submodule, torch.nn.modules.batchnorm._BatchNorm):
                submodule.weight.uniform_(0.4, 0.8, generator=generator)
                submodule.bias.normal_(0.0, 0.1, generator=generator)
                submodule.running_mean.normal_(0.0, 0.1, generator=generator)
                submodule.running_var.uniform_(0.5, 1.5, generator=generator)
            elif list(submodule.parameters(recurse=False)):
                raise AssertionError(f"{name} ({type(submodule).__name__}) would keep its "
                                     "initial weights")
    return module.eval()


def pytorchcv_model(name, seed=0):
    """pytorchcv's model `name` ("cbam_resnet50", "seresnet50b", ...), randomised."""
    module = {"cbam": cbamresnet, "bam_": bamresnet, "sere": seresnet}[name[:4]]
    constructor = getattr(module, name)
    return randomise(constructor(pretrained=False, num_classes=NUM_CLASSES), seed)


def images(seed=1, shape=(2, 3, IMAGE_SIZE, IMAGE_SIZE)):
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def torch_forward(module, x_nchw):
    with torch.no_grad():
        return module(torch.from_numpy(x_nchw)).numpy()


def keras_forward(model_or_layer, x_nchw):
    y = np.asarray(model_or_layer(x_nchw.transpose(0, 2, 3, 1), training=False))
    return y.transpose(0, 3, 1, 2) if y.ndim == 4 else y


def keras_resnet(depth, attention, **kwargs):
    return models.resnet(depth, attention=attention, input_shape=(IMAGE_SIZE, IMAGE_SIZE, 3),
                         num_classes=NUM_CLASSES, classifier_activation=None, **kwargs)


def relative_error(actual, expected):
    return np.abs(actual - expected).max() / np.abs(expected).max()


def assert_matches(actual, expected):
    assert actual.shape == expected.shape
    # The two images give different outputs: the network has not collapsed to a constant.
    assert np.abs(expected[0] - expected[1]).max() > 0.01 * np.abs(expected).max()
    assert relative_error(actual, expected) < LOGIT_RTOL


def assert_computes_another_network(model, net):
    # Far outside the tolerance of a match: the check that passes the real models catches this.
    x = images()
    assert relative_error(keras_forward(model, x), torch_forward(net, x)) > 100 * LOGIT_RTOL


def check_model(name, depth, attention):
    net = pytorchcv_model(name)
    model = keras_resnet(depth, attention)
    load_torch_state_dict(model, net.state_dict())
    x = images()
    assert_matches(keras_forward(model, x), torch_forward(net, x))


@pytest.mark.parametrize("name", FAST_MODELS)
def test_resnet_logits_match_pytorchcv(name):
    check_model(name, *FAST_MODELS[name])


@pytest.mark.slow
@pytest.mark.parametrize("name", DEEP_MODELS)
def test_deeper_resnet_logits_match_pytorchcv(name):
    check_model(name, *DEEP_MODELS[name])


def test_pth_file_through_weights_argument(tmp_path):
    # pytorchcv's model store holds plain `torch.save(net.state_dict())` files.
    net = pytorchcv_model("cbam_resnet18", seed=3)
    path = tmp_path / "cbam_resnet18.pth"
    torch.save(net.state_dict(), path)
    x = images(seed=4)
    model = keras_resnet(18, "cbam", weights=path)
    assert_matches(keras_forward(model, x), torch_forward(net, x))

    features = models.resnet18(attention="cbam", weights=path, include_top=False, pooling="avg",
                               input_shape=(IMAGE_SIZE, IMAGE_SIZE, 3))
    expected = torch_forward(net.features, x).reshape(len(x), -1)  # final_pool: global at 224
    assert_matches(keras_forward(features, x), expected)


# DataParallel asks CUDA for devices; PyTorch's CUDA build warns where there is no driver.
@pytest.mark.filterwarnings("ignore:CUDA initialization:UserWarning")
def test_data_parallel_checkpoint_file(tmp_path):
    # The authors' training script wraps the model in DataParallel and saves {"state_dict", ...}.
    net = pytorchcv_model("bam_resnet18", seed=5)
    path = tmp_path / "bam_resnet18.pth.tar"
    torch.save({"epoch": 90, "state_dict": torch.nn.DataParallel(net).state_dict()}, path)
    model = keras_resnet(18, "bam")
    load_torch_checkpoint(model, path)
    x = images(seed=6)
    assert_matches(keras_forward(model, x), torch_forward(net, x))


@pytest.mark.parametrize("block, layer", [(CbamBlock, CBAM), (BamBlock, BAM),
                                          (SEBlock, SqueezeExcite)])
def test_single_attention_layer_loads_pytorchcv_block(block, layer):
    net = randomise(block(channels=64), seed=7)
    x = images(seed=8, shape=(2, 64, 12, 12))
    keras_layer = layer()
    keras_layer(x.transpose(0, 2, 3, 1))
    load_torch_state_dict(keras_layer, net.state_dict())
    assert_matches(keras_forward(keras_layer, x), torch_forward(net, x))


# --- The comparison fails where a port gets the architecture wrong. ----------------------------


def test_swapped_spatial_pools_are_caught():
    # pytorchcv's CBAM spatial gate stacks [max, mean]; swapping the two input channels of its
    # 7x7 convolution is what feeding it [mean, max] would do.
    net = pytorchcv_model("cbam_resnet18")
    state = {key: value.flip(1) if key.endswith("sp_gate.conv.conv.weight") else value
             for key, value in net.state_dict().items()}
    model = keras_resnet(18, "cbam")
    load_torch_state_dict(model, state)
    assert_computes_another_network(model, net)


def test_bam_sum_fusion_is_caught():
    net = pytorchcv_model("bam_resnet18")
    model = keras_resnet(18, "bam")
    load_torch_state_dict(model, net.state_dict())
    for stage in (1, 2, 3):
        model.get_layer(f"bam{stage}").fusion = "sum"  # the paper's, not the released code's
    assert_computes_another_network(model, net)


def test_seresnet50_with_strided_1x1_convolutions_computes_another_network():
    # Its keys and shapes fit resnet50(attention="se") (so it loads), but it strides in the
    # bottleneck's first 1x1 convolution: only the `b` variants are our network.
    net = pytorchcv_model("seresnet50")
    model = keras_resnet(50, "se")
    load_torch_state_dict(model, net.state_dict())
    assert_computes_another_network(model, net)

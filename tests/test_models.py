"""keras_attn.models: ResNets laid out, counted and initialised like the CBAM/BAM authors' code.

Parameter counts are what PyTorch's `parameters()` counts on the authors' `ResidualNet` at 1000
classes (BatchNorm moving statistics excluded); see docs/models.md.
"""

import math

import keras
import numpy as np
import pytest

from keras_attn import models
from keras_attn.layers import BAM, CBAM, SqueezeExcite


def trainable_count(model):
    return sum(math.prod(weight.shape) for weight in model.trainable_weights)


@pytest.fixture(scope="module")
def resnet50():
    return models.resnet50()


@pytest.fixture(scope="module")
def cbam_resnet50():
    return models.resnet50(attention="cbam")


@pytest.fixture(scope="module")
def bam_resnet50():
    return models.resnet50(attention="bam")


@pytest.mark.parametrize("fixture_name, count", [
    ("resnet50", 25_557_032),
    ("cbam_resnet50", 28_089_624),
    ("bam_resnet50", 25_915_099),
])
def test_resnet50_parameter_counts_match_the_authors(fixture_name, count, request):
    assert trainable_count(request.getfixturevalue(fixture_name)) == count


@pytest.mark.parametrize("builder, attention, count", [
    (models.resnet18, None, 11_689_512),
    (models.resnet18, "cbam", 11_779_392),
    (models.resnet34, None, 21_797_672),
    (models.resnet34, "bam", 21_820_663),
    (models.resnet50, "se", 28_088_024),
    (models.resnet101, None, 44_549_160),
    (models.resnet152, None, 60_192_808),
])
def test_other_parameter_counts(builder, attention, count):
    assert trainable_count(builder(attention=attention)) == count


def test_cbam_sits_in_every_block_between_the_last_bn_and_the_addition(cbam_resnet50):
    model = cbam_resnet50
    assert model.name == "cbam_resnet50"
    blocks = [f"layer{stage}.{index}" for stage, count in zip((1, 2, 3, 4), (3, 4, 6, 3))
              for index in range(count)]
    cbams = [layer for layer in model.layers if isinstance(layer, CBAM)]
    assert [layer.name for layer in cbams] == [f"{block}.cbam" for block in blocks]
    for block, cbam in zip(blocks, cbams):
        assert cbam.input is model.get_layer(f"{block}.bn3").output
        assert any(t is cbam.output for t in model.get_layer(f"{block}.add").input)
        assert cbam.reduction_ratio == 16


def test_bam_sits_after_stages_1_2_3_only(bam_resnet50):
    model = bam_resnet50
    bams = [layer for layer in model.layers if isinstance(layer, BAM)]
    assert [layer.name for layer in bams] == ["bam1", "bam2", "bam3"]
    for stage, (bam, last_block, channels) in enumerate(
            zip(bams, ("layer1.2", "layer2.3", "layer3.5"), (256, 512, 1024)), start=1):
        assert bam.input is model.get_layer(f"{last_block}.relu").output
        assert bam.output is model.get_layer(f"layer{stage + 1}.0.conv1").input
        assert bam.input.shape[-1] == channels
    assert model.get_layer("avgpool").input is model.get_layer("layer4.2.relu").output


def test_se_and_any_registered_attention_go_in_every_block():
    model = models.resnet18(attention="se")
    se = [layer.name for layer in model.layers if isinstance(layer, SqueezeExcite)]
    assert se == [f"layer{s}.{i}.se" for s in (1, 2, 3, 4) for i in (0, 1)]
    eca_model = models.resnet18(attention="ECA", input_shape=(32, 32, 3))
    assert eca_model.get_layer("layer4.1.eca").input is eca_model.get_layer("layer4.1.bn2").output


def test_initialisation_follows_the_authors(cbam_resnet50, bam_resnet50):
    model = cbam_resnet50

    def std(name, attribute="kernel"):
        return float(np.std(getattr(model.get_layer(name), attribute).numpy()))

    # Kaiming normal, fan-out: std = sqrt(2 / (k * k * out_channels)).
    assert std("layer3.0.conv2") == pytest.approx(math.sqrt(2 / (9 * 256)), rel=0.02)
    assert std("conv1") == pytest.approx(math.sqrt(2 / (49 * 64)), rel=0.05)
    # fc: Kaiming normal, fan-in; its bias 0.
    assert std("fc") == pytest.approx(math.sqrt(2 / 2048), rel=0.02)
    assert not model.get_layer("fc").bias.numpy().any()
    # The shortcut keeps PyTorch's default, U(-1/sqrt(fan_in), 1/sqrt(fan_in)), as theirs does.
    shortcut = model.get_layer("layer3.0.downsample.0").kernel.numpy()
    bound = 1 / math.sqrt(512)
    assert np.abs(shortcut).max() <= bound
    assert shortcut.std() == pytest.approx(bound / math.sqrt(3), rel=0.02)
    # BatchNorm scale 1, except CBAM's spatial gate, which starts at 0.
    assert np.all(model.get_layer("layer2.1.bn3").gamma.numpy() == 1)
    for layer in model.layers:
        if isinstance(layer, CBAM):
            assert np.all(layer.spatial_attention.bn.gamma.numpy() == 0)
            mlp = layer.channel_attention.mlp_hidden
            fan_in = mlp.kernel.shape[0]
            assert np.abs(mlp.kernel.numpy()).max() <= 1 / math.sqrt(fan_in)
            assert not mlp.bias.numpy().any()
    bam = bam_resnet50.get_layer("bam3")
    reduce_conv = bam.spatial_gate.reduce_conv.kernel.numpy()  # 1x1, 1024 -> 64
    assert reduce_conv.std() == pytest.approx(math.sqrt(2 / 64), rel=0.02)
    assert not bam.spatial_gate.reduce_conv.bias.numpy().any()
    assert np.all(bam.channel_gate.hidden_bn[0].gamma.numpy() == 1)


@pytest.mark.parametrize("pooling, shape", [(None, (None, 2, 2, 512)), ("avg", (None, 512)),
                                            ("max", (None, 512))])
def test_headless_pooling(pooling, shape):
    model = models.resnet18(include_top=False, pooling=pooling, input_shape=(64, 64, 3))
    assert model.output_shape == shape
    assert "fc" not in [layer.name for layer in model.layers]


def test_head_and_stem_shapes():
    model = models.resnet18(num_classes=7, input_shape=(None, None, 3))
    assert model.output_shape == (None, 7)
    y = model(np.zeros((1, 64, 48, 3), np.float32))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(y).sum(), 1.0, rtol=1e-5)  # softmax
    # The PyTorch-style stem halves twice, then each stage after the first halves: 224 -> 7.
    assert models.resnet18(include_top=False).output_shape == (None, 7, 7, 512)


def test_channels_first():
    model = models.resnet18(attention="cbam", data_format="channels_first", include_top=False)
    assert model.input_shape == (None, 3, 224, 224)
    assert model.output_shape == (None, 512, 7, 7)
    assert model.get_layer("layer1.0.cbam").data_format == "channels_first"
    assert trainable_count(model) == 11_779_392 - 513_000  # less fc (512 * 1000 + 1000)


def test_attention_class_and_kwargs():
    model = models.resnet18(attention=CBAM, attention_kwargs={"reduction_ratio": 8})
    assert model.get_layer("layer1.0.cbam").reduction_ratio == 8
    # Each block's channel MLP doubles its hidden width C/16 -> C/8: +2*C*C/16 weights and
    # +C/16 biases, in the two blocks of each stage.
    extra = sum(2 * (2 * c * c // 16 + c // 16) for c in (64, 128, 256, 512))
    assert trainable_count(model) == 11_779_392 + extra


def test_bad_arguments():
    with pytest.raises(ValueError, match="`depth` must be one of"):
        models.resnet(20)
    with pytest.raises(ValueError, match="`pooling` must be None, 'avg' or 'max'"):
        models.resnet18(include_top=False, pooling="sum")
    with pytest.raises(ValueError, match="`data_format` must be"):
        models.resnet18(data_format="NHWC")
    with pytest.raises(ValueError, match="`input_shape` must be 3 positive ints"):
        models.resnet18(input_shape=(224, 224))
    with pytest.raises(ValueError, match="`input_shape` must be 3 positive ints"):
        models.resnet18(input_shape=(224, 224, None))
    with pytest.raises(ValueError, match="`num_classes` must be a positive int"):
        models.resnet18(num_classes=0)
    with pytest.raises(TypeError, match="`attention` must be None, an attention name"):
        models.resnet18(attention=5)
    with pytest.raises(ValueError, match="`name` must be one of"):
        models.resnet18(attention="nope")
    with pytest.raises(ValueError, match="`attention_kwargs` needs an `attention`"):
        models.resnet18(attention_kwargs={"reduction_ratio": 8})
    with pytest.raises(TypeError, match="`attention_kwargs` must be a dict"):
        models.resnet18(attention="cbam", attention_kwargs=[("reduction_ratio", 8)])

"""pytorchcv's key names (osmr's `imgclsmob`) for the keys of the CBAM/BAM authors' naming.

pytorchcv's `cbamresnet.py`, `bamresnet.py` and `seresnet.py` build the same networks as the
authors' `model_resnet.py` under other module names: the stem is `features.init_block.conv`
(a conv + bn block), block `layerS.I` is `features.stageS.unit{I+1}` with its convolutions in
`body.convK.{conv,bn}` and its shortcut in `identity_conv.{conv,bn}` (one level deeper, under
`res_unit.`, in a BAM-ResNet), BAM `bamS` opens the next stage (`features.stage{S+1}.unit1.bam`),
and the classifier is `output`. Every BatchNorm there is
a default `nn.BatchNorm2d`/`BatchNorm1d` (momentum 0.1, epsilon 1e-5), CBAM's spatial gate too.
"""

import re

# The per-unit module names under `features.stageS.unitN.`, after the unit prefix is translated.
_UNIT = r"(features\.stage\d+\.unit\d+\.)"

# (pattern, replacement) applied in order, each at most once, to the authors' key. The patterns
# inside the attention modules are anchored at a dot or the key's start, so they also translate
# the module-relative keys of a single layer (`ChannelGate.mlp.1.weight` of a lone CBAM).
_RULES = (
    (r"^conv1\.", "features.init_block.conv.conv."),
    (r"^bn1\.", "features.init_block.conv.bn."),
    (r"^fc\.", "output."),
    (r"^layer(\d+)\.(\d+)\.", lambda m: f"features.stage{m[1]}.unit{int(m[2]) + 1}."),
    (r"^bam(\d+)\.", lambda m: f"features.stage{int(m[1]) + 1}.unit1.bam."),
    (_UNIT + r"conv(\d)\.", r"\1body.conv\2.conv."),
    (_UNIT + r"bn(\d)\.", r"\1body.conv\2.bn."),
    (_UNIT + r"downsample\.0\.", r"\1identity_conv.conv."),
    (_UNIT + r"downsample\.1\.", r"\1identity_conv.bn."),
    # CBAM (cbamresnet.py: CbamBlock.ch_gate.mlp.fc1/fc2, sp_gate.conv = conv7x7_block).
    (r"(^|\.)ChannelGate\.mlp\.1\.", r"\1ch_gate.mlp.fc1."),
    (r"(^|\.)ChannelGate\.mlp\.3\.", r"\1ch_gate.mlp.fc2."),
    (r"(^|\.)SpatialGate\.spatial\.(conv|bn)\.", r"\1sp_gate.conv.\2."),
    # BAM (bamresnet.py: ch_att.init_fc/main_fcs.fcK/final_fc, sp_att.init_conv/dil_convs.convK/
    # final_conv, the conv blocks holding `conv` and `bn`).
    (r"(^|\.)channel_att\.gate_c\.gate_c_fc_0\.", r"\1ch_att.init_fc.fc."),
    (r"(^|\.)channel_att\.gate_c\.gate_c_bn_1\.", r"\1ch_att.init_fc.bn."),
    (r"(^|\.)channel_att\.gate_c\.gate_c_fc_(\d+)\.", r"\1ch_att.main_fcs.fc\2.fc."),
    (r"(^|\.)channel_att\.gate_c\.gate_c_bn_(\d+)\.",
     lambda m: f"{m[1]}ch_att.main_fcs.fc{int(m[2]) - 1}.bn."),
    (r"(^|\.)channel_att\.gate_c\.gate_c_fc_final\.", r"\1ch_att.final_fc."),
    (r"(^|\.)spatial_att\.gate_s\.gate_s_conv_reduce0\.", r"\1sp_att.init_conv.conv."),
    (r"(^|\.)spatial_att\.gate_s\.gate_s_bn_reduce0\.", r"\1sp_att.init_conv.bn."),
    (r"(^|\.)spatial_att\.gate_s\.gate_s_(conv|bn)_di_(\d+)\.",
     lambda m: f"{m[1]}sp_att.dil_convs.conv{int(m[3]) + 1}.{m[2]}."),
    (r"(^|\.)spatial_att\.gate_s\.gate_s_conv_final\.", r"\1sp_att.final_conv."),
    # SE (common/att.py: SEBlock with 1x1 convolutions conv1, conv2).
    (r"(^|\.se\.)fc([12])\.", r"\1conv\2."),
)
_COMPILED_RULES = tuple((re.compile(pattern), replacement) for pattern, replacement in _RULES)


_BAM_KEY = re.compile(r"^bam\d+\.")
_UNIT_PREFIX = re.compile(r"^features\.stage\d+\.unit\d+\.(?!bam\.)")


def pytorchcv_keys(keys):
    """{key in the authors' naming: pytorchcv's name of that parameter} for all `keys` of one
    model or layer (all of them: a BAM anywhere moves every residual unit under `res_unit`)."""
    bam_resnet = any(_BAM_KEY.match(key) for key in keys)
    names = {}
    for key in keys:
        name = key
        for pattern, replacement in _COMPILED_RULES:
            name = pattern.sub(replacement, name, count=1)
        if bam_resnet:
            name = _UNIT_PREFIX.sub(lambda m: f"{m[0]}res_unit.", name, count=1)
        names[key] = name
    return names

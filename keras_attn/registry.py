"""Attention blocks by name: the one list of names that models and the CLI accept."""

from keras_attn.layers import BAM, CBAM, ECA, SelectiveKernel, SqueezeExcite

_ATTENTIONS = {
    "cbam": CBAM,
    "bam": BAM,
    "se": SqueezeExcite,
    "sk": SelectiveKernel,
    "eca": ECA,
}
ATTENTION_NAMES = tuple(_ATTENTIONS)


def get_attention(name):
    """Returns the attention layer class registered as `name` (case-insensitive), None for None.

    Args:
        name: one of `ATTENTION_NAMES` (`"cbam"`, `"bam"`, `"se"`, `"sk"`, `"eca"`), or None.

    Example:

    >>> get_attention("cbam")(reduction_ratio=8)
    <CBAM name=cbam, built=False>
    """
    if name is None:
        return None
    if not isinstance(name, str):
        raise TypeError(f"`name` must be a string or None; got {name!r}.")
    try:
        return _ATTENTIONS[name.lower()]
    except KeyError:
        raise ValueError(
            f"`name` must be one of {ATTENTION_NAMES} or None; got {name!r}."
        ) from None

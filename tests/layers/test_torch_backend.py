"""On Keras' torch backend a layer is a `torch.nn.Module`: a plain PyTorch training loop must see
and train exactly its trainable weights. Run with KERAS_BACKEND=torch (see docs/backends.md); CI
runs tests/layers on TensorFlow and JAX only, so there these cases skip."""

import keras
import numpy as np
import pytest
from layer_testing import INPUT_SHAPE, LAYER_CASES, must_change, random_input, to_numpy

pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "torch",
    reason="needs KERAS_BACKEND=torch and PyTorch installed (docs/backends.md)",
)


@pytest.mark.parametrize("case", sorted(LAYER_CASES))
def test_torch_module_trains_exactly_the_trainable_weights(case):
    import torch

    cls, init_kwargs = LAYER_CASES[case]
    layer = cls(**init_kwargs)
    layer.build(INPUT_SHAPE)
    assert isinstance(layer, torch.nn.Module)
    with_grad = {id(p) for p in layer.parameters() if p.requires_grad}
    assert with_grad == {id(v.value) for v in layer.trainable_weights}

    before = [to_numpy(v).copy() for v in layer.trainable_weights]
    optimizer = torch.optim.SGD(layer.parameters(), lr=0.1)
    outputs = layer(torch.from_numpy(random_input()), training=True)
    torch.mean(torch.square(outputs)).backward()
    optimizer.step()
    for variable, old in zip(layer.trainable_weights, before):
        if must_change(variable):
            assert not np.array_equal(to_numpy(variable), old), f"{variable.path} did not change"

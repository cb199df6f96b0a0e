"""Layer tests start from a fixed seed, so that random initial weights are the same every run."""

import keras
import pytest


@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(0)

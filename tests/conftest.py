"""Fixtures are shared per test session: one tokenizer, one random and one trained tiny model, one
exported bundle. Each stage's fixtures live in their own module; this file only gathers them.

Layers: a test that needs the trained model (directly or through a bundle made from it) is marked
``slow`` here, so ``pytest -m "not slow"`` runs the fast layer (the generation loop on the numpy
fake decoder, contract, sampling, text, argument errors) in well under a minute."""

import pytest

from fixtures_model import random_checkpoint, tokenizer_file  # noqa: F401
from fixtures_export import export_checkpoint, optimized_bundle, tiny_bundle  # noqa: F401
from fixtures_train import trained_checkpoint  # noqa: F401
from fixtures_demo import demo_bundle, demo_server  # noqa: F401
from fixtures_quantize import quantized_bundle  # noqa: F401

# Fixtures that train, export or serve the shared model: a test using any of them is "slow".
TRAINED_CHAIN = {"trained_checkpoint", "export_checkpoint", "tiny_bundle", "optimized_bundle", "quantized_bundle",
                 "demo_bundle", "demo_server", "random_checkpoint"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if TRAINED_CHAIN & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)

"""Fixtures are shared per test session: one tokenizer, one random and one trained tiny model, one
exported bundle. Each stage's fixtures live in their own module; this file only gathers them."""

from fixtures_model import random_checkpoint, tokenizer_file  # noqa: F401
from fixtures_export import export_checkpoint, optimized_bundle, tiny_bundle  # noqa: F401
from fixtures_train import trained_checkpoint  # noqa: F401
from fixtures_demo import demo_bundle, demo_server  # noqa: F401
from fixtures_quantize import quantized_bundle  # noqa: F401

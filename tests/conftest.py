"""Fixtures are shared per test session: one tokenizer, one random and one trained tiny model, one
exported bundle. Each stage's fixtures live in their own module; this file only gathers them."""

from fixtures_model import random_checkpoint, tokenizer_file  # noqa: F401

"""How to generate: the settings a call (or a bundle's manifest, as its defaults) gives the loop.

Standard library only, because the bundle contract (``contract.Manifest.sampling``) stores them.
Each field is checked when the settings are made, so a bad value is a one-line ``UserError``
naming the field and its range, whether it came from a call, the CLI, the demo or a manifest.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass
from typing import Any

from gptedge.errors import UserError, check_text


@dataclass(frozen=True)
class GenerationSettings:
    """How to generate. A bundle's manifest ``sampling`` dict sets its defaults; calls override
    single fields. ``temperature`` 0 is greedy; ``top_k`` 0 and ``top_p`` 1.0 switch those off."""

    max_new_tokens: int = 128
    temperature: float = 0.8
    top_k: int = 50
    top_p: float = 0.95
    repetition_penalty: float = 1.0
    seed: int | None = None  # None: a fresh random seed per call
    stop: tuple[str, ...] = ()  # strings that end generation; trimmed from the text
    ignore_eos: bool = False  # keep going past the end-of-text token (exactly max_new_tokens)

    def __post_init__(self) -> None:
        stop = self.stop if self.stop is not None else ()
        if isinstance(stop, str):
            stop = (stop,)
        elif isinstance(stop, (list, tuple)):
            stop = tuple(stop)
        else:  # a number, bytes (a sequence of ints), a dict...: not what anyone means by stop strings
            raise UserError(f"stop={stop!r} is invalid: use a string or a list of strings")
        object.__setattr__(self, "stop", stop)
        self._check()

    def replace(self, **overrides: Any) -> "GenerationSettings":
        unknown = set(overrides) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise UserError(
                f"unknown generation setting {', '.join(sorted(unknown))}: use "
                f"{', '.join(f.name for f in dataclasses.fields(self))}"
            )
        return dataclasses.replace(self, **overrides)

    def _check(self) -> None:
        def bad(name: str, rule: str) -> UserError:
            return UserError(f"{name}={getattr(self, name)!r} is invalid: use {rule}")

        if not _is_int(self.max_new_tokens) or self.max_new_tokens < 0:
            raise bad("max_new_tokens", "a whole number >= 0")
        if not _is_number(self.temperature) or self.temperature < 0:
            raise bad("temperature", "a number >= 0 (0 is greedy)")
        if not _is_int(self.top_k) or self.top_k < 0:
            raise bad("top_k", "a whole number >= 0 (0 switches it off)")
        if not _is_number(self.top_p) or not 0 < self.top_p <= 1:
            raise bad("top_p", "a number in (0, 1] (1 switches it off)")
        if not _is_number(self.repetition_penalty) or self.repetition_penalty <= 0:
            raise bad("repetition_penalty", "a number > 0 (1 switches it off)")
        if self.seed is not None and (not _is_int(self.seed) or self.seed < 0):
            raise bad("seed", "a whole number >= 0, or none")
        if not all(isinstance(s, str) and s for s in self.stop):
            raise bad("stop", "a string or a list of strings, none of them empty")
        for s in self.stop:
            check_text(s, f"stop string {s!r}")
        if not isinstance(self.ignore_eos, bool):
            raise bad("ignore_eos", "True or False")


def _is_int(x: Any) -> bool:
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def _is_number(x: Any) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool) and math.isfinite(x)

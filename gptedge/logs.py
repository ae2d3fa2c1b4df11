"""Quieting other libraries' loggers for one block, so a command's output stays its own."""

from __future__ import annotations

import contextlib
import logging
from typing import Iterator


@contextlib.contextmanager
def quiet(*names: str) -> Iterator[None]:
    """Silence these loggers below ERROR for the block (torch.onnx warns once per op it registers;
    onnxruntime's ORT-format tools log every file they write at INFO), then restore their levels."""
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)

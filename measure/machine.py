"""What a measurement ran on, and how much memory it took: the facts every report states."""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path


def describe() -> str:
    """The processor and core count, e.g. "AMD EPYC 9654 96-Core Processor, 2 cores"."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()}, {os.cpu_count()} cores"
    except OSError:
        pass
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"


def peak_rss_mb() -> float | None:
    """This process's peak resident set size (None where the OS does not say, e.g. Windows)."""
    try:
        import resource
    except ImportError:
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB on Linux


def current_rss_mb() -> float | None:
    """This process's resident memory now (Linux; None elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return None

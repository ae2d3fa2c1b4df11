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


def cpu_seconds() -> tuple[float, float] | None:
    """(CPU seconds the whole machine has been busy, CPU seconds of this process and the children
    it has waited for), both since boot or start; None where /proc/stat is missing (not Linux).

    Busy is /proc/stat's user, nice, system, irq, softirq and steal time (guest time is already in
    user and nice; steal is CPU a hypervisor gave to another machine, a disturbance too). The
    difference of two readings, less what this process and its workers used, is the CPU that
    other processes took meanwhile."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    import resource  # after the check: Linux has it, Windows has neither

    user, nice, system, _idle, _iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    busy = (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")
    own = sum(r.ru_utime + r.ru_stime for r in (resource.getrusage(resource.RUSAGE_SELF),
                                                resource.getrusage(resource.RUSAGE_CHILDREN)))
    return busy, own

"""Refusing work that cannot fit in memory, before anything is allocated (`modhifi train`
of a huge architecture, `modhifi synthesize` of too many samples)."""

from __future__ import annotations

import os
from pathlib import Path

from modhifi_core.errors import InputError


def available_memory_bytes() -> int:
    """Memory this process may still allocate: MemAvailable of /proc/meminfo (else the
    free physical pages), capped by the cgroup limit when one is set."""
    available = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                available = int(line.split()[1]) * 1024
    except OSError:
        pass
    if available is None:
        available = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        usage = int(Path("/sys/fs/cgroup/memory.current").read_text().strip())
        if limit != "max":
            available = min(available, int(limit) - usage)
    except (OSError, ValueError):
        pass
    return available


def check_fits_in_memory(needed_bytes: int, what: str) -> None:
    """Refuse work whose estimated memory (`needed_bytes`) exceeds what is available."""
    available = available_memory_bytes()
    if needed_bytes > available:
        raise InputError(f"{what} needs about {_gib(needed_bytes)} of memory, but only {_gib(available)} is available")


def _gib(n: int) -> str:
    return f"{n / 2**30:,.1f} GiB"

"""Progress bars (tqdm), silenced by MODHIFI_PROGRESS=0 or when stderr is not a terminal."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from typing import TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")


def progress(iterable: Iterable[T], desc: str, **kwargs) -> Iterable[T]:
    enabled = os.environ.get("MODHIFI_PROGRESS", "auto")
    disable = enabled == "0" or (enabled == "auto" and not sys.stderr.isatty())
    return tqdm(iterable, desc=desc, disable=disable, leave=False, **kwargs)

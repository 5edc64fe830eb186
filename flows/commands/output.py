"""What every command that writes does first, before any work starts: refuse an output
path it could not (or should not) write (`check_output`)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from modhifi_core.errors import InputError

_PSEUDO_FILESYSTEMS = (Path("/proc"), Path("/sys"), Path("/dev"))


def check_output(path: Path, overwrite: bool = False, folder: bool = False) -> Path:
    """Refuse (`InputError`, one line naming `path`) an `--out` that this command must not
    or cannot write: an existing file (or, with `folder`, an existing non-empty folder)
    unless `overwrite`; a folder where a file is wanted (and vice versa); a path under a
    pseudo-filesystem (/proc, /sys, /dev); a parent that is a file or is not writable.

    Writability is probed by creating (and at once deleting) an unnamed temporary file in
    the nearest existing parent folder, not with `os.access`: root passes every permission
    check, yet cannot write into /proc or a read-only mount. Nothing is left on disk.
    """
    path = Path(path)
    absolute = Path(os.path.abspath(path))
    for pseudo in _PSEUDO_FILESYSTEMS:
        if absolute == pseudo or pseudo in absolute.parents:
            raise InputError(f"--out {path}: cannot write under {pseudo} (not a place for files)")
    if folder:
        if path.exists() and not path.is_dir():
            raise InputError(f"--out {path} is a file; give a folder path")
        if path.is_dir() and any(path.iterdir()) and not overwrite:
            raise InputError(f"--out {path} already exists and is not empty; pass --overwrite to replace it")
    else:
        if path.is_dir():
            raise InputError(f"--out {path} is a folder; give a checkpoint file path")
        if path.exists() and not overwrite:
            raise InputError(f"--out {path} already exists; pass --overwrite to replace it")
    _check_writable(path, absolute)
    return path


def _check_writable(path: Path, absolute: Path) -> None:
    parent = absolute.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise InputError(f"--out {path}: cannot create it, {parent} is a file, not a folder")
    try:
        with tempfile.TemporaryFile(dir=parent):
            pass
    except OSError as exc:
        raise InputError(f"--out {path}: cannot write in {parent} ({exc.strerror or type(exc).__name__})") from None

"""What every command that writes does first, before any work starts: refuse an output
path it could not (or should not) write (`check_output`), the command's own inputs among
them (`check_not_input`)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

from modhifi_core.errors import InputError

_PSEUDO_FILESYSTEMS = (Path("/proc"), Path("/sys"), Path("/dev"))


def check_output(
    path: Path,
    overwrite: bool = False,
    folder: bool = False,
    inputs: Iterable[object] = (),
    models: Iterable[object] = (),
) -> Path:
    """Refuse (`InputError`, one line naming `path`) an `--out` that this command must not
    or cannot write: one of its `inputs` or `models` (`check_not_input`), `--overwrite` or not; an
    existing file (or, with `folder`, an existing non-empty folder) unless `overwrite`; a
    folder where a file is wanted (and vice versa); a path under a pseudo-filesystem
    (/proc, /sys, /dev); a parent that is a file or is not writable.

    Writability is probed by creating (and at once deleting) an unnamed temporary file in
    the nearest existing parent folder, not with `os.access`: root passes every permission
    check, yet cannot write into /proc or a read-only mount. Nothing is left on disk.
    """
    path = Path(path)
    absolute = Path(os.path.abspath(path))
    for pseudo in _PSEUDO_FILESYSTEMS:
        if absolute == pseudo or pseudo in absolute.parents:
            raise InputError(f"--out {path}: cannot write under {pseudo} (not a place for files)")
    check_not_input(path, inputs, models)
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


# The prefixes of option values that name a path after them (`hf:DIR`, `text:FILE`).
_PATH_PREFIXES = ("hf:", "text:")


def check_not_input(out: Path, inputs: Iterable[object], models: Iterable[object] = ()) -> None:
    """Refuse an `--out` that is one of the command's `inputs` or `models`, or a folder
    holding one, or lies inside one of the `models` (a model folder): writing it would
    replace the input (the source model first) with the command's result, whatever
    `--overwrite` says. Both are option values the user gave; those that name an existing
    file or folder (as they are, or after an `hf:`/`text:` prefix) count. Links are
    followed on both sides."""
    target = Path(os.path.realpath(out))
    given_values = [(value, True) for value in models] + [(value, False) for value in inputs]
    for value, is_model in given_values:
        for given in input_paths(value):
            source = Path(os.path.realpath(given))
            if target == source:
                where = "is"
            elif is_model and source in target.parents:
                where = "lies inside"
            elif target in source.parents:
                where = "is a folder holding"
            else:
                continue
            raise InputError(
                f"--out {out} {where} the input {given}: writing it would destroy that input "
                "(--overwrite or not); choose another --out"
            )


def input_paths(value: object) -> list[Path]:
    """The existing files or folders an option value names (none for a number, a method name)."""
    if not isinstance(value, str | os.PathLike):
        return []
    text = os.fspath(value)
    candidates = [text] + [text[len(p) :] for p in _PATH_PREFIXES if text.startswith(p)]
    return [Path(c).expanduser() for c in candidates if c and os.path.exists(Path(c).expanduser())]


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

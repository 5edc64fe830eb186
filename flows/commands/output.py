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
    _check_not_ancestor(out, models)


# An existing --out larger than this is not hashed to compare it with the input's parents.
MAX_ANCESTOR_HASH_BYTES = 4 << 30


def _check_not_ancestor(out: Path, models: Iterable[object]) -> None:
    """Refuse an existing `--out` that one of the `models` records as its parent by sha256
    (a checkpoint's metadata parents, a folder's modhifi.json parents): an ancestor kept
    elsewhere under another name. Only what the lineage names is hashed: `--out` itself
    if a file (not above `MAX_ANCESTOR_HASH_BYTES`: a warning says it was not compared),
    or in a folder the parent files by their recorded names and its own modhifi.json's
    weight digests."""
    from flows.lineage import recorded_parents

    target = Path(out)
    if not target.exists():
        return
    given_models = [given for value in models for given in input_paths(value)]
    digests: dict[str | None, list[tuple[Path, str]]] = {}  # each file hashed once
    for given, role, name, sha in [(m, *p) for m in given_models for p in recorded_parents(m)]:
        if name not in digests:
            digests[name] = _digests(target, name)
        for found, digest in digests[name]:
            if digest == sha:
                raise InputError(
                    f"--out {out} is an ancestor of the input {given}: {found} has the sha256 its lineage records "
                    f"for parent {role!r} ({sha[:12]}...); writing it would destroy that ancestor "
                    "(--overwrite or not); choose another --out"
                )


def _digests(target: Path, name: str | None) -> list[tuple[Path, str]]:
    """(file, sha256) in `target` comparable with a parent recorded under `name` (None: a
    whole checkpoint file)."""
    import json
    import sys

    from modhifi_core.safe_io import sha256_file

    if target.is_file():
        if target.stat().st_size > MAX_ANCESTOR_HASH_BYTES:
            size = target.stat().st_size / 2**30
            sys.stderr.write(f"warning: --out {target} ({size:.0f} GiB) not hashed to check it is no ancestor\n")
            return []
        return [(target, sha256_file(target))]
    found = []
    if name is not None and (target / name).is_file() and (target / name).stat().st_size <= MAX_ANCESTOR_HASH_BYTES:
        found.append((target / name, sha256_file(target / name)))
    try:  # what the folder's own lineage says its weights are
        weights = json.loads((target / "modhifi.json").read_text()).get("weights") or {}
        found += [(target / file, sha) for file, sha in weights.items() if isinstance(sha, str)]
    except (OSError, ValueError, AttributeError):
        pass
    return found


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

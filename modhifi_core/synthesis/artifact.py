"""The synthetic-data artifact: a folder that `load_sample_folder` reads.

    DIR/samples.npz      images (N, C, H, W) float32 in the model's input space, labels (N,) int64
    DIR/preview.png      a grid of samples per class (see preview.py)
    DIR/synthesis.json   method, classes, seed, hyper-parameters, quality figures, sha256 of
                         samples.npz, parent model hash

The folder is built beside its destination and renamed into place, so a failed or
killed run leaves the previous folder (or none). Same samples give the same bytes:
the npz archive carries no timestamps and synthesis.json no wall-clock time.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from modhifi_core.data import ArrayDataset, load_sample_folder
from modhifi_core.errors import InputError
from modhifi_core.safe_io import atomic_write_bytes, atomic_write_json, sha256_file

if TYPE_CHECKING:
    from modhifi_core.synthesis import SynthesisResult

FORMAT = "modhifi-synthetic"
VERSION = 1
SAMPLES = "samples.npz"
PREVIEW = "preview.png"
MANIFEST = "synthesis.json"


def check_output_folder(out: str | Path) -> Path:
    """Refuse (InputError) an output path that is a file, or a non-empty folder that is
    not a synthetic-data artifact (it would be replaced). Call before the work starts."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(f"output {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / MANIFEST).is_file():
        raise InputError(f"refusing to replace {out}: it is not empty and holds no {MANIFEST}")
    return out


def save_synthetic(result: SynthesisResult, out: str | Path, parents: dict[str, str] | None = None) -> dict[str, Any]:
    """Write `result` as the artifact folder `out` (replacing a previous artifact there);
    returns the manifest written to synthesis.json."""
    from modhifi_core.synthesis.preview import render_preview

    out = check_output_folder(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        samples = result.samples
        atomic_write_bytes(
            staging / SAMPLES, npz_bytes({"images": samples.images.numpy(), "labels": samples.labels.numpy()})
        )
        atomic_write_bytes(staging / PREVIEW, render_preview(samples, result.predicted, preview_title(result)))
        manifest = {
            "format": FORMAT,
            "version": VERSION,
            "method": result.method,
            "num_classes": samples.num_classes,
            "classes": result.classes,
            "per_class": result.per_class,
            "samples": len(samples),
            "image_shape": list(samples.image_shape),
            "seed": result.seed,
            "config": result.config,
            "quality": result.quality,
            "warnings": list(result.warnings),
            "samples_sha256": sha256_file(staging / SAMPLES),
            "parents": parents or {},
        }
        atomic_write_json(staging / MANIFEST, _finite(manifest))
        _swap_into_place(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return manifest


def load_synthetic(folder: str | Path, num_classes: int | None = None) -> ArrayDataset:
    """The samples of an artifact folder (or of any sample folder). `num_classes`
    defaults to the manifest's, else to what the labels imply."""
    folder = Path(folder)
    if num_classes is None and (folder / MANIFEST).is_file():
        try:
            num_classes = int(json.loads((folder / MANIFEST).read_text())["num_classes"])
        except (ValueError, KeyError, TypeError) as exc:
            raise InputError(f"unreadable {folder / MANIFEST}: {exc}") from None
    return load_sample_folder(folder, num_classes=num_classes)


def samples_digest(folder: str | Path) -> str:
    """The sha256 of a sample folder's sample files (comma-joined, sorted by name): the
    parent hash a model made from these samples records."""
    files = sorted(p for p in Path(folder).iterdir() if p.suffix in (".npz", ".pt"))
    return ",".join(sha256_file(p) for p in files)


def preview_title(result: SynthesisResult) -> str:
    q = result.quality
    line = f"model agrees with the target label on {q['agreement']:.1f}% · diversity {q['diversity']:.3f}"
    if "diversity_real" in q:
        line += f" (real data {q['diversity_real']:.3f})"
    return f"{result.method} samples · {len(result.samples)} images of {len(result.classes)} classes\n{line}"


def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """An uncompressed .npz archive (what `np.savez` writes) with fixed timestamps."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        for name, array in arrays.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            with archive.open(info, "w", force_zip64=True) as handle:
                np.lib.format.write_array(handle, np.ascontiguousarray(array), allow_pickle=False)
    return buffer.getvalue()


def _swap_into_place(staging: Path, out: Path) -> None:
    if not out.exists():
        os.replace(staging, out)
        return
    retired = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
    os.replace(out, retired / out.name)
    os.replace(staging, out)
    shutil.rmtree(retired, ignore_errors=True)


def _finite(value: Any) -> Any:
    """NaN/inf become None so synthesis.json is strict JSON."""
    if isinstance(value, float) and not np.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value

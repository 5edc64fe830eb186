"""Text calibration: `text:PATH` (a file or a folder of text files) tokenised with the
model's tokenizer and cut into N seeded windows of L tokens."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from modhifi_core.errors import InputError


def text_files(path: str | os.PathLike) -> list[Path]:
    """`path` itself, or every file under the folder `path` (recursive, sorted by path)."""
    path = Path(str(path).removeprefix("text:")).expanduser()
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise InputError(f"text source {path} does not exist")
    files = sorted(p for p in path.rglob("*") if p.is_file())
    if not files:
        raise InputError(f"text folder {path} has no files")
    weights = sorted((p for p in files if _is_model_file(p)), key=lambda p: p.name == "config.json")
    if weights:
        raise InputError(f"text source {path} is a model folder (it holds {weights[0].name}), not text")
    return files


# Files that make a folder a model, not text (its JSON and tokenizer files would read as text).
WEIGHT_SUFFIXES = (".safetensors", ".gguf", ".pt", ".pth", ".ckpt")


def _is_model_file(path: Path) -> bool:
    """A model's config or weights (a `.bin` only by its Hugging Face name: other binary
    files in a documentation folder are skipped as text that is not UTF-8)."""
    bin_weights = path.suffix == ".bin" and path.name.startswith("pytorch_model")
    return path.name == "config.json" or path.suffix in WEIGHT_SUFFIXES or bin_weights


def check_text(path: str | os.PathLike) -> None:
    """`InputError` unless `path` (a file or folder, see `text_files`) holds some UTF-8
    text: what `read_text` would refuse, found by reading only up to its first good file."""
    for file in text_files(path):
        try:
            if file.read_text(encoding="utf-8").strip():
                return
        except UnicodeDecodeError:
            continue
    raise InputError(f"text source {path} holds no UTF-8 text")


def read_text(path: str | os.PathLike) -> str:
    """The UTF-8 text of a file, or of every decodable file in a folder joined by blank
    lines (files that are not UTF-8 are skipped). InputError when nothing is left."""
    parts = []
    for file in text_files(path):
        try:
            parts.append(file.read_text(encoding="utf-8"))
        except UnicodeDecodeError:
            continue
    text = "\n\n".join(p for p in parts if p.strip())
    if not text:
        raise InputError(f"text source {path} holds no UTF-8 text")
    return text


def tokenize_text(text: str, tokenizer: Any, chunk_chars: int = 1 << 20) -> Tensor:
    """Token ids of `text` as one 1-D int64 tensor (no special tokens; tokenised in
    paragraph-aligned chunks of about `chunk_chars` characters to bound memory)."""
    ids: list[int] = []
    start = 0
    while start < len(text):
        end = min(len(text), start + chunk_chars)
        if end < len(text):
            cut = text.rfind("\n\n", start, end)
            end = cut + 2 if cut > start else end
        # verbose=False: the whole text is longer than the model's positions by design (it is
        # cut into windows next); transformers' warning that it is would mislead
        ids.extend(tokenizer(text[start:end], add_special_tokens=False, verbose=False)["input_ids"])
        start = end
    return torch.tensor(ids, dtype=torch.long)


def available_windows(source: str | os.PathLike, tokenizer: Any, length: int) -> int:
    """How many non-overlapping windows of `length` tokens the text `source` holds."""
    return len(tokenize_text(read_text(source), tokenizer)) // length


def text_windows(source: str | os.PathLike | list, tokenizer: Any, n: int, length: int, seed: int = 0) -> Tensor:
    """`(n, length)` token ids: `n` distinct non-overlapping windows of the tokenised
    `source` (`text:PATH`, a file or folder, or a list of them joined), chosen uniformly
    with `seed`, in source order."""
    if n < 1 or length < 2:
        raise InputError(f"need n >= 1 windows of length >= 2, got {n} x {length}")
    sources = source if isinstance(source, (list, tuple)) else [source]
    ids = tokenize_text("\n\n".join(read_text(s) for s in sources), tokenizer)
    available = len(ids) // length
    if available < n:
        raise InputError(f"{source} has {len(ids)} tokens: {available} windows of {length}, fewer than {n}")
    generator = torch.Generator().manual_seed(seed)
    starts = torch.randperm(available, generator=generator)[:n].sort().values * length
    return torch.stack([ids[s : s + length] for s in starts.tolist()])


_MARKUP = re.compile(r":[a-z:]+:`([^`<]*)(?:<[^>]*>)?`|``([^`]*)``|[*`|]")


def sentences_from_text(text: str, min_words: int = 6, max_words: int = 60) -> list[str]:
    """Prose sentences of a reST/plain text: markup roles and literals reduced to their
    text, directives, code blocks, tables and headings dropped, split at sentence ends,
    kept when `min_words`..`max_words` words long, duplicates removed (first kept)."""
    prose = []
    for paragraph in re.split(r"\n\s*\n", text):
        lines = paragraph.strip().splitlines()
        if not lines or lines[0].startswith((" ", "..", ">>>", "+", "=", "-", "*")) or "::" in paragraph[-3:]:
            continue
        prose.append(" ".join(line.strip() for line in lines))
    seen, sentences = set(), []
    for paragraph in prose:
        cleaned = _MARKUP.sub(lambda m: m.group(1) or m.group(2) or "", paragraph)
        for sentence in re.split(r"(?<=[.!?])\s+(?=[A-Z])", cleaned):
            words = sentence.split()
            if min_words <= len(words) <= max_words and sentence not in seen:
                seen.add(sentence)
                sentences.append(sentence)
    return sentences


def held_out_sentences(source: str | os.PathLike, n: int, seed: int = 0) -> list[str]:
    """`n` distinct prose sentences (`sentences_from_text`) of the text at `source` (a file
    or folder, `text:` prefix allowed), chosen uniformly with `seed`, in source order."""
    sentences = sentences_from_text(read_text(source))
    if len(sentences) < n:
        raise InputError(f"{source} has {len(sentences)} prose sentences, fewer than the {n} asked for")
    generator = torch.Generator().manual_seed(seed)
    picked = torch.randperm(len(sentences), generator=generator)[:n].sort().values
    return [sentences[i] for i in picked.tolist()]

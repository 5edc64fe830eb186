"""Language-model data and measurements: text calibration windows, data-free self-sampled
sequences, perplexity, and sentence-embedding agreement for encoders."""

from modhifi_core.language.calibration import (
    held_out_sentences,
    read_text,
    sentences_from_text,
    text_windows,
    tokenize_text,
)
from modhifi_core.language.evaluation import (
    embedding_agreement,
    embedding_cosines,
    encoder_agreement,
    perplexity,
    sentence_embeddings,
)
from modhifi_core.language.sampling import sample_sequences

__all__ = [
    "embedding_agreement",
    "embedding_cosines",
    "encoder_agreement",
    "held_out_sentences",
    "perplexity",
    "read_text",
    "sample_sequences",
    "sentence_embeddings",
    "sentences_from_text",
    "text_windows",
    "tokenize_text",
]

"""Text calibration windows, self-sampled sequences, perplexity and encoder agreement."""

from __future__ import annotations

import math

import pytest
import torch
from llm_models import VOCAB, tiny, word_tokenizer

from modhifi_core.errors import InputError
from modhifi_core.language import (
    encoder_agreement,
    perplexity,
    sample_sequences,
    sentence_embeddings,
    sentences_from_text,
    text_windows,
)

_WORDS = "the of and to a in is it you that he was for on are with as his they be at one have this".split()
# aperiodic, so every window occurs once in the token stream
TEXT = " ".join(
    _WORDS[int(i)] for i in torch.randint(0, len(_WORDS), (3000,), generator=torch.Generator().manual_seed(0))
)


def test_text_windows_are_seeded_distinct_and_cut_from_the_tokenised_source(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.txt").write_text(TEXT)
    (tmp_path / "docs" / "b.bin").write_bytes(b"\xff\xfe\x00binary")  # not UTF-8: skipped
    tokenizer = word_tokenizer()
    ids = torch.tensor(tokenizer(TEXT, add_special_tokens=False)["input_ids"])
    windows = text_windows(f"text:{tmp_path / 'docs'}", tokenizer, 10, 16, seed=0)
    assert windows.shape == (10, 16)
    starts = []
    for row in windows:
        matches = [s for s in range(0, len(ids) - 15, 16) if torch.equal(ids[s : s + 16], row)]
        assert matches
        starts.append(matches[0])
    assert starts == sorted(starts) and len(set(starts)) == 10  # non-overlapping, in source order
    assert torch.equal(windows, text_windows(tmp_path / "docs" / "a.txt", tokenizer, 10, 16, seed=0))
    assert not torch.equal(windows, text_windows(tmp_path / "docs", tokenizer, 10, 16, seed=1))
    with pytest.raises(InputError, match="fewer than"):
        text_windows(tmp_path / "docs", tokenizer, 10_000, 16)
    with pytest.raises(InputError, match="does not exist"):
        text_windows(tmp_path / "nowhere", tokenizer, 1, 16)


def test_perplexity_is_exp_of_the_models_own_mean_loss():
    model = tiny("llama")
    windows = torch.randint(0, VOCAB, (5, 12), generator=torch.Generator().manual_seed(0))
    measured = perplexity(model, windows, batch_size=2)
    with torch.no_grad():
        loss = model(input_ids=windows, labels=windows).loss.item()  # mean over all 5 x 11 predictions
    assert measured["tokens"] == 5 * 11
    assert measured["perplexity"] == pytest.approx(math.exp(loss), rel=1e-5)


def test_self_sampling_is_seeded_and_top_p_near_zero_is_greedy():
    model, tokenizer = tiny("llama"), word_tokenizer()
    model.generation_config.pad_token_id = tokenizer.eos_token_id
    a = sample_sequences(model, tokenizer, 5, 10, seed=0, batch_size=2)
    assert a.shape == (5, 10) and bool((a[:, 0] == tokenizer.bos_token_id).all())
    assert torch.equal(a, sample_sequences(model, tokenizer, 5, 10, seed=0, batch_size=2))
    assert not torch.equal(a, sample_sequences(model, tokenizer, 5, 10, seed=1, batch_size=2))
    nucleus = sample_sequences(model, tokenizer, 2, 10, seed=3, top_p=1e-9)
    greedy = model.generate(
        input_ids=nucleus[:, :1], do_sample=False, max_new_tokens=9, min_new_tokens=9, pad_token_id=2
    )
    assert torch.equal(nucleus, greedy)
    random_start = sample_sequences(model, tokenizer, 6, 4, seed=0, prompt="random")
    assert len(set(random_start[:, 0].tolist())) > 1
    with pytest.raises(InputError, match="cannot generate"):
        sample_sequences(tiny("bert"), tokenizer, 2, 4)


def test_encoder_agreement_against_brute_force():
    generator = torch.Generator().manual_seed(0)
    dense = torch.randn(30, 8, generator=generator, dtype=torch.float64)
    assert encoder_agreement(dense, dense.clone())["mean_cosine"] == pytest.approx(1.0)
    assert encoder_agreement(dense, 3 * dense)["top10_agreement"] == 1.0  # scale-free
    noisy = dense + 0.7 * torch.randn(30, 8, generator=generator, dtype=torch.float64)
    measured = encoder_agreement(dense, noisy, k=10)
    unit = lambda x: x / x.norm(dim=1, keepdim=True)  # noqa: E731
    cosines = [float(unit(dense)[i] @ unit(noisy)[i]) for i in range(30)]

    def nearest(x, i):
        sims = [(float(unit(x)[i] @ unit(x)[j]), j) for j in range(30) if j != i]
        return {j for _, j in sorted(sims, reverse=True)[:10]}

    overlap = sum(len(nearest(dense, i) & nearest(noisy, i)) / 10 for i in range(30)) / 30
    assert measured["mean_cosine"] == pytest.approx(sum(cosines) / 30, rel=1e-9)
    assert measured["top10_agreement"] == pytest.approx(overlap)
    assert measured["top10_agreement"] < 1.0


def test_sentence_embeddings_mean_pool_over_real_tokens_only():
    model, tokenizer = tiny("bert"), word_tokenizer()
    sentences = ["the word of one", "the word of one and some other word you can use"]
    together = sentence_embeddings(model, tokenizer, sentences, batch_size=2)  # first one padded
    alone = sentence_embeddings(model, tokenizer, sentences[:1], batch_size=1)
    torch.testing.assert_close(together[0], alone[0], rtol=1e-5, atol=1e-5)


def test_sentences_from_rest_keep_prose_and_drop_markup():
    text = (
        "Title\n=====\n\nThe :func:`len` function returns the number of items in a container. "
        "It works on ``str`` objects too.\n\n.. note::\n   A directive.\n\n>>> len([1])\n1\n"
    )
    assert sentences_from_text(text) == [
        "The len function returns the number of items in a container.",
        "It works on str objects too.",
    ]

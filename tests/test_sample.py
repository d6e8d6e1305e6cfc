"""Sampling: exact length, determinism, truncation rules and the prime."""

from __future__ import annotations

import pytest
import torch

from charrnn.checkpoint import load_checkpoint, model_from_checkpoint
from charrnn.errors import DataError
from charrnn.sample import choose, generate


@pytest.fixture(scope="module")
def trained(tiny_run):
    return model_from_checkpoint(load_checkpoint(tiny_run / "best.pt"))


def text_of(steps) -> list[str]:
    columns = list(steps)
    return ["".join(col[i] for col in columns) for i in range(len(columns[0]))]


def test_exact_length_and_same_seed_same_text(trained):
    model, vocab = trained
    a = text_of(generate(model, vocab, 120, seed=7))
    b = text_of(generate(model, vocab, 120, seed=7))
    c = text_of(generate(model, vocab, 120, seed=8))
    assert len(a[0]) == 120 and a == b and a != c
    assert set(a[0]) <= set(vocab.chars)


def test_a_batch_of_samples_has_one_text_per_sample(trained):
    model, vocab = trained
    texts = text_of(generate(model, vocab, 50, prime="ROMEO:", num_samples=5, seed=1))
    assert len(texts) == 5 and all(len(t) == 50 for t in texts)
    assert len(set(texts)) > 1  # independent draws


def test_greedy_equals_top_k_one_and_is_deterministic(trained):
    model, vocab = trained
    greedy = text_of(generate(model, vocab, 60, prime="The ", greedy=True))
    top1 = text_of(generate(model, vocab, 60, prime="The ", top_k=1, seed=123))
    assert greedy == top1


def test_the_prime_changes_what_follows(trained):
    model, vocab = trained
    a = text_of(generate(model, vocab, 40, prime="KING", greedy=True))
    b = text_of(generate(model, vocab, 40, prime="ka ka ka ", greedy=True))
    assert a != b


def test_unknown_prime_characters_are_listed(trained):
    model, vocab = trained
    with pytest.raises(DataError, match="prime text has 2 character.* ü €"):
        generate(model, vocab, 10, prime="Hello ü€")


def test_choose_truncates_the_distribution():
    logits = torch.tensor([[3.0, 2.0, 1.0, 0.0]]).repeat(2000, 1)
    g = torch.Generator().manual_seed(0)
    assert set(choose(logits, top_k=2, generator=g).tolist()) == {0, 1}
    # p(0) = 0.64, p(0) + p(1) = 0.88: top_p 0.7 keeps exactly the first two.
    assert set(choose(logits, top_p=0.7, generator=g).tolist()) == {0, 1}
    assert set(choose(logits, top_p=0.5, generator=g).tolist()) == {0}
    cold = choose(logits, temperature=0.05, generator=g)
    assert (cold == 0).float().mean() > 0.99
    assert set(choose(logits, generator=g).tolist()) == {0, 1, 2, 3}

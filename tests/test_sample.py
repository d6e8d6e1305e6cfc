"""Sampling: exact length, determinism, truncation rules and the prime."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from charrnn.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
from charrnn.config import ModelConfig, TrainConfig, to_dict
from charrnn.data import Vocab
from charrnn.errors import DataError, SettingError
from charrnn.model import CharRNN
from charrnn.sample import Sampling, beam_search, generate, nats_of, stream, until_stop

from helpers import CELLS, prime_sensitive_model, run


@pytest.fixture(scope="module")
def trained(tiny_run):
    return model_from_checkpoint(load_checkpoint(tiny_run / "best.pt"))


def test_exact_length_and_same_seed_same_text(trained):
    model, vocab = trained
    a = generate(model, vocab, 120, seed=7)
    b = generate(model, vocab, 120, seed=7)
    c = generate(model, vocab, 120, seed=8)
    assert len(a[0]) == 120 and a == b and a != c
    assert set(a[0]) <= set(vocab.chars)
    assert generate(model, vocab, 0, num_samples=2) == ["", ""]


def test_a_batch_of_samples_has_one_text_per_sample(trained):
    model, vocab = trained
    texts = generate(model, vocab, 50, prime="ROMEO:", num_samples=5, seed=1)
    assert len(texts) == 5 and all(len(t) == 50 for t in texts)
    assert len(set(texts)) > 1  # independent draws


def test_streaming_one_sample_draws_what_generate_draws(trained):
    model, vocab = trained
    for prime, seed in (("ROMEO:", 5), (None, 6)):
        streamed = stream(model, vocab, 80, prime=prime, seed=seed, temperature=0.7)
        assert "".join(streamed) == generate(model, vocab, 80, prime=prime, seed=seed,
                                             temperature=0.7)[0]
    with pytest.raises(DataError, match="prime text"):
        stream(model, vocab, 10, prime="Hello ü€")   # refused before the first character


def test_greedy_equals_top_k_one_and_is_deterministic(trained):
    model, vocab = trained
    greedy = generate(model, vocab, 60, prime="The ", greedy=True)
    top1 = generate(model, vocab, 60, prime="The ", top_k=1, seed=123)
    assert greedy == top1


def test_the_prime_changes_what_follows(trained):
    model, vocab = trained
    a = generate(model, vocab, 40, prime="KING", greedy=True)
    b = generate(model, vocab, 40, prime="ka ka ka ", greedy=True)
    assert a != b


def test_unknown_prime_characters_are_listed(trained):
    model, vocab = trained
    with pytest.raises(DataError, match="prime text has 2 character.* ü €"):
        generate(model, vocab, 10, prime="Hello ü€")


def test_choose_truncates_the_distribution():
    logits = torch.tensor([[3.0, 2.0, 1.0, 0.0]]).repeat(2000, 1)
    g = torch.Generator().manual_seed(0)
    assert set(Sampling(top_k=2).choose(logits, g).tolist()) == {0, 1}
    # p(0) = 0.64, p(0) + p(1) = 0.88: top_p 0.7 keeps exactly the first two.
    assert set(Sampling(top_p=0.7).choose(logits, g).tolist()) == {0, 1}
    assert set(Sampling(top_p=0.5).choose(logits, g).tolist()) == {0}
    cold = Sampling(temperature=0.05).choose(logits, g)
    assert (cold == 0).float().mean() > 0.99
    assert set(Sampling().choose(logits, g).tolist()) == {0, 1, 2, 3}


@pytest.mark.parametrize("setting, name", [
    (dict(temperature=0.0), "temperature"), (dict(temperature=-1.0), "temperature"),
    (dict(temperature=float("nan")), "temperature"), (dict(temperature=float("inf")),
                                                      "temperature"),
    (dict(top_k=0), "top-k"), (dict(top_p=0.0), "top-p"), (dict(top_p=1.5), "top-p")])
def test_every_way_to_sample_refuses_a_bad_setting_at_once(trained, setting, name):
    model, vocab = trained
    for draw in (generate, stream):
        with pytest.raises(SettingError) as refused:
            draw(model, vocab, 10, **setting)           # before any character is drawn
        assert refused.value.name == name and str(refused.value).startswith(name + " must")


@pytest.mark.parametrize("chars, stop, expected", [
    ("abcabc", "ca", "abca"), ("abcabc", "abc", "abc"), ("abcabc", "x", "abcabc"),
    ("abcabc", None, "abcabc"), ("aab", "ab", "aab"), ("abc", "c", "abc"), ("", "a", "")])
def test_a_sample_ends_where_it_first_spells_the_stop_text(chars, stop, expected):
    assert "".join(until_stop(iter(chars), stop)) == expected


# --- what each setting draws from ---------------------------------------------------
# A model whose recurrent weights are zero predicts the same logits after every
# character (the LSTM state stays 0: c = f*c + i*tanh(0) = 0, h = o*tanh(0) = 0), so every
# drawn character is an independent draw from one known distribution.

CHARS = "abcdefgh"
LOGITS = [2.0, 1.5, 1.0, 0.5, 0.0, -0.5, -1.0, -2.0]


def expected(temperature=1.0, top_k=None, top_p=None) -> dict[str, float]:
    """The distribution a setting should draw from, computed by hand in numpy."""
    weights = np.exp(np.array(LOGITS) / temperature)
    probs = weights / weights.sum()
    keep = np.ones(len(CHARS), dtype=bool)
    order = np.argsort(-probs)
    if top_k is not None:
        keep[order[top_k:]] = False
    if top_p is not None:               # the smallest top set whose mass reaches top_p
        mass, kept = 0.0, np.zeros(len(CHARS), dtype=bool)
        for i in order:
            if mass >= top_p:
                break
            kept[i], mass = True, mass + probs[i]
        keep &= kept
    probs = np.where(keep, probs, 0.0)
    return dict(zip(CHARS, probs / probs.sum()))


@pytest.fixture(scope="module")
def constant_model(tmp_path_factory):
    """A CharRNN whose every prediction is softmax(LOGITS), and its checkpoint file."""
    config = ModelConfig(cell="lstm", embedding_dim=4, hidden_size=4, num_layers=2)
    model = CharRNN(len(CHARS), config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.startswith(("rnn.", "head.weight")):
                p.zero_()
        model.head.bias.copy_(torch.tensor(LOGITS))
    path = tmp_path_factory.mktemp("constant") / "constant.pt"
    save_checkpoint({"model_config": to_dict(config), "train_config": to_dict(TrainConfig()),
                     "vocab": CHARS, "model_state": model.state_dict()}, path)
    return model.eval(), Vocab(CHARS), path


def assert_draws_from(text: str, probs: dict[str, float]) -> None:
    """Each character's frequency within 5 standard errors of its probability, and
    characters of probability 0 never drawn."""
    n = len(text)
    for ch, p in probs.items():
        freq = text.count(ch) / n
        if p == 0:
            assert freq == 0, (ch, freq)
        else:
            assert abs(freq - p) < 5 * np.sqrt(p * (1 - p) / n) + 1e-9, (ch, freq, p)


SETTINGS = [dict(), dict(temperature=0.5), dict(temperature=2.0), dict(top_k=3),
            dict(top_k=7), dict(top_p=0.6), dict(top_p=0.9, temperature=0.7),
            dict(top_k=4, top_p=0.9)]


@pytest.mark.parametrize("setting", SETTINGS, ids=lambda s: ",".join(f"{k}={v}" for k, v
                                                                       in s.items()) or "plain")
def test_generate_draws_from_the_tempered_truncated_distribution(constant_model, setting):
    model, vocab, _ = constant_model
    text = "".join(generate(model, vocab, 500, num_samples=40, seed=11, **setting))
    assert len(text) == 20_000
    assert_draws_from(text, expected(**setting))


def test_greedy_always_takes_the_most_likely_character(constant_model):
    model, vocab, _ = constant_model
    text = "".join(generate(model, vocab, 300, num_samples=4, greedy=True))
    assert text == "a" * 1200


@pytest.mark.parametrize("flags, setting", [
    (["--temperature", "0.5"], dict(temperature=0.5)),
    (["--top-k", "3"], dict(top_k=3)),
    (["--top-p", "0.6"], dict(top_p=0.6)),
    (["-t", "2", "--top-p", "0.95"], dict(temperature=2.0, top_p=0.95)),
])
def test_sample_command_draws_from_the_distribution_its_flags_name(constant_model, flags,
                                                                   setting, capsys):
    _, _, path = constant_model
    code, out, err = run(["sample", str(path), "--len", "1000", "--num-samples", "20",
                          "--seed", "5", *flags], capsys)
    assert code == 0, err
    samples = out.split("\n\n")
    assert len(samples) == 20 and all(len(s) == 1000 for s in samples)
    assert_draws_from(out.replace("\n", ""), expected(**setting))


def test_sample_command_greedy(constant_model, capsys):
    _, _, path = constant_model
    code, out, err = run(["sample", str(path), "--len", "50", "--greedy"], capsys)
    assert code == 0, err
    assert out == "a" * 50


@pytest.mark.parametrize("name", CELLS)
def test_sampling_equals_rereading_the_whole_text_each_step(name):
    """Generation after a prime against the plainest loop there is: run the model over
    the prime and every character drawn so far from a zero state, and draw the next one
    from the last position's logits with the same generator."""
    model, vocab = prime_sensitive_model("abcdefghij", num_layers=2, **CELLS[name])
    prime = "jabbed"
    ids = [vocab.chars.index(ch) for ch in prime]
    generator = torch.Generator().manual_seed(21)
    with torch.no_grad():
        for _ in range(60):
            logits, _ = model(torch.tensor([ids]))                 # (1, t, V)
            ids.append(int(Sampling().choose(logits[:, -1], generator)))
    expected = "".join(vocab.chars[i] for i in ids[len(prime):])
    assert "".join(generate(model, vocab, 60, prime=prime, seed=21)) == expected


@pytest.mark.parametrize("chars, start", [("\n abcdef", "\n"), (" abcdef", " ")])
def test_without_a_prime_generation_starts_from_a_newline_or_else_a_space(chars, start):
    model, vocab = prime_sensitive_model(chars, num_layers=1)

    def first_draws(prime):                 # 2,000 draws of the first new character
        return "".join(generate(model, vocab, 1, prime=prime, num_samples=2000, seed=3))

    assert first_draws(None) == first_draws(start)
    assert first_draws(None) != first_draws("e")


def test_stop_ends_each_sample_where_its_new_text_first_holds_the_string(tiny_run, capsys):
    code, full, err = run(["sample", str(tiny_run), "--greedy", "--len", "200", "--prime",
                           "ROMEO:"], capsys)
    assert code == 0, err
    new = full[len("ROMEO:"):]
    stop = new[40:43]
    expected = "ROMEO:" + new[:new.index(stop) + len(stop)]
    code, out, err = run(["sample", str(tiny_run), "--greedy", "--len", "200", "--prime",
                          "ROMEO:", "--stop", stop, "--num-samples", "2"], capsys)
    assert code == 0, err
    assert out == expected + "\n\n" + expected


def test_a_prime_file_primes_like_the_same_text_given_inline(tiny_run, tmp_path, capsys):
    prime = tmp_path / "prime.txt"
    prime.write_text("JULIET:\nO Romeo, ", encoding="utf-8")
    outs = []
    for flags in (["--prime-file", str(prime)], ["--prime", "JULIET:\nO Romeo, "]):
        code, out, err = run(["sample", str(tiny_run), "--len", "60", "--seed", "3", *flags],
                             capsys)
        assert code == 0, err
        outs.append(out)
    assert outs[0] == outs[1] and outs[0].startswith("JULIET:\nO Romeo, ")


@pytest.mark.parametrize("flags, expected", [
    (["--prime", "A", "--prime-file", "{prime}"], "--prime and --prime-file exclude each other"),
    (["--prime-file", "{missing}"], "does not exist"),
    (["--stop", ""], "--stop needs some text"),
])
def test_prime_file_and_stop_mistakes_are_one_line_errors(flags, expected, tiny_run, tmp_path,
                                                          capsys):
    prime = tmp_path / "prime.txt"
    prime.write_text("A", encoding="utf-8")
    flags = [f.format(prime=prime, missing=tmp_path / "none.txt") for f in flags]
    code, out, err = run(["sample", str(tiny_run), "--len", "10", *flags], capsys)
    assert code == 1 and out == ""
    assert err.startswith("error: ") and expected in err and err.count("\n") == 1


# ------------------------------------------------------------------------- beam search
@pytest.mark.parametrize("name", CELLS)
def test_a_beam_of_one_is_greedy_character_for_character(name):
    model, vocab = prime_sensitive_model("abcdefghij", num_layers=2, **CELLS[name])
    for prime in ("jabbed", "a", "hhhh"):
        (found,) = beam_search(model, vocab, 80, prime=prime, beam=1)
        assert found.text == generate(model, vocab, 80, prime=prime, greedy=True)[0]
        # The search steps the fused cells, nats_of runs the module: float32 apart.
        assert found.nats == pytest.approx(nats_of(model, vocab, prime, found.text), abs=1e-4)


def test_a_beam_as_wide_as_every_continuation_finds_the_likeliest():
    """Against every continuation of 4 characters over 3 (81 of them), scored one by
    one: a beam that keeps them all finds the likeliest and ranks the rest as they score."""
    import itertools

    model, vocab = prime_sensitive_model("abc", num_layers=2, cell="gru")
    every = sorted(((nats_of(model, vocab, "ab", "".join(t)), "".join(t))
                    for t in itertools.product("abc", repeat=4)), reverse=True)
    found = beam_search(model, vocab, 4, prime="ab", beam=81, results=5)
    assert [b.text for b in found] == [text for _, text in every[:5]]
    assert [b.nats for b in found] == pytest.approx([n for n, _ in every[:5]], abs=1e-5)
    narrow = beam_search(model, vocab, 4, prime="ab", beam=3)[0]
    assert narrow.nats <= found[0].nats + 1e-9          # a narrower beam finds no better


def test_a_wider_beam_finds_likelier_text_than_greedy_for_most_primes(trained):
    model, vocab = trained
    primes = ["ROMEO:", "The ", "First Citizen:\n", "KING", "What ", "And ", "O, ", "I am ",
              "He ", "My lord"]
    better = 0
    for prime in primes:
        greedy = beam_search(model, vocab, 60, prime=prime, beam=1)[0]
        wide = beam_search(model, vocab, 60, prime=prime, beam=8)[0]
        better += wide.nats > greedy.nats + 1e-9
    assert better >= 6


def test_a_beam_stops_at_the_stop_text_and_scores_what_it_wrote(trained):
    model, vocab = trained
    full = beam_search(model, vocab, 80, prime="ROMEO:", beam=4)[0]
    stop = full.text[10:12]
    cut = beam_search(model, vocab, 80, prime="ROMEO:", beam=4, stop=stop)[0]
    assert cut.text == "".join(until_stop(full.text, stop)) and cut.text.endswith(stop)
    assert cut.nats == pytest.approx(nats_of(model, vocab, "ROMEO:", cut.text), abs=1e-4)


def test_the_log_probability_sample_reports_is_evals_sum(tiny_run, tmp_path, capsys):
    """``sample --beam --json`` against ``eval --per-char`` on the prime and the text it
    wrote: the same total over the new characters, to 1e-4."""
    import json

    for argv in (["--beam", "8", "--num-samples", "2"], ["--beam", "1"], ["--seed", "4"]):
        code, out, err = run(["sample", str(tiny_run), "--prime", "ROMEO:", "--len", "60",
                              "--json", *argv], capsys)
        assert code == 0, err
        for line in out.splitlines():
            found = json.loads(line)
            assert found["prime"] == "ROMEO:" and found["chars"] == len(found["text"]) == 60
            text = tmp_path / "scored.txt"
            text.write_text(found["prime"] + found["text"], encoding="utf-8")
            code, _, err = run(["eval", str(tiny_run), str(text), "--per-char",
                                str(tmp_path / "scores.jsonl"), "-q"], capsys)
            assert code == 0, err
            records = [json.loads(r) for r in
                       (tmp_path / "scores.jsonl").read_text(encoding="utf-8").splitlines()]
            new = sum(r["logprob"] for r in records if r["pos"] >= len("ROMEO:"))
            assert found["nats"] == pytest.approx(new, abs=1e-4)
    code, out, err = run(["sample", str(tiny_run), "--prime", "ROMEO:", "--len", "60",
                          "--beam", "8"], capsys)
    assert code == 0 and out.startswith("ROMEO:") and len(out) == 66
    assert "log-probability" in err and "nats" in err


def test_several_beams_cut_at_the_stop_text_are_distinct_and_ranked(trained):
    model, vocab = trained
    for stop in (" ", "e", "\n"):
        found = beam_search(model, vocab, 60, prime="ROMEO:", beam=6, results=4, stop=stop)
        texts = [b.text for b in found]
        assert len(set(texts)) == len(texts) >= 1
        assert [b.nats for b in found] == sorted((b.nats for b in found), reverse=True)
        for b in found:
            assert b.nats == pytest.approx(nats_of(model, vocab, "ROMEO:", b.text), abs=1e-4)


def test_sample_with_a_beam_of_one_writes_what_greedy_writes(tiny_run, capsys):
    outs = []
    for flag in (["--beam", "1"], ["--greedy"]):
        code, out, err = run(["sample", str(tiny_run), "--prime", "KING", "--len", "120",
                              *flag], capsys)
        assert code == 0, err
        outs.append(out)
    assert outs[0] == outs[1] and len(outs[0]) == 124

"""``sft-interactions explain`` on a saved tiny causal LM and on the MiniLM classifier."""

from __future__ import annotations

import argparse
import json

import pytest
import torch

from sft_interaction_callback.cli import explain
from sft_interaction_callback.probing import (
    CausalLMValue,
    Probe,
    SequenceClassifierValue,
    select_players,
)

PROMPT = "Why did the old lighthouse keeper paint every stone blue before winter?"


def parse(argv):
    parser = argparse.ArgumentParser(prog="sft-interactions")
    explain.add_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(argv)


@pytest.fixture(scope="module")
def saved_lm(tmp_path_factory, tiny_model, tokenizer):
    path = tmp_path_factory.mktemp("tiny_llama")
    tiny_model("llama", len(tokenizer), seed=5).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def test_explain_causal_lm_json_round_trips(saved_lm, tokenizer, capsys):
    args = parse(
        [
            "explain",
            "--model",
            str(saved_lm),
            "--prompt",
            PROMPT,
            "--target",
            " to guide ships",
            "--n",
            "4",
            "--top",
            "5",
            "--json",
        ]
    )
    assert explain.run(args) == 0
    out = json.loads(capsys.readouterr().out)
    words = out["words"]
    probe = Probe(PROMPT, " to guide ships", select_players(PROMPT, 4))
    assert words == probe.words and out["n_players"] == 4
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(saved_lm).eval()
    v = CausalLMValue(model, tokenizer)(probe)
    assert out["v_full"] == pytest.approx(float(v[-1]), abs=1e-4)
    assert out["v_empty"] == pytest.approx(float(v[0]), abs=1e-4)
    assert torch.allclose(torch.tensor(out["v"]), v, atol=1e-4, rtol=0)

    from sft_interaction_callback.andor import fit_and_or

    # the AND/OR split is an LP solution, so refit on exactly the values the CLI printed
    fit = fit_and_or(torch.tensor(out["v"], dtype=torch.float64)[None])
    for kind, table in (("and", fit.i_and[0]), ("or", fit.i_or[0])):
        items = out[kind]
        assert len(items) <= 5
        strengths = [abs(it["strength"]) for it in items]
        assert strengths == sorted(strengths, reverse=True)
        for it in items:
            assert it["words"] == [w for b, w in enumerate(words) if it["subset"] >> b & 1]
            assert it["order"] == len(it["words"]) >= 1
            assert it["strength"] == pytest.approx(float(table[it["subset"]]), abs=1e-6)
    assert out["and"], "a random model still has AND effects"


@pytest.fixture()
def quick_fit(monkeypatch):
    """Wiring/format tests: a plain Harsanyi (AND-only) decomposition instead of the LP."""
    import sft_interaction_callback.andor as andor

    def fit(v, **_):
        n = v.shape[-1].bit_length() - 1
        zeros = torch.zeros_like(v)
        return andor.AndOrInteractions(
            v=v, i_and=andor.moebius(v), i_or=zeros, p=zeros, q=zeros, n_players=n
        )

    monkeypatch.setattr(andor, "fit_and_or", fit)


def test_explain_text_output_and_players_option(saved_lm, capsys, quick_fit):
    args = parse(
        [
            "explain",
            "--model",
            str(saved_lm),
            "--prompt",
            PROMPT,
            "--target",
            " yes",
            "--players",
            "keeper,stone,winter",
            "--no-progress",
        ]
    )
    assert explain.run(args) == 0
    text = capsys.readouterr().out
    assert "players (3): keeper, stone, winter" in text
    assert "strongest AND interactions" in text and "strongest OR interactions" in text


def test_explain_bad_input_exit_code(saved_lm, capsys):
    args = parse(
        [
            "explain",
            "--model",
            str(saved_lm),
            "--prompt",
            PROMPT,
            "--target",
            " yes",
            "--players",
            "lamp",
        ]
    )
    assert explain.run(args) == 2
    assert "'lamp' is not a whole word" in capsys.readouterr().err
    args = parse(["explain", "--model", str(saved_lm), "--prompt", PROMPT, "--n", "3"])
    assert explain.run(args) == 2
    assert "--target is required" in capsys.readouterr().err
    missing = str(saved_lm / "nope")
    args = parse(["explain", "--model", missing, "--prompt", PROMPT, "--target", " yes"])
    assert explain.run(args) == 2
    assert "error:" in capsys.readouterr().err


def test_explain_minilm_classifier_with_label(minilm_dir, tokenizer, capsys):
    prompt = "The keeper painted every stone bright blue."
    args = parse(
        [
            "explain",
            "--model",
            str(minilm_dir),
            "--prompt",
            prompt,
            "--label",
            "1",
            "--n",
            "3",
            "--json",
        ]
    )
    assert explain.run(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["kind"] == "sequence_classifier" and out["n_players"] == 3
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(0)  # the CLI's default --seed: the same random head
    model = AutoModelForSequenceClassification.from_pretrained(str(minilm_dir)).eval()
    probe = Probe(prompt, "1", select_players(prompt, 3))
    v = SequenceClassifierValue(model, tokenizer, label=1)(probe)
    assert out["v_full"] == pytest.approx(float(v[-1]), abs=1e-4)
    assert out["words"] == probe.words


def test_explain_through_the_entry_point(saved_lm, capsys, quick_fit):
    cli = pytest.importorskip("sft_interaction_callback.cli")
    argv = ["explain", "--model", str(saved_lm), "--prompt", PROMPT, "--target", " yes"]
    assert cli.main([*argv, "--n", "3", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["n_players"] == 3 and len(out["v"]) == 8

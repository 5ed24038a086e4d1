"""Every data set format TRL's ``SFTTrainer`` accepts, through a real (tiny) SFT run.

One tiny Qwen2 built from a config, the MiniLM WordPiece tokenizer with a ChatML
template, two optimizer steps, three players: each test checks that probes were sampled
from the trainer's data set in that format and that the metrics reached ``log_history``.
"""

from __future__ import annotations

import copy
import json
import warnings

import pytest
import torch

from sft_interaction_callback import InteractionCallback
from sft_interaction_callback.keys import NOISE_KEY

trl = pytest.importorskip("trl")
datasets = pytest.importorskip("datasets")

FAST = {"n_players": 3, "num_probes": 2, "schedule": [2], "solver": "pdhg"}
FAST["solver_options"] = {"iterations": 100}

SENTENCES = [
    "keepers painted old harbour stones bright blue before winter storms",
    "sailors admire that tall lighthouse tower standing beside rocky cliffs",
    "grandma bakes amazing cinnamon bread every sunday morning early",
    "the ferry delay ruined our whole summer holiday plan completely",
    "winter fog scares tourists visiting northern islands during december",
    "my brother finally fixed our leaking wooden rowing boat yesterday",
    "children collect shiny pebbles along sandy beaches after school",
    "fishermen mend torn nets while seagulls circle noisy markets",
]
ANSWERS = ["blue", "tall", "bread", "late", "fog", "boat", "pebbles", "nets"]


def rows_prompt_completion() -> list[dict]:
    return [
        {"prompt": f"{s}?", "completion": f" {a}"} for s, a in zip(SENTENCES, ANSWERS, strict=True)
    ]


def rows_text() -> list[dict]:
    return [{"text": f"{s} {a}"} for s, a in zip(SENTENCES, ANSWERS, strict=True)]


def rows_messages() -> list[dict]:
    return [
        {"messages": [{"role": "user", "content": s}, {"role": "assistant", "content": a}]}
        for s, a in zip(SENTENCES, ANSWERS, strict=True)
    ]


def rows_conversational_prompt_completion() -> list[dict]:
    return [
        {
            "prompt": [{"role": "user", "content": s}],
            "completion": [{"role": "assistant", "content": a}],
        }
        for s, a in zip(SENTENCES, ANSWERS, strict=True)
    ]


@pytest.fixture(scope="module")
def sft_tokenizer(tokenizer):
    """MiniLM's tokenizer with ChatML markers and an EOS text (TRL appends it to text)."""
    tok = copy.deepcopy(tokenizer)
    tok.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tok.chat_template = (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
        "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    tok.eos_token = "[SEP]"
    return tok


def tiny_qwen(vocab: int):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    cfg = Qwen2Config(
        vocab_size=vocab,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=4,
        num_key_value_heads=1,
        max_position_embeddings=128,
    )
    return Qwen2ForCausalLM(cfg)


def sft_run(tmp_path, tokenizer, rows, *, callbacks_kw=None, eval_rows=None, **cb_kw):
    """Two SFT steps with the callback; returns ``(trainer, callback)``."""
    from trl import SFTConfig, SFTTrainer

    settings = {
        "output_dir": str(tmp_path),
        "max_steps": 2,
        "per_device_train_batch_size": 2,
        "learning_rate": 1e-3,
        "logging_steps": 1,
        "save_strategy": "no",
        "report_to": [],
        "use_cpu": True,
        "disable_tqdm": True,
        "max_length": 64,
        "seed": 0,
    }
    args = SFTConfig(**{**settings, **(callbacks_kw or {})})
    data = rows if isinstance(rows, datasets.Dataset) else datasets.Dataset.from_list(rows)
    trainer = SFTTrainer(
        model=tiny_qwen(len(tokenizer)),
        args=args,
        train_dataset=data,
        eval_dataset=None if eval_rows is None else datasets.Dataset.from_list(eval_rows),
        processing_class=tokenizer,
    )
    cb = InteractionCallback(trainer=trainer, **{**FAST, **cb_kw})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.train()
    return trainer, cb


def _check(trainer, cb, tmp_path, n=3):
    assert cb.probes and all(p.n_players == n for p in cb.probes)
    steps = [h["step"] for h in trainer.state.log_history if NOISE_KEY in h]
    assert steps == [0, 2]
    saved = json.loads((tmp_path / "interactions" / "probes.json").read_text())
    assert len(saved["probes"]) == len(cb.probes)


@pytest.mark.parametrize(
    "make_rows",
    [rows_text, rows_prompt_completion, rows_messages, rows_conversational_prompt_completion],
    ids=["text", "prompt_completion", "messages", "conversational_prompt_completion"],
)
def test_every_trl_format_is_probed(tmp_path, sft_tokenizer, make_rows):
    trainer, cb = sft_run(tmp_path, sft_tokenizer, make_rows())
    _check(trainer, cb, tmp_path)
    for p in cb.probes:
        assert not {"im_start", "im_end", "user", "assistant", "SEP"} & set(p.words)
    if make_rows is rows_text:  # TRL appended the EOS text: the target keeps it, as trained
        row = {r["text"]: r for r in rows_text()}
        for p in cb.probes:
            assert p.target.endswith(" [SEP]") or p.target.endswith("[SEP]")
            assert p.prompt + p.target.removesuffix("[SEP]") in row
        assert "labels" in trainer.train_dataset.column_names  # token ids, not class labels


def test_pre_tokenized_rows_are_decoded(tmp_path, sft_tokenizer):
    def encode(row):
        p = sft_tokenizer(row["prompt"])["input_ids"]
        c = sft_tokenizer(row["completion"], add_special_tokens=False)["input_ids"]
        return {"input_ids": p + c, "completion_mask": [0] * len(p) + [1] * len(c)}

    data = datasets.Dataset.from_list(rows_prompt_completion()).map(
        encode, remove_columns=["prompt", "completion"]
    )
    trainer, cb = sft_run(tmp_path, sft_tokenizer, data)
    _check(trainer, cb, tmp_path)
    for p in cb.probes:
        assert p.prompt.startswith("[CLS] ") and p.target.strip() in ANSWERS


def test_template_words_and_placeholders_are_never_players(tmp_path, sft_tokenizer):
    """ "Comment: ... Emotion:" rows: neither template word nor [NAME] is a player."""
    texts = [
        "[NAME] loved the quiet lighthouse walk yesterday evening",
        "my brother [NAME] hates those noisy harbour storms",
        "sailors admire bright painted stones near cliffs",
        "this broken lamp makes everyone furious again today",
        "[NAME] finally fixed our leaking rowing boat",
        "winter fog scares tourists visiting northern islands",
        "grandma bakes amazing cinnamon bread every sunday",
        "the ferry delay ruined our whole holiday plan",
    ]
    rows = [
        {"prompt": f"Comment: {t}\nEmotion:", "completion": f" {c}"}
        for t, c in zip(texts, ["joy", "anger"] * 4, strict=True)
    ]
    trainer, cb = sft_run(tmp_path, sft_tokenizer, rows, n_players=4, num_probes=4)
    _check(trainer, cb, tmp_path, n=4)
    for p in cb.probes:
        assert not {"Comment", "Emotion", "NAME"} & set(p.words), p.words


def test_probes_from_eval_and_schedule_eval(tmp_path, sft_tokenizer):
    """``probes_from="eval"`` samples the eval set; ``schedule="eval"`` probes at every
    evaluation, so ``eval_interaction_noise`` comes from a probe point of that step."""
    rows = rows_prompt_completion()
    trainer, cb = sft_run(
        tmp_path,
        sft_tokenizer,
        rows[:4],
        eval_rows=rows[4:],
        callbacks_kw={"eval_strategy": "steps", "eval_steps": 1},
        probes_from="eval",
        schedule="eval",
    )
    assert {p.prompt for p in cb.probes} <= {r["prompt"] for r in rows[4:]}
    probed = [h["step"] for h in trainer.state.log_history if NOISE_KEY in h]
    assert probed == [0, 1, 2]
    evaluated = [h["step"] for h in trainer.state.log_history if "eval_interaction_noise" in h]
    assert evaluated == [1, 2]  # every evaluation sees a probe point of its own step


def test_progress_bar_and_one_line_per_point(tmp_path, sft_tokenizer, capfd):
    """A bar per probe point on stderr (removed when done), one summary line per point,
    and no raw dict of interaction metrics on the console; log_history keeps them all."""
    trainer, cb = sft_run(
        tmp_path, sft_tokenizer, rows_prompt_completion(), callbacks_kw={"disable_tqdm": False}
    )
    out, err = capfd.readouterr()
    assert "interactions/" not in out and "interactions/" not in err  # no raw dict
    assert "interactions @ step 2:" in err and "mask" in err  # the bar: masks, rate
    lines = [x for x in err.replace("\r", "\n").splitlines() if x.startswith("interactions @")]
    assert any(x.startswith("interactions @ step 2: noise ") for x in lines)
    assert cb.extractor.on_masks is None  # the bar was closed and unhooked
    assert sum(NOISE_KEY in h for h in trainer.state.log_history) == 2

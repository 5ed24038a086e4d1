#!/usr/bin/env python
"""Study D (issue 14): a causal LM pretrained here on real text, then SFT'd with TRL.

* Tokenizer: WordPiece trained on the comments of GoEmotions' train split (lower-cased,
  the 7 Ekman label words forced into the vocabulary so that each is one token).
* Pretraining: a small Llama learns next-token prediction on those comments, without
  labels; cached under ``~/.cache/sft_interaction_callback`` (never in git).
* SFT: TRL ``SFTTrainer`` on prompt/completion rows ``"Comment: <text>\\nEmotion:"`` ->
  ``" <label word>"`` (loss on the completion only), LoRA, 0% / 20% flipped labels.
  Value of a masked input = teacher-forced log-odds of the label tokens (the package's
  causal-LM value); players are words of the comment.
* Reference model for gamma: a Llama of another size (hidden 96, 3 layers, another seed)
  pretrained on the same comments and fully SFT'd on clean rows disjoint from the runs'.

Each run records at every grid step what every stop needs (``evidence.py``) and the stops
are replayed by ``stops.py``. Accuracy = the label word with the largest next-token logit
among the 7 after the prompt; eval loss = mean cross-entropy of the completion tokens
(label word + eos) on the tuning split.

    python scripts/experiments/study_d_causal_lm.py --seeds 1 2 3 4 5 --out docs/results/study_d
    python scripts/experiments/study_d_causal_lm.py --judge-file FILE --seeds 0 --tiny --out DIR
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import math
import random
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

CONFIGS = [(0.2, "lora"), (0.0, "lora")]
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
SPECIALS = ["<pad>", "<unk>", "<bos>", "<eos>", "<mask>"]


@dataclass(frozen=True)
class LMSize:
    hidden: int = 128
    layers: int = 2
    heads: int = 4
    mlp: int = 384


@dataclass(frozen=True)
class Settings:
    name: str = "default"
    vocab: int = 4000
    lm: LMSize = LMSize()
    ref_lm: LMSize = LMSize(hidden=96, layers=3, heads=4, mlp=288)
    pretrain_rows: int = 43000
    pretrain_steps: int = 1500
    pretrain_batch: int = 32
    pretrain_lr: float = 2e-3
    pretrain_seed: int = 0
    ref_pretrain_seed: int = 1
    max_tokens: int = 48
    train_size: int = 800
    tune_size: int = 400
    judge_size: int = 1000
    # chosen on tuning seed 0 and the tuning split only: LoRA without lm_head stayed on the
    # majority class for 300 steps (at lr 2e-3 and 5e-3; label cross-entropy ~5 nats, the
    # tied output embedding frozen); with LoRA on lm_head too it leaves it after ~200 steps
    max_steps: int = 400
    grid: tuple[int, ...] = (0, 5, 10, 15, 20, 30, 40, 60, 80, 100, 130, 160, 200, 250, 300,
                             350, 400)  # fmt: skip
    batch_size: int = 16
    lr_lora: float = 3e-3
    lora_r: int = 16
    lora_alpha: int = 32
    num_probes: int = 4
    n_players: int = 8
    probe_max_tokens: int = 24
    eb_batch: int = 32
    floor_rel: float = 1e-2  # the package's floor_perturbation default
    ref_rows: int = 800
    ref_steps: int = 200
    ref_lr: float = 1e-3
    ref_seed: int = 1000
    data_seed: int = 0
    solver: str = "default"


DEFAULT = Settings()
TINY = replace(
    DEFAULT,
    name="tiny",
    vocab=600,
    lm=LMSize(hidden=32, layers=1, heads=2, mlp=64),
    ref_lm=LMSize(hidden=24, layers=1, heads=2, mlp=48),
    pretrain_rows=2000,
    pretrain_steps=30,
    train_size=32,
    tune_size=16,
    max_steps=4,
    grid=(0, 1, 2, 3, 4),
    batch_size=4,
    num_probes=1,
    n_players=3,
    probe_max_tokens=40,
    eb_batch=4,
    ref_rows=16,
    ref_steps=2,
)


def prompt_of(text: str) -> str:
    return f"Comment: {text}\nEmotion:"


# ---------------------------------------------------------------------- tokenizer + LM
def build_tokenizer(texts: list[str], names: list[str], vocab: int) -> Any:
    from tokenizers import (
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
        trainers,
    )
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.WordPiece(unk_token="<unk>"))
    core.normalizer = normalizers.BertNormalizer(lowercase=True)
    core.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    core.decoder = decoders.WordPiece()
    trainer = trainers.WordPieceTrainer(vocab_size=vocab, special_tokens=SPECIALS)
    # the label words and the template words, repeated so that each is one token
    forced = [" ".join([*names, "comment", "emotion"])] * 200
    core.train_from_iterator([*texts, *forced], trainer=trainer)
    bos = core.token_to_id("<bos>")
    core.post_processor = processors.TemplateProcessing(
        single="<bos> $A", pair="<bos> $A $B", special_tokens=[("<bos>", bos)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token="<pad>",
        unk_token="<unk>",
        bos_token="<bos>",
        eos_token="<eos>",
        mask_token="<mask>",
        padding_side="right",
    )


def build_lm(tok: Any, size: LMSize, seed: int, max_tokens: int) -> Any:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=size.hidden,
        intermediate_size=size.mlp,
        num_hidden_layers=size.layers,
        num_attention_heads=size.heads,
        num_key_value_heads=size.heads,
        max_position_embeddings=2 * max_tokens + 32,
        tie_word_embeddings=True,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
    )
    return LlamaForCausalLM(cfg)


def pad_batch(rows: list[list[int]], labels: list[list[int]], pad: int) -> dict:
    import torch

    w = max(len(r) for r in rows)
    ids = torch.full((len(rows), w), pad, dtype=torch.long)
    lab = torch.full((len(rows), w), -100, dtype=torch.long)
    am = torch.zeros((len(rows), w), dtype=torch.long)
    for i, (r, y) in enumerate(zip(rows, labels, strict=True)):
        ids[i, : len(r)] = torch.tensor(r)
        lab[i, : len(y)] = torch.tensor(y)
        am[i, : len(r)] = 1
    return {"input_ids": ids, "labels": lab, "attention_mask": am}


def pretrain(tok: Any, texts: list[str], size: LMSize, seed: int, s: Settings, log: Any) -> Any:
    """Next-token prediction on ``texts`` (``<bos> text <eos>``), AdamW, cosine schedule."""
    import torch

    model = build_lm(tok, size, seed, s.max_tokens)
    enc = tok(texts, truncation=True, max_length=s.max_tokens - 1)["input_ids"]
    seqs = [e + [tok.eos_token_id] for e in enc]
    rng = random.Random(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=s.pretrain_lr, weight_decay=0.01)
    warm = max(1, s.pretrain_steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt,
        lambda t: min(1.0, (t + 1) / warm)
        * 0.5 * (1 + math.cos(math.pi * min(1.0, t / s.pretrain_steps))),
    )  # fmt: skip
    model.train()
    t0, losses = time.perf_counter(), []
    for step in range(s.pretrain_steps):
        batch = [seqs[i] for i in rng.sample(range(len(seqs)), s.pretrain_batch)]
        b = pad_batch(batch, [[-100] + x[1:] for x in batch], tok.pad_token_id)
        loss = model(**b).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad()
        losses.append(float(loss))
        if (step + 1) % max(1, s.pretrain_steps // 5) == 0:
            recent = losses[-50:]
            log(f"  pretrain {step + 1}/{s.pretrain_steps}: loss {sum(recent) / len(recent):.3f}")
    model.eval()
    return model, {
        "final_loss": sum(losses[-50:]) / len(losses[-50:]),
        "seconds": round(time.perf_counter() - t0, 1),
    }


def cached_lm(tag: str, build: Any) -> tuple[Path, dict]:
    """``build(folder) -> info`` once; the folder under the user's cache dir."""
    folder = ev.CACHE / tag
    info_path = folder / "info.json"
    if not info_path.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        info = build(folder)
        info_path.write_text(json.dumps(info, indent=1))
    return folder, json.loads(info_path.read_text())


# ---------------------------------------------------------------------- SFT pieces
def encode_rows(tok: Any, rows: list[tuple[str, int]], names: list[str], s: Settings) -> list[dict]:
    """Prompt ids (with <bos>), the gold label's token and eos, for scoring and EB."""
    out = []
    enc = tok([prompt_of(t) for t, _ in rows], truncation=True, max_length=s.max_tokens)[
        "input_ids"
    ]
    for ids, (_, y) in zip(enc, rows, strict=True):
        out.append({"prompt_ids": ids, "label": y})
    return out


def label_ids(tok: Any, names: list[str]) -> list[int]:
    ids = [tok(" " + n, add_special_tokens=False)["input_ids"] for n in names]
    if any(len(x) != 1 for x in ids):
        raise ValueError(f"label words are not single tokens: {ids}")
    return [x[0] for x in ids]


def completion_batch(tok: Any, rows: list[dict], lids: list[int]) -> dict:
    seqs = [r["prompt_ids"] + [lids[r["label"]], tok.eos_token_id] for r in rows]
    labels = [[-100] * len(r["prompt_ids"]) + [lids[r["label"]], tok.eos_token_id] for r in rows]
    return pad_batch(seqs, labels, tok.pad_token_id)


def scorer(tok: Any, lids: list[int]) -> Any:
    return ev.causal_scorer(lambda rows: completion_batch(tok, rows, lids), lids)


def sft_config(out_dir: Path, s: Settings, *, steps: int, lr: float, seed: int) -> Any:
    from trl import SFTConfig

    common = ev.cpu_run_args(
        out_dir, steps=steps, batch_size=s.batch_size, lr=lr, seed=seed, warmup=0.06
    )
    return SFTConfig(
        **common,
        weight_decay=0.0,
        max_length=2 * s.max_tokens,
        completion_only_loss=True,
        packing=False,
    )


def sft_dataset(rows: list[tuple[str, int]], names: list[str]) -> Any:
    from datasets import Dataset

    return Dataset.from_list(
        [{"prompt": prompt_of(t), "completion": " " + names[y]} for t, y in rows]
    )


def _quiet(trainer: Any) -> None:
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    for cb in (PrinterCallback, ProgressCallback):
        trainer.remove_callback(cb)


def probe_dicts(tok: Any, rows: list[tuple[str, int]], idx: list[int], names: list[str],
                n: int) -> list[dict]:  # fmt: skip
    """Probes with players chosen among the comment's words only (not the template)."""
    from sft_interaction_callback.probing import select_players

    out = []
    for i in idx:
        text, y = rows[i]
        prompt = prompt_of(text)
        start = prompt.index(text)
        players = select_players(prompt, n, tokenizer=tok, regions=[(start, start + len(text))])
        spans = [list(p) for p in players]
        target = " " + names[y]
        out.append({"prompt": prompt, "target": target, "players": spans, "id": f"train-{i}"})
    return out


# ---------------------------------------------------------------------- one run
def one_run(ctx: dict[str, Any], noise: float, method: str, seed: int, work: Path) -> dict:
    import torch
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM
    from trl import SFTTrainer

    from sft_interaction_callback import InteractionCallback, InteractionConfig

    s: Settings = ctx["s"]
    tok, names, lids = ctx["tokenizer"], ctx["names"], ctx["label_ids"]
    name = ev.run_name(noise, method, seed)
    run_dir = work / s.name / name
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    clean = [y for _, y in ctx["splits"].train]
    noisy = ev.inject_noise(clean, noise, len(names), seed + 7919) if noise > 0 else clean
    train_rows = [(t, y) for (t, _), y in zip(ctx["splits"].train, noisy, strict=True)]
    t_start = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(str(ctx["lm_dir"]))
    model0 = copy.deepcopy(model).eval()
    peft_config = LoraConfig(
        r=s.lora_r, lora_alpha=s.lora_alpha, lora_dropout=0.0, task_type="CAUSAL_LM",
        target_modules=LORA_TARGETS, modules_to_save=["lm_head"],
    )  # fmt: skip
    score = scorer(tok, lids)
    train_enc = encode_rows(tok, train_rows, names, s)
    eb = ev.EBCriterion(train_enc, lambda m, exs: m(**completion_batch(tok, list(exs), lids)).loss,
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
        probe_threads=1,
    )
    callback = InteractionCallback(config)
    trainer = SFTTrainer(
        model=model,
        args=sft_config(run_dir, s, steps=s.max_steps, lr=s.lr_lora, seed=seed),
        train_dataset=sft_dataset(train_rows, names),
        processing_class=tok,
        peft_config=peft_config,
        callbacks=[ev.grid_callback(s.grid, measure)],
    )
    callback.attach(trainer)
    _quiet(trainer)
    trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    t0 = time.perf_counter()
    trainer.train()
    wall = time.perf_counter() - t0
    snap = run_dir / config.output_subdir
    floor, probe_s = ev.attach_interactions(points, snap, config, model0, tok, kind="causal",
                                            rel=s.floor_rel, seed=seed)  # fmt: skip
    del model, model0, trainer
    torch.manual_seed(0)
    return {
        "run": name,
        "setting": "causal-lm",
        "noise": noise,
        "method": method,
        "seed": seed,
        "lr": s.lr_lora,
        "trainable_params": trainable,
        "flipped_rows": sum(a != b for a, b in zip(clean, noisy, strict=True)),
        "max_steps": s.max_steps,
        "grid": list(s.grid),
        "order_histograms": ev.order_histograms(
            run_dir, [0, s.grid[len(s.grid) // 2], s.max_steps]
        ),
        **ev.run_outcome(points, floor, eb, measure, wall=wall, probe_s=probe_s, started=t_start),
    }


def reference_sft(lm_dir: Path, tok: Any, rows: list[tuple[str, int]], names: list[str],
                  s: Settings, folder: Path) -> dict:  # fmt: skip
    """Full SFT of the reference LM on clean rows (TRL), saved into ``folder``."""
    from transformers import AutoModelForCausalLM
    from trl import SFTTrainer

    model = AutoModelForCausalLM.from_pretrained(str(lm_dir))
    trainer = SFTTrainer(
        model=model,
        args=sft_config(folder / "trainer", s, steps=s.ref_steps, lr=s.ref_lr, seed=s.ref_seed),
        train_dataset=sft_dataset(rows, names),
        processing_class=tok,
    )
    _quiet(trainer)
    trainer.train()
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    shutil.rmtree(folder / "trainer", ignore_errors=True)
    return {"sft_rows": len(rows), "sft_steps": s.ref_steps, "sft_lr": s.ref_lr}


# ---------------------------------------------------------------------- main
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    return ev.study_args(argv, __doc__, "study_d", "/tmp/study_d_work", "20-lora 0-lora")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    data_dir = Path(args.data_dir)
    if not (data_dir / "ekman" / "train.tsv").is_file():
        print(f"skipped: GoEmotions Ekman data not found under {data_dir}")
        return 0
    import torch
    from transformers import PreTrainedTokenizerFast

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
    log(f"[study D] data: {json.dumps(splits.counts)}; judging on {splits.judge_source}")
    # pretraining corpus: train.tsv comments (all rows, no labels), never judging texts
    banned = {t for t, _ in splits.judge}
    corpus = []
    with open(data_dir / "ekman" / "train.tsv", encoding="utf-8") as fh:
        for line in fh:
            text = line.split("\t", 1)[0]
            if text.strip() and text not in banned:
                corpus.append(text)
    corpus = corpus[: s.pretrain_rows]
    key = json.dumps([asdict(s.lm), asdict(s.ref_lm), s.vocab, len(corpus), s.pretrain_steps,
                      s.pretrain_batch, s.pretrain_lr, s.max_tokens, s.pretrain_seed])  # fmt: skip
    tag = hashlib.sha1(key.encode()).hexdigest()[:10]

    def build_base(folder: Path) -> dict:
        tok = build_tokenizer(corpus, names, s.vocab)
        model, info = pretrain(tok, corpus, s.lm, s.pretrain_seed, s, log)
        model.save_pretrained(folder)
        tok.save_pretrained(folder)
        return {"size": asdict(s.lm), "vocab": len(tok), "corpus_rows": len(corpus),
                "steps": s.pretrain_steps, **info}  # fmt: skip

    lm_dir, lm_info = cached_lm(f"study_d_lm-{tag}", build_base)
    tok = PreTrainedTokenizerFast.from_pretrained(str(lm_dir))
    log(f"[study D] pretrained LM: {lm_info}")
    rkey = json.dumps([key, len(ref_rows), s.ref_steps, s.ref_lr, s.ref_seed, s.data_seed])

    def build_ref(folder: Path) -> dict:
        model, info = pretrain(tok, corpus, s.ref_lm, s.ref_pretrain_seed, s, log)
        base = folder / "pretrained"
        model.save_pretrained(base)
        info.update(reference_sft(base, tok, ref_rows, names, s, folder))
        shutil.rmtree(base, ignore_errors=True)
        return {"name": f"Llama {asdict(s.ref_lm)} (seed {s.ref_pretrain_seed}) pretrained on "
                f"the same comments, fully SFT'd on {len(ref_rows)} clean rows disjoint from "
                f"the runs'", **info}  # fmt: skip

    ref_dir, ref_info = cached_lm(f"study_d_ref-{hashlib.sha1(rkey.encode()).hexdigest()[:10]}",
                                  build_ref)  # fmt: skip
    lids = label_ids(tok, names)
    probe_idx = ev.pick_probes(splits.train, tok, s.n_players, s.num_probes, s.probe_max_tokens)
    ctx = {
        "s": s,
        "tokenizer": tok,
        "names": names,
        "label_ids": lids,
        "lm_dir": lm_dir,
        "splits": splits,
        "tune_enc": encode_rows(tok, splits.tune, names, s),
        "judge_enc": encode_rows(tok, splits.judge, names, s),
        "probes": probe_dicts(tok, splits.train, probe_idx, names, s.n_players),
        "ref_dir": ref_dir,
        "log": log,
    }
    configs = CONFIGS
    if args.configs:
        want = {tuple(c.split("-")) for c in args.configs}
        configs = [(n, m) for n, m in CONFIGS if (str(int(round(100 * n))), m) in want]
    meta = {
        "study": "D: causal LM pretrained on GoEmotions comments, SFT (TRL) to the label word",
        "settings": {**asdict(s), "grid": list(s.grid)},
        "seeds": list(args.seeds),
        "configs": [f"{int(round(100 * n))}% noise, {m}" for n, m in configs],
        "counts": splits.counts,
        "judge_source": splits.judge_source,
        "pretrained": {**lm_info, "folder": str(lm_dir)},
        "reference": {**ref_info, "folder": str(ref_dir)},
        "probes": ctx["probes"],
        "command": "python scripts/experiments/study_d_causal_lm.py "
        + " ".join(argv if argv is not None else sys.argv[1:]),
        "torch_threads": torch.get_num_threads(),
        "pip_freeze": ev.pip_freeze(),
        "code": ev.code_state(),
    }
    ev.run_grid(
        "study D",
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

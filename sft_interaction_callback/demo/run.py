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

import math
import os
import random
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

__all__ = [
    "FULL",
    "QUICK",
    "DemoResult",
    "DemoSettings",
    "ShadowStopper",
    "format_summary",
    "run_demo",
]


@dataclass(frozen=True)
class DemoSettings:
    """Everything that sizes the demo; :data:`FULL` and :data:`QUICK` are the presets."""

    name: str = "full"
    # data
    train_size: int = 300
    eval_size: int = 400
    label_noise: float = 0.15
    pretrain_label_noise: float = 0.05
    # model and stage 1
    hidden: int = 64
    layers: int = 2
    heads: int = 4
    mlp: int = 128
    pretrain_steps: int = 600
    pretrain_batch: int = 64
    pretrain_lr: float = 3e-3
    pretrain_label_weight: float = 5.0  # the label token's loss weight vs each prompt word's
    # stage 2 (LoRA)
    max_steps: int = 1200
    batch_size: int = 16
    lr: float = 2e-3
    lora_r: int = 32
    lora_alpha: int = 64
    warmup: float = 0.05  # share of max_steps (TrainingArguments.warmup_steps < 1)
    # probing
    num_probes: int = 8
    n_players: int = 8
    probe_length: int = 11
    schedule: Any = None  # InteractionConfig's default: dense early, sparse later
    # evaluation: always at probe steps; also every ``eval_every`` steps when set (a regular
    # grid on which the stock eval-loss early stop can be replayed)
    eval_every: int | None = None


FULL = DemoSettings()
QUICK = replace(
    FULL,
    name="quick",
    train_size=200,
    eval_size=200,
    pretrain_steps=150,
    max_steps=60,
    num_probes=2,
    n_players=6,
    schedule=20,
)


class ShadowStopper:
    """Runs a stopping rule but never stops: it records when (and why) the rule fired.

    ``update`` feeds ``inner`` (default: ``NoiseRiseStopper()`` with its defaults) and
    returns False, so training goes on to ``max_steps``; :attr:`stop_step` and
    :attr:`reason` hold the first decision to stop. ``status`` / ``state_dict`` are the
    inner rule's, so the logged stopper curves are those of the real rule.
    """

    def __init__(self, inner: Any = None) -> None:
        if inner is None:
            from sft_interaction_callback.tracking import NoiseRiseStopper

            inner = NoiseRiseStopper()
        self.inner = inner
        self.stop_step: int | None = None
        self.reason: str | None = None

    def update(self, step: int, metrics: Mapping[str, float]) -> bool:
        if self.inner.update(step, metrics) and self.stop_step is None:
            self.stop_step = int(getattr(self.inner, "stop_step", None) or step)
            self.reason = str(getattr(self.inner, "reason", None) or "the stopper fired")
        return False

    def status(self) -> dict[str, float]:
        status = getattr(self.inner, "status", None)
        return status() if callable(status) else {}

    def state_dict(self) -> dict[str, Any]:
        return {
            "inner": self.inner.state_dict(),
            "stop_step": self.stop_step,
            "reason": self.reason,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.inner.load_state_dict(state["inner"])
        self.stop_step, self.reason = state.get("stop_step"), state.get("reason")


@dataclass
class DemoResult:
    run_dir: Path
    summary: dict[str, Any]
    text: str


# ---------------------------------------------------------------------- data
class _Rows:
    """A list of encoded examples as a map-style dataset for the Trainer."""

    def __init__(self, rows: list[dict[str, list[int]]]) -> None:
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, list[int]]:
        return self.rows[i]


def _probes(rng: random.Random, settings: DemoSettings) -> list[Any]:
    """Held-out probe sentences; players = the planted words, then fillers, up to n."""
    from sft_interaction_callback.demo.task import PLANTED, probe_sentences
    from sft_interaction_callback.probing import Probe

    length = max(settings.probe_length, settings.n_players)
    out = []
    for k, ex in enumerate(probe_sentences(rng, settings.num_probes, length)):
        prompt = ex.prompt
        starts, pos = [], 0
        for w in ex.words:
            starts.append((prompt.index(w, pos), w))
            pos = starts[-1][0] + len(w)
        planted = [(s, w) for s, w in starts if w in PLANTED]
        fillers = [(s, w) for s, w in starts if w not in PLANTED]
        rng.shuffle(fillers)
        chosen = (planted + fillers)[: settings.n_players]
        players = sorted((s, s + len(w)) for s, w in chosen)
        out.append(Probe(prompt, ex.target, players, id=f"{ex.kind}-{k}"))
    return out


# ---------------------------------------------------------------------- metrics
def _accuracy_fns(tokenizer: Any) -> tuple[Callable, Callable]:
    """``(preprocess_logits_for_metrics, compute_metrics)``: label-word accuracy.

    The prediction is the label word (``yes`` / ``no``) with the larger logit at the
    position that predicts the target; the loss is the Trainer's (target token only).
    """
    import numpy as np
    import torch

    from sft_interaction_callback.demo.model import label_token_ids

    ids = label_token_ids(tokenizer)

    def preprocess(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if isinstance(logits, tuple):
            logits = logits[0]
        pos = (labels != -100).float().argmax(dim=1) - 1
        rows = torch.arange(logits.shape[0], device=logits.device)
        return logits[rows, pos][:, ids]

    def compute(pred: Any) -> dict[str, float]:
        scores, labels = pred.predictions, pred.label_ids
        if isinstance(scores, tuple):
            scores = scores[0]
        first = (labels != -100).argmax(axis=1)
        gold = labels[np.arange(len(labels)), first]
        guess = np.asarray(ids)[np.asarray(scores).argmax(axis=1)]
        return {"accuracy": float((guess == gold).mean())}

    return preprocess, compute


def _eval_callback(schedule: Any, every: int | None = None) -> Any:
    """A callback that asks the Trainer to evaluate at every probe step (and every ``every``)."""
    from transformers import TrainerCallback

    class EvaluateAtProbeSteps(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            step = int(state.global_step)
            if schedule.should_probe(step) or (every and step % every == 0):
                control.should_evaluate = True

    return EvaluateAtProbeSteps()


def _progress_callback(log: Callable[[str], None]) -> Any:
    """One line per probe point: loss, held-out accuracy, removal, emerged share, noise."""
    from transformers import TrainerCallback

    class Progress(TrainerCallback):
        def __init__(self) -> None:
            self.rows: dict[int, dict[str, float]] = {}
            self.loss: float | None = None

        def on_log(self, args, state, control, logs=None, **kwargs):
            logs = logs or {}
            if "loss" in logs:
                self.loss = float(logs["loss"])
            step = int(state.global_step)
            row = self.rows.setdefault(step, {})
            row.update({k: v for k, v in logs.items() if isinstance(v, (int, float))})
            if "eval_accuracy" in row and "interactions/noise" in row:
                del self.rows[step]
                loss = "  -  " if self.loss is None else f"{self.loss:.3f}"
                log(
                    f"  step {step:4d}  train loss {loss}  held-out acc "
                    f"{100 * row['eval_accuracy']:5.1f}%  eval loss "
                    f"{row.get('eval_loss', math.nan):.3f}  removed "
                    f"{row.get('interactions/removed/fraction', math.nan):.2f}  emerged "
                    f"{row.get('interactions/emerged/strength_norm', math.nan):.2f}  noise "
                    f"{row['interactions/noise']:.3f}  stage "
                    f"{row.get('interactions/stopper/stage', math.nan):.0f}"
                )

    return Progress()


# ---------------------------------------------------------------------- the run
def _new_run_dir(output_dir: Path, settings: DemoSettings, seed: int) -> Path:
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
            if "WANDB_MODE" not in os.environ and not _wandb_credentials():
                os.environ["WANDB_MODE"] = "offline"
                log("[demo] W&B: no API key found, logging offline (set WANDB_MODE to override)")
            _start_wandb_run(run_dir)
        hf_logging.disable_progress_bar()
        return _run(settings, run_dir, seed, report_to, _device(device), log, wall0, cpu0)
    finally:
        if report_to == "wandb":
            _finish_wandb_run()
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
    from sft_interaction_callback.callback import InteractionCallback
    from sft_interaction_callback.demo.model import (
        ModelSize,
        build_model,
        build_tokenizer,
        collate,
        encode_example,
        label_accuracy,
    )
    from sft_interaction_callback.demo.pretrain import pretrain
    from sft_interaction_callback.demo.task import make_split
    from sft_interaction_callback.tracking import ProbeSchedule

    log(f"[demo] run folder: {run_dir}  ({settings.name} settings, seed {seed}, device {dev})")

    # ---------------- data
    rng = random.Random(seed)
    tokenizer = build_tokenizer()
    train = make_split(rng, settings.train_size, flip_p=settings.label_noise)
    held_out = make_split(rng, settings.eval_size)
    probes = _probes(rng, settings)
    corpus_check = make_split(rng, settings.eval_size, spurious=True)
    noisy = sum(e.noisy for e in train)
    log(
        f"[demo] task: {len(train)} training sentences ({noisy} with a flipped label), "
        f"{len(held_out)} held-out, {len(probes)} probes x {settings.n_players} players"
    )

    # ---------------- stage 1
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
        "accuracy_true_rule": label_accuracy(model, tokenizer, held_out, "true"),
        "accuracy_corpus_rule": label_accuracy(model, tokenizer, corpus_check, "label"),
    }
    log(
        f"[demo] pretrained model: held-out accuracy {100 * stage1['accuracy_true_rule']:.1f}% "
        "against the true rule, "
        f"{100 * stage1['accuracy_corpus_rule']:.1f}% against its own corpus's labels "
        "(spurious rule on 'mirror' sentences)"
    )
    model.save_pretrained(run_dir / "pretrained")
    tokenizer.save_pretrained(run_dir / "pretrained")

    # ---------------- stage 2
    from peft import LoraConfig, get_peft_model
    from transformers import Trainer, TrainingArguments
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    lora = LoraConfig(
        r=settings.lora_r,
        lora_alpha=settings.lora_alpha,
        lora_dropout=0.0,
        target_modules=[
            "q_proj",
            "k_proj",
            "v_proj",
            "o_proj",
            "gate_proj",
            "up_proj",
            "down_proj",
        ],
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(model, lora)

    def enc(examples):
        return _Rows([encode_example(tokenizer, e.prompt, e.target) for e in examples])

    shadow = ShadowStopper()
    schedule = ProbeSchedule(settings.schedule, max_steps=settings.max_steps)
    callback = InteractionCallback(
        probes=probes,
        n_players=settings.n_players,
        schedule=settings.schedule,
        stopper=shadow,
        seed=seed,
    )
    preprocess, compute = _accuracy_fns(tokenizer)
    args = TrainingArguments(
        output_dir=str(run_dir),
        max_steps=settings.max_steps,
        per_device_train_batch_size=settings.batch_size,
        per_device_eval_batch_size=128,
        learning_rate=settings.lr,
        lr_scheduler_type="linear",
        warmup_steps=settings.warmup,
        logging_steps=max(1, settings.max_steps // 100),
        eval_strategy="no",
        eval_on_start=True,
        save_strategy="no",
        report_to=[] if report_to == "none" else [report_to],
        run_name=run_dir.name,
        seed=seed,
        data_seed=seed,
        use_cpu=dev == "cpu",
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=enc(train),
        eval_dataset=enc(held_out),
        data_collator=lambda b: collate(b, tokenizer.pad_token_id),
        processing_class=tokenizer,
        compute_metrics=compute,
        preprocess_logits_for_metrics=preprocess,
        callbacks=[_eval_callback(schedule, settings.eval_every)],
    )
    callback.attach(trainer)
    for cb in (PrinterCallback, ProgressCallback):
        trainer.remove_callback(cb)
    trainer.add_callback(_progress_callback(log))
    log(
        f"[demo] stage 2: LoRA fine-tuning for {settings.max_steps} steps with the interaction "
        f"callback (probe steps: {len(schedule.steps(settings.max_steps))})"
    )
    t2 = time.perf_counter()
    trainer.train()
    sft_seconds = time.perf_counter() - t2
    trainer.state.save_to_json(str(run_dir / "trainer_state.json"))
    trainer.save_model(str(run_dir / "adapter-final"))

    # ---------------- summary
    snap_dir = run_dir / callback.config.output_subdir
    if shadow.stop_step is not None:
        _write_shadow_stop(snap_dir, shadow)
    summary = summarise(
        run_dir=run_dir,
        snap_dir=snap_dir,
        log_history=trainer.state.log_history,
        shadow=shadow,
        probes=probes,
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
    summary["report"] = _report(run_dir, log)
    summary["timing"]["wall_seconds"] = round(time.perf_counter() - wall0, 1)
    summary["timing"]["cpu_seconds"] = round(time.process_time() - cpu0, 1)
    from sft_interaction_callback.snapshots import atomic_write_json

    atomic_write_json(run_dir / "summary.json", summary)
    text = format_summary(summary)
    if report_to == "wandb":
        _wandb_summary(summary)
    return DemoResult(run_dir, summary, text)


def _wandb_credentials() -> bool:
    """Whether W&B can log in without asking: an API key in the environment or ~/.netrc."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        import netrc

        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (OSError, netrc.NetrcParseError):
        return False


def _write_shadow_stop(snap_dir: Path, shadow: ShadowStopper) -> None:
    """``stop.json`` for the report's stop marker, marked as a shadow (not enforced) stop."""
    from sft_interaction_callback.snapshots import FORMAT, atomic_write_json

    atomic_write_json(
        snap_dir / "stop.json",
        {
            "format": FORMAT,
            "stop_step": shadow.stop_step,
            "reason": shadow.reason,
            "shadow": True,
            "checkpoint_saved": False,
            "note": "demo shadow mode: the stop rule fired here; training went on to max_steps "
            "so that the end of the run could be measured",
        },
    )


def _report(run_dir: Path, log: Callable[[str], None]) -> str | None:
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


def _start_wandb_run(run_dir: Path) -> None:
    """Open the demo's W&B run with an explicit folder; the Trainer's W&B callback reuses it.

    Passing ``dir`` here (rather than only through ``WANDB_DIR``) matters because W&B
    caches its settings process-wide on first use: a second run in the same process would
    otherwise write under the first run's folder.
    """
    try:
        import wandb
    except ImportError:
        return
    try:
        wandb.init(
            dir=os.environ.get("WANDB_DIR") or str(run_dir),
            project=os.environ.get("WANDB_PROJECT", "sft-interactions-demo"),
            name=run_dir.name,
            mode=os.environ.get("WANDB_MODE") or None,
            reinit="finish_previous",
        )
    except Exception as exc:  # noqa: BLE001 - W&B trouble never stops the demo
        warnings.warn(
            f"W&B could not start ({type(exc).__name__}: {exc}); the demo goes on", stacklevel=2
        )


def _finish_wandb_run() -> None:
    try:
        import wandb

        if wandb.run is not None:
            wandb.run.finish()
    except Exception:  # noqa: BLE001
        pass


def _wandb_summary(summary: Mapping[str, Any]) -> None:
    try:
        import wandb
    except ImportError:
        return
    run = wandb.run
    if run is None:
        return
    flat = {
        "demo/stop_step": summary["stop"]["step"],
        "demo/accuracy_step0": summary["accuracy"]["step0"],
        "demo/accuracy_stop": summary["accuracy"]["stop"],
        "demo/accuracy_best": summary["accuracy"]["best"],
        "demo/accuracy_end": summary["accuracy"]["end"],
        "demo/removed_share_before_stop": summary["removal"]["share_before_stop"],
    }
    try:
        for k, v in flat.items():
            run.summary[k] = v
        run.finish()
    except Exception:  # noqa: BLE001
        pass


# ---------------------------------------------------------------------- summarising
def _series(history: list[dict[str, Any]], key: str) -> dict[int, float]:
    return {int(h["step"]): float(h[key]) for h in history if key in h and h[key] is not None}


def _at_or_before(series: Mapping[int, float], step: int | None) -> tuple[int, float] | None:
    """The value at ``step``, or the last one before it."""
    if step is None:
        return None
    keys = [s for s in series if s <= step]
    if not keys:
        return None
    s = max(keys)
    return s, series[s]


def summarise(
    *,
    run_dir: Path,
    snap_dir: Path,
    log_history: list[dict[str, Any]],
    shadow: ShadowStopper,
    probes: list[Any],
    settings: DemoSettings,
    seed: int,
) -> dict[str, Any]:
    """The numbers the demo prints, from the run's files and the Trainer's log history."""
    from sft_interaction_callback.snapshots import read_jsonl

    records = [r for r in read_jsonl(snap_dir / "metrics.jsonl") if not r.get("skipped")]
    by_step = {int(r["step"]): r for r in records}
    steps = sorted(by_step)
    last = steps[-1] if steps else None
    stop = shadow.stop_step
    inner = shadow.inner

    acc = _series(log_history, "eval_accuracy")
    eval_loss = _series(log_history, "eval_loss")
    best_step = max(acc, key=lambda s: (acc[s], -s)) if acc else None
    end_step = max(acc) if acc else None

    def metric(step: int | None, key: str) -> float | None:
        if step is None or step not in by_step:
            return None
        x = by_step[step].get(key)
        return None if x is None else float(x)

    removed_stop = metric(stop, "interactions/removed/strength")
    removed_end = metric(last, "interactions/removed/strength")
    share = None
    if removed_stop is not None and removed_end:
        share = removed_stop / removed_end
    emerged = {
        k: {
            "stop": metric(stop, f"interactions/emerged/{k}"),
            "end": metric(last, f"interactions/emerged/{k}"),
        }
        for k in ("strength_norm", "strength", "count")
    }
    noise = {"stop": metric(stop, "interactions/noise"), "end": metric(last, "interactions/noise")}
    norm = emerged["strength_norm"]
    grew = None
    if norm["stop"] is not None and norm["end"] is not None:
        grew = norm["end"] > norm["stop"]

    acc_stop = _at_or_before(acc, stop)
    summary: dict[str, Any] = {
        "run_dir": str(run_dir),
        "settings": asdict(settings),
        "seed": seed,
        "mode": "shadow stop: the default NoiseRiseStopper decides, training continues to "
        "max_steps so the end can be measured",
        "max_steps": settings.max_steps,
        "last_probe_step": last,
        "stop": {
            "step": stop,
            "reason": shadow.reason
            or f"the stopper did not fire ({getattr(inner, 'stage_reason', '')})",
            "fired": stop is not None,
            "before_last_step": stop is not None and stop < settings.max_steps,
            "denoising_stage_ended_at": getattr(inner, "stage_ended_at", None),
        },
        "accuracy": {
            "step0": acc.get(0),
            "stop": None if acc_stop is None else acc_stop[1],
            "stop_eval_step": None if acc_stop is None else acc_stop[0],
            "best": None if best_step is None else acc[best_step],
            "best_step": best_step,
            "end": None if end_step is None else acc[end_step],
            "end_step": end_step,
            "by_step": {str(s): v for s, v in sorted(acc.items())},
        },
        "eval_loss": {"by_step": {str(s): v for s, v in sorted(eval_loss.items())}},
        "train_loss": {
            "first": _first(_series(log_history, "loss")),
            "last": _last(_series(log_history, "loss")),
        },
        "removal": {
            "removed_strength_at_stop": removed_stop,
            "removed_strength_at_end": removed_end,
            "share_before_stop": share,
            "removed_fraction_at_stop": metric(stop, "interactions/removed/fraction"),
            "removed_fraction_at_end": metric(last, "interactions/removed/fraction"),
        },
        "emerged": {**emerged, "grew_after_stop": grew},
        "noise": noise,
        "planted": _planted(snap_dir, probes, {"step0": 0, "stop": stop, "end": last}),
    }
    summary["checks"] = _checks(summary)
    return summary


def _first(series: Mapping[int, float]) -> float | None:
    return series[min(series)] if series else None


def _last(series: Mapping[int, float]) -> float | None:
    return series[max(series)] if series else None


def _planted(snap_dir: Path, probes: list[Any], at: Mapping[str, int | None]) -> list[dict]:
    """Where the planted AND / OR word sets stand among each probe's salient interactions."""
    from sft_interaction_callback.demo.task import AND_PAIR, OR_PAIR
    from sft_interaction_callback.snapshots import load_tensors, step_filename

    patterns = [("AND", AND_PAIR), ("OR", OR_PAIR)]
    tables: dict[str, dict[str, Any]] = {}
    for name, step in at.items():
        path = snap_dir / step_filename(step) if step is not None else None
        if path is not None and path.is_file():
            tables[name] = load_tensors(path)[0]
    out = []
    for kind, words in patterns:
        entry: dict[str, Any] = {"type": kind, "words": list(words), "probes": []}
        for p, probe in enumerate(probes):
            if not all(w in probe.words for w in words):
                continue
            s = sum(1 << probe.words.index(w) for w in words)
            size = 1 << probe.n_players
            idx = s if kind == "AND" else size + s
            row: dict[str, Any] = {"probe": probe.id}
            for name, t in tables.items():
                inter = (t["i_and"] if kind == "AND" else t["i_or"])[p, s]
                table = _abs_table(t, p)
                rank = int((table > abs(float(inter))).sum()) + 1
                category = None
                for c in ("preserved", "emerged"):
                    if c in t and bool(t[c][p, idx]):
                        category = c
                if name == "step0" and "preserved" in t:
                    category = "salient" if bool(t["preserved"][p, idx]) else None
                row[name] = {"value": float(inter), "rank": rank, "category": category}
            entry["probes"].append(row)
        for name in tables:
            hits = [r for r in entry["probes"] if r.get(name, {}).get("category")]
            entry[f"salient_{name}"] = f"{len(hits)}/{len(entry['probes'])}"
        out.append(entry)
    return out


def _abs_table(t: Mapping[str, Any], p: int) -> Any:
    """``|I|`` of probe ``p`` over AND and OR, empty sets left out (for ranks)."""
    import torch

    size = t["i_and"].shape[-1]
    table = torch.cat((t["i_and"][p], t["i_or"][p])).abs()
    table[0] = table[size] = 0
    return table


def _checks(s: Mapping[str, Any]) -> dict[str, bool | None]:
    acc, rem = s["accuracy"], s["removal"]
    share = rem["share_before_stop"]
    return {
        "stopped_before_last_step": s["stop"]["before_last_step"],
        "removal_mostly_before_stop": None if share is None else share >= 0.8,
        "emerged_grew_after_stop": s["emerged"]["grew_after_stop"],
        "accuracy_at_stop_ge_end": None
        if acc["stop"] is None or acc["end"] is None
        else acc["stop"] >= acc["end"],
    }


# ---------------------------------------------------------------------- printing
def _pct(x: float | None) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{100 * x:.1f}%"


def _num(x: float | None, fmt: str = ".4g") -> str:
    return "n/a" if x is None or not math.isfinite(x) else format(x, fmt)


def format_summary(s: Mapping[str, Any]) -> str:
    """The short text summary the CLI prints."""
    stop, acc, rem, em = s["stop"], s["accuracy"], s["removal"], s["emerged"]
    lines = ["", "=== demo summary ==="]
    st1 = s.get("stage1")
    if st1:
        lines.append(
            f"pretrained model (stage 1): {_pct(st1['accuracy_true_rule'])} held-out accuracy on "
            f"the true rule, {_pct(st1['accuracy_corpus_rule'])} on its noisy corpus's labels"
        )
    if stop["fired"]:
        lines.append(f"stop: step {stop['step']} of {s['max_steps']}")
    else:
        lines.append(f"stop: the stopper did not fire in {s['max_steps']} steps")
    lines.append(f"  reason: {stop['reason']}")
    lines.append(
        "  (shadow mode: training went on to max_steps to measure the end; the model at the "
        "stop step is the one early stopping would keep)"
    )
    lines.append(
        f"held-out accuracy: step 0 {_pct(acc['step0'])} | stop {_pct(acc['stop'])}"
        f" | best {_pct(acc['best'])} (step {acc['best_step']})"
        f" | end {_pct(acc['end'])} (step {acc['end_step']})"
    )
    lines.append(
        f"train loss: {_num(s['train_loss']['first'], '.3f')} (first log) -> "
        f"{_num(s['train_loss']['last'], '.3f')} (last)"
    )
    lines.append(
        f"removed strength: {_num(rem['removed_strength_at_stop'])} at the stop, "
        f"{_num(rem['removed_strength_at_end'])} at the end -> "
        f"{_pct(rem['share_before_stop'])} of the final removal happened before the stop"
    )
    sn = em["strength_norm"]
    grew = {True: "grew", False: "did not grow", None: "n/a"}[em["grew_after_stop"]]
    lines.append(
        f"newly emerged strength (share of total): {_pct(sn['stop'])} at the stop -> "
        f"{_pct(sn['end'])} at the end ({grew}); raw {_num(em['strength']['stop'])} -> "
        f"{_num(em['strength']['end'])}"
    )
    lines.append(
        f"noise signal: {_num(s['noise']['stop'])} at the stop -> {_num(s['noise']['end'])} at "
        "the end"
    )
    for p in s["planted"]:
        joiner = " AND " if p["type"] == "AND" else " OR "
        lines.append(
            f"planted {p['type']} pattern {{{joiner.join(p['words'])}}}: salient in "
            f"{p.get('salient_step0', 'n/a')} probes at step 0, {p.get('salient_stop', 'n/a')} "
            f"at the stop, {p.get('salient_end', 'n/a')} at the end"
        )
        if stop["fired"]:
            cats = []
            for row in p["probes"]:
                at = row.get("stop") or {}
                cats.append(
                    f"{row['probe']} {at.get('category') or 'not salient'} (rank {at.get('rank')})"
                )
            lines.append("  at the stop: " + ", ".join(cats))
    checks = s["checks"]
    marks = {True: "yes", False: "NO", None: "n/a"}
    lines.append(
        "checks: " + ", ".join(f"{k.replace('_', ' ')}: {marks[v]}" for k, v in checks.items())
    )
    t = s.get("timing", {})
    if t:
        lines.append(
            f"time: {t.get('wall_seconds')} s wall, {t.get('cpu_seconds')} s CPU (pretraining "
            f"{t.get('pretrain_seconds')} s, fine-tuning with probes {t.get('finetune_seconds')} s)"
        )
    if s.get("report"):
        lines.append(f"report: {s['report']}")
    lines.append(f"run folder: {s['run_dir']}")
    return "\n".join(lines)

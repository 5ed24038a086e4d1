"""Stage 2 of the demo: LoRA fine-tuning in a plain ``transformers.Trainer`` with the callback.

:func:`build_finetune` wires everything stage 2 needs: the LoRA adapter, the probes,
label-word accuracy as the Trainer's ``compute_metrics``, evaluation at every probe step
(so accuracy and interactions line up), and one progress line per probe point.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sft_interaction_callback.demo.settings import DemoSettings
from sft_interaction_callback.keys import (
    EMERGED,
    NOISE_KEY,
    REMOVED_FRACTION_KEY,
    STAGE_KEY,
    category_key,
)

__all__ = ["LORA_TARGETS", "Rows", "build_finetune", "make_probes"]

#: Every linear layer of the tiny Llama: the demo adapts attention and MLP alike.
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


class Rows:
    """A list of encoded examples as a map-style dataset for the Trainer."""

    def __init__(self, rows: list[dict[str, list[int]]]) -> None:
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, list[int]]:
        return self.rows[i]


def make_probes(rng: random.Random, settings: DemoSettings) -> list[Any]:
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


def build_finetune(
    model: Any,
    tokenizer: Any,
    *,
    train: list[Any],
    held_out: list[Any],
    probes: list[Any],
    settings: DemoSettings,
    stopper: Any,
    seed: int,
    dev: str,
    run_dir: Path,
    report_to: str,
    log: Callable[[str], None],
    validation: list[Any] | None = None,
) -> tuple[Any, Any, Any]:
    """``(trainer, callback, schedule)``: the LoRA model in a Trainer, callback attached.

    ``validation``: examples whose loss (and accuracy) is logged as ``val_*`` right after
    every evaluation of ``held_out``, for an eval-loss stop that does not read the split
    it is judged on.
    """
    from peft import LoraConfig, get_peft_model
    from transformers import Trainer, TrainingArguments
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    from sft_interaction_callback.callback.events import InteractionCallback
    from sft_interaction_callback.demo.model import collate, encode_example
    from sft_interaction_callback.tracking import ProbeSchedule

    lora = LoraConfig(
        r=settings.lora_r,
        lora_alpha=settings.lora_alpha,
        lora_dropout=0.0,
        target_modules=list(LORA_TARGETS),
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(model, lora)

    def enc(examples: list[Any]) -> Rows:
        """Encoded rows: prompt tokens masked out of the loss, the label token kept."""
        return Rows([encode_example(tokenizer, e.prompt, e.target) for e in examples])

    schedule = ProbeSchedule(settings.schedule, max_steps=settings.max_steps)
    callback = InteractionCallback(
        probes=probes,
        n_players=settings.n_players,
        schedule=settings.schedule,
        stopper=stopper,
        seed=seed,
        # shadow mode: the run goes on to max_steps; restoring would change the model the
        # end of the run is measured on. The summary reports the shadow restore step.
        restore_best=False,
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
    if validation:
        trainer.add_callback(_validation_callback(trainer, enc(validation)))
    for cb in (PrinterCallback, ProgressCallback):
        trainer.remove_callback(cb)
    trainer.add_callback(_progress_callback(log))
    return trainer, callback, schedule


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
        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            step = int(state.global_step)
            if schedule.should_probe(step) or (every and step % every == 0):
                control.should_evaluate = True

    return EvaluateAtProbeSteps()


def _validation_callback(trainer: Any, dataset: Any) -> Any:
    """After each held-out evaluation, evaluate ``dataset`` too, logged with prefix ``val``.

    The Trainer's own ``evaluate`` (sequential sampler, eval mode, no RNG drawn), so the
    training is the same with or without it.
    """
    from transformers import TrainerCallback

    class EvaluateValidation(TrainerCallback):
        busy = False

        def on_evaluate(
            self, args: Any, state: Any, control: Any, metrics: Any = None, **kwargs: Any
        ) -> None:
            if self.busy or "eval_loss" not in (metrics or {}):
                return
            self.busy = True
            try:
                trainer.evaluate(eval_dataset=dataset, metric_key_prefix="val")
            finally:
                self.busy = False

    return EvaluateValidation()


def _progress_callback(log: Callable[[str], None]) -> Any:
    """One line per probe point: loss, held-out accuracy, removal, emerged share, noise."""
    from transformers import TrainerCallback

    emerged = category_key(EMERGED, "strength_norm")

    class Progress(TrainerCallback):
        def __init__(self) -> None:
            self.rows: dict[int, dict[str, float]] = {}
            self.loss: float | None = None

        def on_log(
            self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any
        ) -> None:
            logs = logs or {}
            if "loss" in logs:
                self.loss = float(logs["loss"])
            step = int(state.global_step)
            row = self.rows.setdefault(step, {})
            row.update({k: v for k, v in logs.items() if isinstance(v, (int, float))})
            if "eval_accuracy" in row and NOISE_KEY in row:
                del self.rows[step]
                loss = "  -  " if self.loss is None else f"{self.loss:.3f}"
                log(
                    f"  step {step:4d}  train loss {loss}  held-out acc "
                    f"{100 * row['eval_accuracy']:5.1f}%  eval loss "
                    f"{row.get('eval_loss', math.nan):.3f}  removed "
                    f"{row.get(REMOVED_FRACTION_KEY, math.nan):.2f}  emerged "
                    f"{row.get(emerged, math.nan):.2f}  noise "
                    f"{row[NOISE_KEY]:.3f}  stage "
                    f"{row.get(STAGE_KEY, math.nan):.0f}"
                )

    return Progress()

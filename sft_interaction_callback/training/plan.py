"""The plan of a run: what ``--dry-run`` prints (and a run logs first), in a few lines.

Read-only over a validated :class:`~.schema.TrainConfig`; nothing is loaded, so a plan
for an 8-GPU run can be checked on a laptop. One helper per aspect (model, data,
training, interactions), each returning ``(label, text)`` rows.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from sft_interaction_callback.training.lora_targets import guess_family

if TYPE_CHECKING:  # pragma: no cover
    from sft_interaction_callback.training.schema import TrainConfig

__all__ = ["describe_plan"]

Rows = list[tuple[str, str]]


def describe_plan(cfg: TrainConfig, world_size: int | None = None) -> str:
    """One ``label  text`` line per aspect of the run: model, LoRA, data, batch, probes."""
    rows: Rows = [("experiment", cfg.name)]
    if cfg.sources:
        rows.append(("configs", ", ".join(cfg.sources)))
    rows += _model_rows(cfg)
    rows += _data_rows(cfg.data)
    rows += _training_rows(cfg.training, world_size)
    rows.append(("output_dir", cfg.output_dir))
    rows += _interaction_rows(cfg)
    rows.extend(("note", n) for n in cfg.notes)
    return "\n".join(f"{k:<13} {v}".rstrip() for k, v in rows)


def _model_rows(cfg: TrainConfig) -> Rows:
    m, lo = cfg.model, cfg.lora
    fam = m.family or guess_family(m.name) or "family unknown"
    trust = str(m.trust_remote_code).lower()
    src = f"{m.name}/{m.gguf_file} (GGUF, de-quantized)" if m.gguf_file else m.name
    rows = [("model", f"{src}  [{fam}, dtype {m.dtype}, trust_remote_code {trust}]")]
    if lo is None:
        rows.append(("fine-tuning", "full (lora: null): every weight trains"))
    else:
        tm = lo.target_modules
        shown = tm if isinstance(tm, str) else ", ".join(tm)
        rows.append(
            ("fine-tuning", f"LoRA r={lo.r} alpha={lo.alpha} dropout={lo.dropout} on {shown}")
        )
    return rows


def _data_rows(d: Any) -> Rows:
    if d.name:
        sub = f" ({d.config_name})" if d.config_name else ""
        src = f"hub {d.name}{sub}, split {d.split}"
    else:
        src = f"file {d.path}"
    cap = "all rows" if d.max_train_rows is None else f"at most {d.max_train_rows} rows"
    rows = [("data", f"{src}; train on {cap} (shuffle {d.shuffle}, seed {d.seed})")]
    eval_src = f"split {d.eval_split}" if d.eval_split else None
    if d.eval_path:
        eval_src = f"file {d.eval_path}"
    if eval_src:
        size = "all rows" if d.eval_size is None else f"at most {d.eval_size} rows"
        rows.append(("eval", f"{eval_src}, {size}"))
    elif d.eval_size:
        rows.append(("eval", f"{d.eval_size} rows held out of the training rows"))
    else:
        rows.append(("eval", "none"))
    fmt = d.format
    if fmt == "goemotions" or (fmt == "auto" and str(d.path or "").endswith(".tsv")):
        fmt += f" (response: {'first label' if d.label_mode == 'first' else 'all labels'})"
    chat = {True: "always", False: "never (plain text)"}.get(d.use_chat_template, "auto")
    rows.append(("format", f"{fmt}; chat template {chat}; loss on the completion only"))
    return rows


def _training_rows(t: dict[str, Any], world_size: int | None) -> Rows:
    per = int(t.get("per_device_train_batch_size", 8))
    acc = int(t.get("gradient_accumulation_steps", 1))
    ws = world_size or int(os.environ.get("WORLD_SIZE") or 1)
    max_steps = t.get("max_steps", -1)
    length = (
        f"max_steps {max_steps}"
        if max_steps not in (None, -1)
        else (f"{t.get('num_train_epochs', 3)} epochs")
    )
    if t.get("bf16"):
        prec = "bf16"
    elif t.get("fp16"):
        prec = "fp16"
    else:
        prec = "fp32" if t.get("bf16") is False else "bf16 unless fp16 (TRL default)"
    ev = str(t.get("eval_strategy", "no"))
    sv = str(t.get("save_strategy", "steps"))
    ev_s = f"eval every {t.get('eval_steps')} steps" if ev == "steps" else f"eval {ev}"
    sv_s = f"save every {t.get('save_steps', 500)} steps" if sv == "steps" else f"save {sv}"
    return [
        (
            "training",
            f"SFTTrainer, {length}, lr {t.get('learning_rate', 2e-5)} "
            f"{t.get('lr_scheduler_type', 'linear')}, batch {per}/device x {acc} "
            f"accumulation x {ws} process(es) = {per * acc * ws}, {prec}",
        ),
        ("", f"{ev_s}, {sv_s}, report_to {t.get('report_to', 'none')}"),
    ]


def _interaction_rows(cfg: TrainConfig) -> Rows:
    ic = cfg.interactions
    if ic is None:
        return [("interactions", "off (interactions: null)")]
    sched = ic.get("schedule")
    sched_s = "dense early, sparse later" if sched is None else repr(sched)
    stop = (
        f"stop after noise rises {ic.get('patience', 3)} probe points in a row"
        if ic.get("early_stopping", True)
        else "no early stop"
    )
    rows = [
        (
            "interactions",
            f"{ic.get('num_probes', 8)} probes x {ic.get('n_players', 8)} players from "
            f"the {cfg.probes_from} rows; schedule {sched_s}; {stop}",
        )
    ]
    if ic.get("reference_model"):
        rows.append(("", f"reference model for gamma: {ic['reference_model']}"))
    sub = ic.get("output_subdir", "interactions")
    rows.append(("", f"snapshots in {os.path.join(cfg.output_dir, sub)}"))
    return rows

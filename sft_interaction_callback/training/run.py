"""One SFT run from a :class:`TrainConfig`: tokenizer, model, LoRA, data, trainer, callback.

Nothing here assumes a single process: under ``accelerate launch`` every process builds
the same trainer; data preparation runs main-process-first through the training
arguments, and only the world's process zero prints or writes the config.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sft_interaction_callback.training.data import SFTData, load_sft_data, use_chat_template
from sft_interaction_callback.training.lora_targets import target_matches
from sft_interaction_callback.training.model_source import clear_gguf_marker, gguf_problem
from sft_interaction_callback.training.plan import describe_plan
from sft_interaction_callback.training.probes import build_probes
from sft_interaction_callback.training.schema import (
    ConfigError,
    LoraSettings,
    ModelConfig,
    TrainConfig,
)

__all__ = [
    "RunResult",
    "build_trainer",
    "check_lora_targets",
    "load_model",
    "load_tokenizer",
    "train",
]

CONFIG_FILE = "sft_config.yaml"


@dataclass
class RunResult:
    """What a finished run left behind."""

    output_dir: str
    global_step: int
    stop_step: int | None = None
    snapshot_dir: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)


def sft_args(cfg: TrainConfig) -> Any:
    """``trl.SFTConfig`` from ``cfg.training``; a bad combination is a :class:`ConfigError`."""
    from dataclasses import fields

    from trl import SFTConfig

    kwargs = cfg.sft_kwargs()
    known = {f.name: f for f in fields(SFTConfig)}
    if "activation_checkpointing" in known:
        # transformers >= 5.2x renamed gradient_checkpointing*; configs keep the old, portable
        # name, translated here so that the run does not warn about TRL's own default.
        for old, new in (
            ("gradient_checkpointing", "activation_checkpointing"),
            ("gradient_checkpointing_kwargs", "activation_checkpointing_kwargs"),
        ):
            value = kwargs.pop(old, None)
            if kwargs.get(new) is None and value is not None:
                kwargs[new] = value
        if kwargs.get("activation_checkpointing") is None:
            kwargs["activation_checkpointing"] = known["gradient_checkpointing"].default
    try:
        return SFTConfig(**kwargs)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"training: SFTConfig refused the settings: {err}") from None


def load_tokenizer(mc: ModelConfig) -> Any:
    """The tokenizer (``model.tokenizer`` or the model's), with a pad token and template."""
    from transformers import AutoTokenizer

    name = mc.tokenizer or mc.name
    extra = {"gguf_file": mc.gguf_file} if mc.gguf_file and not mc.tokenizer else {}
    tok = AutoTokenizer.from_pretrained(
        name,
        revision=None if mc.tokenizer else mc.revision,
        trust_remote_code=mc.trust_remote_code,
        **extra,
    )
    if mc.chat_template:
        ct = mc.chat_template
        if "{%" not in ct and "{{" not in ct and Path(ct).is_file():
            ct = Path(ct).read_text(encoding="utf-8")
        tok.chat_template = ct
    if tok.pad_token is None and tok.eos_token is not None:
        tok.pad_token = tok.eos_token  # batches need one; the loss ignores padding anyway
    return tok


def load_model(mc: ModelConfig) -> Any:
    """``AutoModelForCausalLM.from_pretrained`` with the config's dtype and options.

    No ``device_map``: the Trainer (through Accelerate) places the model on each process's
    device, which works alike on one GPU, under DDP and under FSDP / DeepSpeed. A GGUF
    file (``model.gguf_file``) is de-quantized to ``model.dtype`` and its quantization
    marker dropped, so that the Trainer accepts the float model it is.
    """
    import torch
    import transformers
    from transformers import AutoModelForCausalLM

    dtype: Any = mc.dtype if mc.dtype == "auto" else getattr(torch, mc.dtype)
    dtype_kw = "dtype" if int(transformers.__version__.split(".")[0]) >= 5 else "torch_dtype"
    kwargs: dict[str, Any] = {dtype_kw: dtype, "trust_remote_code": mc.trust_remote_code}
    if mc.revision:
        kwargs["revision"] = mc.revision
    if mc.attn_implementation:
        kwargs["attn_implementation"] = mc.attn_implementation
    if mc.gguf_file:
        problem = gguf_problem(mc.name, mc.gguf_file)
        if problem:
            raise ConfigError(f"model.gguf_file: {problem}")
        kwargs["gguf_file"] = mc.gguf_file
    return clear_gguf_marker(AutoModelForCausalLM.from_pretrained(mc.name, **kwargs))


_LINEAR_TYPES = {"Linear", "Linear8bitLt", "Linear4bit", "Conv1D"}


def check_lora_targets(model: Any, lora: LoraSettings) -> list[str]:
    """The module names LoRA will adapt; a :class:`ConfigError` if a target matches none."""
    names = [n for n, m in model.named_modules() if type(m).__name__ in _LINEAR_TYPES and n]
    targets = lora.target_modules
    hits = target_matches(targets, names)
    leaf = sorted({n.rsplit(".", 1)[-1] for n in names})
    if isinstance(targets, list):
        missing = [t for t in targets if not target_matches([t], names)]
        if missing:
            raise ConfigError(
                f"lora.target_modules {missing} match no linear layer of "
                f"{type(model).__name__}; its linear layers are named {', '.join(leaf)}"
            )
    elif not hits:
        raise ConfigError(
            f"lora.target_modules={targets!r} matches no linear layer of "
            f"{type(model).__name__} (e.g. {names[0] if names else 'none found'})"
        )
    return hits


def build_trainer(
    cfg: TrainConfig, *, model: Any = None, tokenizer: Any = None, args: Any = None
) -> tuple[Any, Any, SFTData]:
    """``(trainer, callback or None, data)``, ready for ``trainer.train()``."""
    from trl import SFTTrainer

    args = args if args is not None else sft_args(cfg)
    tokenizer = tokenizer if tokenizer is not None else load_tokenizer(cfg.model)
    conversational = use_chat_template(cfg.data, tokenizer)
    with args.main_process_first(desc="preparing the data set"):
        data = load_sft_data(cfg.data, conversational=conversational)
    model = model if model is not None else load_model(cfg.model)
    peft_config = cfg.peft_config()
    if peft_config is not None:
        check_lora_targets(model, cfg.lora)
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=data.train_dataset(),
        eval_dataset=data.eval_dataset(),
        processing_class=tokenizer,
        peft_config=peft_config,
    )
    callback = None
    if cfg.interactions is not None:
        callback = _callback(cfg, trainer, tokenizer, data)
    return trainer, callback, data


def _callback(cfg: TrainConfig, trainer: Any, tokenizer: Any, data: SFTData) -> Any:
    from sft_interaction_callback.callback.events import InteractionCallback
    from sft_interaction_callback.config import InteractionConfig

    icfg = InteractionConfig(**cfg.interaction_kwargs())
    if icfg.probes is None:
        examples = data.eval_examples if cfg.probes_from == "eval" else data.train_examples
        try:
            probes = build_probes(
                examples,
                tokenizer,
                n_players=icfg.n_players,
                num_probes=icfg.num_probes,
                seed=icfg.seed,
                id_prefix=f"{cfg.probes_from}-",
            )
        except ValueError as err:
            raise ConfigError(f"interactions: {err}") from None
        icfg = InteractionConfig.from_kwargs(icfg, probes=probes)
    return InteractionCallback(icfg, trainer=trainer)


def _resume_arg(cfg: TrainConfig) -> Any:
    value = cfg.training.get("resume_from_checkpoint")
    if value in (None, False, ""):
        return None
    if value is True or str(value).lower() in ("true", "auto", "latest"):
        return True
    return str(value)


def train(cfg: TrainConfig, *, echo: Callable[[str], Any] = print) -> RunResult:
    """Build everything, train, save the model (the LoRA adapter for a LoRA run)."""
    args = sft_args(cfg)
    main = args.process_index == 0
    if main:
        echo(describe_plan(cfg, world_size=args.world_size))
    trainer, callback, data = build_trainer(cfg, args=args)
    if trainer.is_world_process_zero():
        echo(f"data          {data.describe()}")
        if callback is not None and callback.config.probes:
            words = [" ".join(p.words) for p in callback.config.probes[:3]]
            echo(f"probes        {len(callback.config.probes)}, e.g. players {words}")
        os.makedirs(args.output_dir, exist_ok=True)
        Path(args.output_dir, CONFIG_FILE).write_text(cfg.to_yaml(), encoding="utf-8")
    output = trainer.train(resume_from_checkpoint=_resume_arg(cfg))
    trainer.save_model()
    stop = None if callback is None else callback.stop_step
    snap = None
    if callback is not None:
        snap = os.path.join(args.output_dir, callback.config.output_subdir)
    result = RunResult(
        output_dir=args.output_dir,
        global_step=int(trainer.state.global_step),
        stop_step=stop,
        snapshot_dir=snap,
        metrics=dict(getattr(output, "metrics", {}) or {}),
    )
    if trainer.is_world_process_zero():
        end = f"stopped early at step {stop}" if stop is not None else "ran to the end"
        echo(f"done          {result.global_step} steps, {end}; model in {result.output_dir}")
        if snap:
            echo(f"              interaction snapshots in {snap}")
        sys.stdout.flush()
    return result

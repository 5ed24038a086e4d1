"""``InteractionConfig``: every setting of the interaction callback, validated up front.

Fields follow the ``TrainingArguments`` style: a dataclass whose ``metadata["help"]`` says
what each field does, and a constructor that refuses a bad value with a message naming
the field and what to change. Nothing here imports Hugging Face code.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields
from numbers import Integral, Real
from typing import Any

from sft_interaction_callback.andor.decomposition import SOLVERS
from sft_interaction_callback.keys import BASELINES, MAX_PLAYERS, SNAPSHOT_SUBDIR
from sft_interaction_callback.paths import model_path_problem

__all__ = ["InteractionConfig", "config_field_names"]

SCOPES = ("joint", "type")
MISSING_SNAPSHOT = ("error", "rebuild")
DISTRIBUTED = ("auto", "local", "lockstep")
PROBE_SOURCES = ("train", "eval")
#: ``schedule="eval"``: probe at every evaluation step of the trainer.
EVAL_SCHEDULE = "eval"


def _help(text: str, default: Any = MISSING, factory: Any = MISSING) -> Any:
    if factory is not MISSING:
        return field(default_factory=factory, metadata={"help": text})
    return field(default=default, metadata={"help": text})


def _is_int(x: Any) -> bool:
    return isinstance(x, Integral) and not isinstance(x, bool)


def _is_number(x: Any) -> bool:
    return isinstance(x, Real) and not isinstance(x, bool)


@dataclass
class InteractionConfig:
    """Settings of :class:`~sft_interaction_callback.InteractionCallback`.

    Every field has a ``metadata["help"]`` string (``InteractionConfig.help()`` prints them).
    A bad value raises ``ValueError`` at construction, naming the field and the fix.
    """

    probes: list[Any] | None = _help(
        "Probes to track: Probe objects or mappings {prompt, target, players?, id?}. "
        "None samples `num_probes` rows of trainer.train_dataset (seeded by `seed`).",
        None,
    )
    num_probes: int = _help("How many probes to sample from the training set.", 8)
    probes_from: str = _help(
        "Where sampled probes come from: 'train' (trainer.train_dataset) or 'eval' "
        "(trainer.eval_dataset; the first one of a dict).",
        "train",
    )
    exclude_words: list[str] | None = _help(
        "Words never chosen as players (template text such as 'Comment', 'Emotion'); "
        "compared case-insensitively.",
        None,
    )
    template: str | None = _help(
        "Template text whose words are never players: 'auto' (words found in at least 80% "
        "of the sampled prompts), a template string such as 'Comment: {text}\\nEmotion:' "
        "(its words outside {fields}), or None (no detection).",
        "auto",
    )
    n_players: int = _help(
        "Words per probe that are players (1..20); a probe costs 2**n_players forward passes "
        "(8: every stop-rule study was judged at 8; 10 costs 4x the forward passes and about "
        "15x the fit).",
        8,
    )
    schedule: Any = _help(
        "When to probe: None (dense early, sparse later, scaled to max_steps), an int k "
        "(every k steps), a list of steps, or 'eval' (at every evaluation of the trainer, "
        "so eval_interaction_noise is fresh). Step 0 is always probed.",
        None,
    )
    baseline: Any = _help(
        "What a masked word's embedding becomes: 'pad', 'unk', 'mask', 'zero', 'mean', "
        "'learned' (fitted at step 0 to make low-order effects small) or a 1-D tensor.",
        "pad",
    )
    noise_bound: float = _help(
        "Bound lambda on the AND-OR noise q: |q_T| <= lambda * |v(N) - v(empty)|.", 0.02
    )
    salient_rel: float = _help(
        "An interaction is salient when |I(S)| >= salient_rel * max |I| of its probe.", 0.05
    )
    salient_abs: float | None = _help(
        "Optional absolute salience threshold (with salient_rel the larger one wins).", None
    )
    salient_scope: str = _help(
        "'joint': the relative threshold uses the max over AND and OR together; 'type': "
        "each type's own max.",
        "joint",
    )
    match_type: bool = _help(
        "Match interactions across checkpoints by (probe, type, subset) as in DESIGN.md §5; "
        "False matches by (probe, subset) whatever the type (an AND that turns OR is "
        "preserved, not removed and emerged).",
        True,
    )
    reference_model: Any = _help(
        "Optional reference model (object or path) for generalizability gamma; extracted "
        "once at step 0, cached in reference.safetensors, then released.",
        None,
    )
    reference_tokenizer: Any = _help(
        "Tokenizer of the reference model; default: loaded from its path, else the "
        "training tokenizer.",
        None,
    )
    tokenizer: Any = _help("Tokenizer to encode probes; default: trainer.processing_class.", None)
    early_stopping: bool = _help("Stop training when new-interaction noise rises.", True)
    patience: int = _help(
        "Probe points the noise must stay above its minimum (+ min_delta) to stop.", 2
    )
    min_delta: float | None = _help(
        "How far above its minimum the noise must be to count; None: the stopper's "
        "floor_multiple x the noise floor measured at step 0 (NoiseRiseStopper default "
        "0 since session 8, so any rise counts; it was 3x to session 7).",
        None,
    )
    restore_best: bool = _help(
        "Once the rule fires (or at the end of training), load the checkpoint of the "
        "stopper's restore target (saved at probe points; NoiseRiseStopper default: where "
        "the removed share peaked, the most denoised model); no eval set needed. Off with "
        "early_stopping=False or load_best_model_at_end=True.",
        True,
    )
    floor_perturbation: float | None = _help(
        "Relative weight noise for the step-0 floor of the noise signal (one extra step-0 "
        "probe; logged as interactions/noise_floor); None or 0 measures no floor.",
        1e-2,
    )
    floor_draws: int = _help(
        "Perturbation draws pooled (mean) into the step-0 floor; each costs one step-0 "
        "probe. With more than one, their standard deviation is logged as "
        "interactions/noise_floor_sd, so you see how much one draw can be trusted. "
        "3 since session 8: one draw's floor varied up to 3.3x between draws on one "
        "SmolLM2 probe set (docs/results/stop_rule/floor_spread_smollm2.json).",
        3,
    )
    categories: str = _help(
        "'debounced': an interaction changes category only after two consecutive probe "
        "points agree; 'design': DESIGN.md section 5 on the raw salient sets.",
        "debounced",
    )
    noise_signal: str = _help(
        "'pooled': strength share of noise-like emerged interactions pooled over probes; "
        "'design': DESIGN.md section 7 ((1 - rho)-weighted, mean over probes).",
        "pooled",
    )
    stopper: Any = _help(
        "Custom stopping rule with update(step, metrics) -> bool; replaces the default "
        "NoiseRiseStopper(patience, min_delta).",
        None,
    )
    output_subdir: str = _help(
        "Snapshots go to <args.output_dir>/<output_subdir>/.", SNAPSHOT_SUBDIR
    )
    probe_batch_size: int | None = _help(
        "Masked inputs per forward pass; None picks one from free memory.", None
    )
    probe_threads: int | None = _help(
        "Torch CPU threads while probing a model on the CPU (restored afterwards): None "
        "keeps the training's count; an int sets it (more threads help on an idle CPU and "
        "hurt badly on a shared one). Ignored on accelerators.",
        None,
    )
    solver: str = _help(
        "AND-OR solver: 'default' (the exact, certified, canonical LP up to 12 players; "
        "'admm-pdhg' beyond), 'exact', 'admm-pdhg', 'pdhg' or 'reference'.",
        "default",
    )
    solver_options: dict[str, Any] | None = _help(
        "Extra keyword options for the solver (e.g. {'iterations': 500}); see fit_and_or.",
        None,
    )
    seed: int = _help("Seed for sampling probes and players (probing never moves RNGs).", 0)
    log_tables: bool = _help(
        "With W&B active, also log tables of the strongest interactions and order histograms.",
        True,
    )
    top_k: int = _help("Strongest interactions per probe in the W&B table.", 10)
    on_missing_snapshot: str = _help(
        "On resume, when the step-0 or reference snapshot named by the checkpoint is missing "
        "or corrupt: 'error' (stop, naming the file) or 'rebuild' (re-extract it from the "
        "current model, adapters disabled, with a loud warning).",
        "error",
    )
    distributed_probing: str = _help(
        "With many processes: 'auto' (lockstep under FSDP / DeepSpeed ZeRO-3, else local), "
        "'local' (each rank probes its share of masks on its own full copy of the weights) "
        "or 'lockstep' (every rank runs the same forward passes; for sharded weights).",
        "auto",
    )

    def __post_init__(self) -> None:
        self._validate()

    # ------------------------------------------------------------------ validation
    def _validate(self) -> None:
        if not _is_int(self.n_players) or not 1 <= self.n_players <= MAX_PLAYERS:
            raise ValueError(
                f"n_players={self.n_players!r}: use an int between 1 and {MAX_PLAYERS} "
                "(each player doubles the 2**n forward passes per probe; 8-12 is typical)"
            )
        if not _is_int(self.num_probes) or self.num_probes < 1:
            raise ValueError(f"num_probes={self.num_probes!r}: use an int >= 1 (default 8)")
        self._validate_probes()
        self._validate_schedule()
        if not _is_number(self.noise_bound) or not self.noise_bound >= 0:
            raise ValueError(
                f"noise_bound={self.noise_bound!r}: use a number >= 0 (0.02 by default, "
                "0.04 is also common)"
            )
        if not _is_number(self.salient_rel) or not 0 < self.salient_rel <= 1:
            raise ValueError(
                f"salient_rel={self.salient_rel!r}: use a fraction in (0, 1] of the "
                "strongest interaction (default 0.05)"
            )
        if self.salient_abs is not None and (
            not _is_number(self.salient_abs) or not self.salient_abs >= 0
        ):
            raise ValueError(f"salient_abs={self.salient_abs!r}: use None or a number >= 0")
        if not isinstance(self.match_type, bool):
            raise ValueError(f"match_type={self.match_type!r}: use True or False")
        if self.salient_scope not in SCOPES:
            raise ValueError(f"salient_scope={self.salient_scope!r}: use one of {SCOPES}")
        self._validate_baseline()
        if not isinstance(self.early_stopping, bool):
            raise ValueError(f"early_stopping={self.early_stopping!r}: use True or False")
        if not _is_int(self.patience) or self.patience < 1:
            raise ValueError(
                f"patience={self.patience!r}: use an int >= 1 (probe points, not steps)"
            )
        if self.min_delta is not None and (not _is_number(self.min_delta) or self.min_delta < 0):
            raise ValueError(f"min_delta={self.min_delta!r}: use None (auto) or a number >= 0")
        if not isinstance(self.restore_best, bool):
            raise ValueError(f"restore_best={self.restore_best!r}: use True or False")
        fp = self.floor_perturbation
        if fp is not None and (not _is_number(fp) or not 0 <= fp < 1):
            raise ValueError(f"floor_perturbation={fp!r}: use None or a number in [0, 1)")
        if not _is_int(self.floor_draws) or self.floor_draws < 1:
            raise ValueError(f"floor_draws={self.floor_draws!r}: use an int >= 1")
        if self.categories not in ("debounced", "design"):
            raise ValueError(f"categories={self.categories!r}: use 'debounced' or 'design'")
        if self.noise_signal not in ("pooled", "design"):
            raise ValueError(f"noise_signal={self.noise_signal!r}: use 'pooled' or 'design'")
        if self.stopper is not None and not callable(getattr(self.stopper, "update", None)):
            raise ValueError(
                f"stopper={self.stopper!r} has no update(step, metrics) method; pass an object "
                "implementing sft_interaction_callback.tracking.Stopper, or None for the "
                "default NoiseRiseStopper"
            )
        if (
            not isinstance(self.output_subdir, str)
            or not self.output_subdir.strip()
            or os.path.isabs(self.output_subdir)
        ):
            raise ValueError(
                f"output_subdir={self.output_subdir!r}: use a non-empty relative folder name "
                "(it is joined to args.output_dir)"
            )
        if self.probe_threads is not None and (
            not _is_int(self.probe_threads) or self.probe_threads < 1
        ):
            raise ValueError(
                f"probe_threads={self.probe_threads!r}: use an int >= 1 or None (every core)"
            )
        if self.probe_batch_size is not None and (
            not _is_int(self.probe_batch_size) or self.probe_batch_size < 1
        ):
            raise ValueError(
                f"probe_batch_size={self.probe_batch_size!r}: use an int >= 1 or None (auto)"
            )
        if self.solver not in SOLVERS:
            raise ValueError(f"solver={self.solver!r}: use one of {SOLVERS}")
        if self.solver_options is not None and not isinstance(self.solver_options, Mapping):
            raise ValueError(
                f"solver_options={self.solver_options!r}: use None or a dict of keyword options"
            )
        if not _is_int(self.seed):
            raise ValueError(f"seed={self.seed!r}: use an int")
        if not isinstance(self.log_tables, bool):
            raise ValueError(f"log_tables={self.log_tables!r}: use True or False")
        if not _is_int(self.top_k) or self.top_k < 1:
            raise ValueError(f"top_k={self.top_k!r}: use an int >= 1")
        if self.on_missing_snapshot not in MISSING_SNAPSHOT:
            raise ValueError(
                f"on_missing_snapshot={self.on_missing_snapshot!r}: use one of {MISSING_SNAPSHOT}"
            )
        if self.distributed_probing not in DISTRIBUTED:
            raise ValueError(
                f"distributed_probing={self.distributed_probing!r}: use one of {DISTRIBUTED}"
            )
        self._validate_probe_source()
        ref = self.reference_model
        problem = model_path_problem(ref, "reference_model")
        if problem is not None:
            raise ValueError(f"{problem}; or set reference_model=None to run without gamma")
        if ref is not None and not isinstance(ref, (str, os.PathLike)) and not callable(ref):
            raise ValueError(
                f"reference_model={type(ref).__name__}: use a model object, a local path / hub "
                "id string, or None"
            )

    def _validate_probes(self) -> None:
        if self.probes is None:
            return
        from sft_interaction_callback.probing.probes import Probe

        if isinstance(self.probes, (str, bytes, Mapping)) or not hasattr(self.probes, "__iter__"):
            raise ValueError(
                "probes must be a list of Probe objects or mappings {prompt, target, players?}"
                f", got {type(self.probes).__name__}"
            )
        probes = list(self.probes)
        if not probes:
            raise ValueError("probes=[]: give at least one probe, or None to sample them")
        sizes = set()
        for k, p in enumerate(probes):
            if isinstance(p, Probe):
                target, prompt = p.target, p.prompt
            elif isinstance(p, Mapping):
                target, prompt = p.get("target"), p.get("prompt")
            else:
                raise ValueError(
                    f"probes[{k}] is a {type(p).__name__}; use a Probe or a mapping with "
                    "'prompt' and 'target'"
                )
            if not isinstance(prompt, str) or not prompt.strip():
                raise ValueError(f"probes[{k}] has no prompt; give the input text as 'prompt'")
            if not isinstance(target, str) or not target.strip():
                raise ValueError(
                    f"probes[{k}] has no target; give the response the model is trained to "
                    "produce as 'target' (for a classifier: the label name)"
                )
            if isinstance(p, Mapping) and p.get("players"):
                try:
                    p = Probe.from_dict({"id": str(k), **p})
                except (KeyError, TypeError, ValueError) as err:
                    raise ValueError(f"probes[{k}]: {err}") from err
            if isinstance(p, Probe):
                sizes.add(p.n_players)
        if len(sizes) > 1:
            raise ValueError(
                f"probes have different numbers of players {sorted(sizes)}; every probe must "
                "have the same n (interactions are compared subset by subset)"
            )
        self.probes = probes

    def _validate_probe_source(self) -> None:
        if self.probes_from not in PROBE_SOURCES:
            raise ValueError(f"probes_from={self.probes_from!r}: use one of {PROBE_SOURCES}")
        words = self.exclude_words
        if words is not None and (
            isinstance(words, str) or not all(isinstance(w, str) for w in words)
        ):
            raise ValueError(
                f"exclude_words={words!r}: use a list of words, e.g. ['Comment', 'Emotion']"
            )
        if self.template is not None and not isinstance(self.template, str):
            raise ValueError(
                f"template={self.template!r}: use 'auto', None, or the template string"
            )

    def _validate_schedule(self) -> None:
        from sft_interaction_callback.tracking.schedule import ProbeSchedule

        if self.schedule == EVAL_SCHEDULE:
            return
        try:
            ProbeSchedule(self.schedule)
        except ValueError as err:
            raise ValueError(f"schedule={self.schedule!r}: {err}") from None

    def _validate_baseline(self) -> None:
        b = self.baseline
        if isinstance(b, str):
            if b not in BASELINES:
                raise ValueError(f"baseline={b!r}: use one of {list(BASELINES)} or a 1-D tensor")
            return
        import torch

        if not isinstance(b, torch.Tensor) or b.dim() != 1:
            raise ValueError(
                f"baseline={b!r}: use one of {list(BASELINES)} or a 1-D tensor of the model's "
                "hidden size"
            )

    # ------------------------------------------------------------------ helpers
    @classmethod
    def help(cls) -> str:
        """One line per field: name, default and what it does."""
        lines = []
        for f in fields(cls):
            default = f.default if f.default is not MISSING else "(factory)"
            lines.append(f"{f.name} (default {default!r}): {f.metadata.get('help', '')}")
        return "\n".join(lines)

    @classmethod
    def from_kwargs(cls, base: InteractionConfig | None = None, **overrides: Any) -> Any:
        """``base`` with ``overrides`` applied (a new, validated config); unknown keys refused."""
        names = config_field_names()
        unknown = [k for k in overrides if k not in names]
        if unknown:
            hints = []
            for k in unknown:
                close = difflib.get_close_matches(k, names, n=1)
                hints.append(f"{k!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
            raise TypeError(
                f"unknown InteractionConfig field(s) {', '.join(hints)}; see "
                "InteractionConfig.help() for the list"
            )
        if base is None:
            return cls(**overrides)
        values = {f.name: getattr(base, f.name) for f in fields(cls)}
        values.update(overrides)
        return cls(**values)

    def summary(self) -> dict[str, Any]:
        """JSON-able view of the settings (objects shown by type name)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name == "probes":
                v = None if v is None else len(v)
            elif v is not None and not isinstance(v, (str, int, float, bool, list, dict)):
                v = type(v).__name__
            out[f.name] = v
        return out


def config_field_names() -> list[str]:
    return [f.name for f in fields(InteractionConfig)]

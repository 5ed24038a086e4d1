"""What the callback needs around the probing engine: tokenizer, probes, values, interactions.

Kept out of :mod:`sft_interaction_callback.callback` so that the callback stays wiring.
Nothing here touches training state; :mod:`sft_interaction_callback.runtime` guards the
calls that run a model.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from sft_interaction_callback.andor import AndOrInteractions, fit_and_or
from sft_interaction_callback.probing import (
    CausalLMValue,
    Probe,
    SequenceClassifierValue,
    learn_baseline,
    probes_from_dataset,
    select_players,
)

__all__ = [
    "NonFiniteValues",
    "ValueExtractor",
    "find_tokenizer",
    "load_reference",
    "model_kind",
    "prepare_probes",
    "unwrap_for_probing",
]


class NonFiniteValues(ValueError):
    """The model produced NaN or inf values on a probe: the point is skipped."""


def find_tokenizer(config_tokenizer: Any, trainer: Any, processing_class: Any) -> Any:
    """The tokenizer to encode probes with, or a ``ValueError`` that says how to give one."""
    for candidate in (
        config_tokenizer,
        getattr(trainer, "processing_class", None) if trainer is not None else None,
        processing_class,
    ):
        if candidate is None:
            continue
        inner = getattr(candidate, "tokenizer", None)  # a multimodal processor
        if inner is not None and callable(inner):
            return inner
        if callable(candidate):
            return candidate
    raise ValueError(
        "InteractionCallback: no tokenizer reachable. Pass processing_class=tokenizer to the "
        "Trainer / SFTTrainer, or InteractionCallback(tokenizer=tokenizer); probes are "
        "encoded with it (a fast tokenizer, for word offsets)"
    )


def unwrap_for_probing(trainer: Any, model: nn.Module | None) -> nn.Module:
    """The model without DDP / accelerate wrappers (PEFT wrappers are kept)."""
    if trainer is not None:
        held = getattr(trainer, "model", None)
        model = held if held is not None else model
        accelerator = getattr(trainer, "accelerator", None)
        if accelerator is not None and model is not None:
            try:
                model = accelerator.unwrap_model(model)
            except Exception:  # noqa: BLE001 - fall back to the plain attribute walk
                pass
    if model is None:
        raise ValueError("InteractionCallback: the trainer has no model to probe")
    while isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
        model = model.module
    return model


def _core(model: nn.Module) -> nn.Module:
    get_base = getattr(model, "get_base_model", None)
    if hasattr(model, "peft_config") and callable(get_base):
        return get_base()
    return model


def model_kind(model: nn.Module) -> str:
    """``"classifier"`` for a sequence-classification head, else ``"causal"``."""
    core = _core(model)
    name = type(core).__name__
    if name.endswith("ForSequenceClassification"):
        return "classifier"
    if getattr(getattr(model, "active_peft_config", None), "task_type", None) == "SEQ_CLS":
        return "classifier"
    return "causal"


# ---------------------------------------------------------------------- probes
def _from_mapping(p: Mapping[str, Any], k: int, n: int, tokenizer: Any, seed: int) -> Probe:
    pid = str(p.get("id", k))
    if p.get("players"):
        return Probe.from_dict({"id": pid, **p})
    prompt = p["prompt"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        players = select_players(prompt, n, tokenizer=tokenizer, seed=seed + k)
    if not players:
        raise ValueError(f"probes[{k}]: the prompt has no eligible word to use as a player")
    return Probe(prompt, p["target"], players, id=pid)


def prepare_probes(
    probes: Sequence[Any] | None,
    *,
    train_dataset: Any,
    tokenizer: Any,
    n_players: int,
    num_probes: int,
    seed: int,
    kind: str = "causal",
    label_names: Sequence[str] | None = None,
) -> list[Probe]:
    """The run's probes, all with the same number of players, deterministic by ``seed``.

    For a sequence classifier (``kind="classifier"``) rows with ``text`` and a label are
    probed on the raw text (what the classifier sees) with the label name as target;
    ``label_names`` (e.g. from ``config.id2label``) name integer labels.
    """
    if probes is not None:
        out = [
            p if isinstance(p, Probe) else _from_mapping(p, k, n_players, tokenizer, seed)
            for k, p in enumerate(probes)
        ]
        sizes = sorted({p.n_players for p in out})
        if len(sizes) > 1:
            raise ValueError(
                f"probes have different numbers of players {sizes}; give every probe the "
                "same number of players"
            )
        return out
    if train_dataset is None:
        raise ValueError(
            "InteractionCallback: no probes given and the trainer has no train_dataset to "
            "sample them from; pass InteractionCallback(probes=[Probe(...), ...])"
        )
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            extra: dict[str, Any] = {}
            if kind == "classifier":
                extra = {"text_template": "{text}", "target_template": "{label}"}
                if label_names is not None and _class_label_names(train_dataset) is None:
                    extra["label_names"] = list(label_names)
            out = probes_from_dataset(
                train_dataset,
                tokenizer=tokenizer,
                n_players=n_players,
                num_probes=num_probes,
                seed=seed,
                **extra,
            )
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(
            f"InteractionCallback: could not sample probes from trainer.train_dataset ({err}). "
            "Keep the raw text columns (prompt/completion, messages, text/label, ...) in the "
            "data set, or pass InteractionCallback(probes=[...])"
        ) from err
    for w in caught:
        if not issubclass(w.category, DeprecationWarning):
            warnings.warn(str(w.message), w.category, stacklevel=2)
    n = max(p.n_players for p in out)
    kept = [p for p in out if p.n_players == n]
    if len(kept) < len(out):
        warnings.warn(
            f"dropping {len(out) - len(kept)} sampled probe(s) with fewer than {n} players "
            "(all probes must share the same players count); tracking "
            f"{len(kept)} probe(s)",
            stacklevel=2,
        )
    return kept


def _class_label_names(dataset: Any) -> list[str] | None:
    features = getattr(dataset, "features", None) or {}
    for key in ("label", "labels"):
        feat = features.get(key) if hasattr(features, "get") else None
        names = getattr(getattr(feat, "feature", feat), "names", None)
        if names:
            return list(names)
    return None


def label_names_of(model: nn.Module) -> list[str] | None:
    """Label names of a classifier from ``config.id2label``, in id order."""
    id2label = getattr(getattr(_core(model), "config", None), "id2label", None) or {}
    try:
        return [str(id2label[i]) for i in range(len(id2label))] or None
    except KeyError:
        return None


# ---------------------------------------------------------------------- values
class ValueExtractor:
    """Values of every masked input, then AND-OR interactions, for a list of probes.

    The baseline is resolved once (at the first call, i.e. step 0) and the same vector is
    used at every later checkpoint, so the masked inputs are the same across training
    (for ``"learned"`` it is fitted then, on the probes).
    """

    def __init__(
        self,
        tokenizer: Any,
        *,
        kind: str,
        baseline: Any = "pad",
        batch_size: int | None = None,
        noise_bound: float = 0.02,
        solver: str = "default",
        solver_options: Mapping[str, Any] | None = None,
    ) -> None:
        self.tokenizer = tokenizer
        self.kind = kind
        self.baseline_spec = baseline
        self.baseline: torch.Tensor | None = (
            baseline.detach().clone() if isinstance(baseline, torch.Tensor) else None
        )
        self.batch_size = batch_size
        self.noise_bound = noise_bound
        self.solver = solver
        self.solver_options = dict(solver_options or {})

    def _value_fn(self, model: nn.Module, probes: Sequence[Probe]) -> Any:
        cls = SequenceClassifierValue if self.kind == "classifier" else CausalLMValue
        if self.baseline is not None:
            return cls(model, self.tokenizer, baseline=self.baseline, batch_size=self.batch_size)
        spec = "pad" if self.baseline_spec == "learned" else self.baseline_spec
        if spec == "pad" and getattr(self.tokenizer, "pad_token_id", None) is None:
            spec = "unk" if getattr(self.tokenizer, "unk_token_id", None) is not None else "zero"
            warnings.warn(
                f"the tokenizer has no pad token; using the {spec!r} baseline", stacklevel=3
            )
        fn = cls(model, self.tokenizer, baseline=spec, batch_size=self.batch_size)
        if self.baseline_spec == "learned":
            with torch.enable_grad():
                learned = learn_baseline(fn, self.tokenizer, list(probes), init=spec)
            fn = cls(model, self.tokenizer, baseline=learned, batch_size=self.batch_size)
        self.baseline = fn.baseline.detach().clone()
        return fn

    def values(self, model: nn.Module, probes: Sequence[Probe]) -> torch.Tensor:
        """``v [num_probes, 2**n]`` (float32, on the model's device)."""
        fn = self._value_fn(model, probes)
        v = torch.stack([fn(p).float() for p in probes])
        if not bool(torch.isfinite(v).all()):
            bad = [p.id for p, row in zip(probes, v, strict=True) if not torch.isfinite(row).all()]
            raise NonFiniteValues(f"non-finite values (NaN/inf) for probe(s) {bad}")
        return v

    def interactions(self, v: torch.Tensor) -> AndOrInteractions:
        out = fit_and_or(v, noise_bound=self.noise_bound, solver=self.solver, **self.solver_options)
        finite = all(
            bool(torch.isfinite(t).all()) for t in (out.i_and, out.i_or)
        ) and math.isfinite(float(out.i_and.abs().sum()))
        if not finite:
            raise NonFiniteValues("the AND-OR fit produced non-finite interactions")
        return out.to("cpu")


def load_reference(spec: Any, kind: str, device: torch.device) -> tuple[nn.Module, bool]:
    """``(model, owned)``: the reference model on ``device``; ``owned`` if loaded here."""
    if isinstance(spec, nn.Module):
        return spec, False
    if isinstance(spec, (str, os.PathLike)):
        from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

        cls = AutoModelForSequenceClassification if kind == "classifier" else AutoModelForCausalLM
        model = cls.from_pretrained(str(spec))
        return model.to(device).eval(), True
    raise ValueError(f"reference_model must be a model or a path, got {type(spec).__name__}")


def load_reference_tokenizer(spec: Any, given: Any, fallback: Any) -> Any:
    if given is not None:
        return given
    if isinstance(spec, (str, os.PathLike)):
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(str(spec))
    return fallback


def model_device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")  # pragma: no cover - a model without parameters

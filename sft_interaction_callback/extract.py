"""What the probing engine is given: the tokenizer, the probes, the model and its kind.

Everything here is read from the trainer and the config once, at ``on_train_begin``;
nothing runs a model (that is :mod:`sft_interaction_callback.engine`).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

from torch import nn

from sft_interaction_callback.probing import Probe, probes_from_dataset, select_players
from sft_interaction_callback.probing._model import unwrap_model

__all__ = [
    "find_tokenizer",
    "label_names_of",
    "model_kind",
    "prepare_probes",
    "unwrap_for_probing",
]


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
    """The model without DDP / accelerate wrappers.

    PEFT wrappers are kept (unlike :func:`~sft_interaction_callback.probing._model.unwrap_model`):
    the step-0 probe disables the adapters through them.
    """
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
    """The model under its DDP / compile / PEFT wrappers, as the value engine sees it."""
    try:
        return unwrap_model(model)
    except NotImplementedError:  # prompt-learning adapters: refused when probed, not here
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

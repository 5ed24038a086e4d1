"""What the probing engine is given: the tokenizer, the probes, the model and its kind.

Everything here is read from the trainer and the config once, at ``on_train_begin``;
nothing runs a model (that is :mod:`sft_interaction_callback.engine.extractor`).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

from torch import nn

from sft_interaction_callback.probing import Probe, probes_from_dataset, select_players
from sft_interaction_callback.probing._model import unwrap_model
from sft_interaction_callback.probing.datasets import FORMATS, row_format
from sft_interaction_callback.probing.players import normalised_words, template_literal_words

__all__ = [
    "check_probe_source",
    "check_trainer",
    "eval_schedule",
    "find_tokenizer",
    "label_names_of",
    "model_kind",
    "prepare_probes",
    "probe_rows",
    "probe_source",
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
def _from_mapping(
    p: Mapping[str, Any], k: int, n: int, tokenizer: Any, seed: int, exclude: frozenset[str]
) -> Probe:
    pid = str(p.get("id", k))
    if p.get("players"):
        return Probe.from_dict({"id": pid, **p})
    prompt = p["prompt"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        players = select_players(prompt, n, tokenizer=tokenizer, seed=seed + k, exclude=exclude)
    if not players:
        raise ValueError(
            f"probes[{k}] (id {pid!r}): the prompt has no eligible word to use as a player "
            "(stop words, template words and placeholders are skipped); give players= spans"
        )
    return Probe(prompt, p["target"], players, id=pid)


def _warn_small_probes(out: Sequence[Probe], n_players: int) -> None:
    """One warning naming the given probes that have fewer players than ``n_players``."""
    small = [(k, p) for k, p in enumerate(out) if p.n_players < n_players]
    if not small:
        return
    names = ", ".join(f"probes[{k}] (id {p.id!r}): {p.n_players}" for k, p in small[:5])
    n = min(p.n_players for p in out)
    warnings.warn(
        f"{len(small)} probe(s) have fewer than n_players={n_players} players ({names}); "
        f"they are probed with that many players (2**n masks each). Give longer prompts, "
        f"explicit players=[...], or set n_players={n}",
        stacklevel=3,
    )


def template_exclusions(exclude_words: Any, template: Any) -> frozenset[str]:
    """The words a config says are template text (``exclude_words`` and ``template``'s)."""
    out = set(normalised_words(exclude_words))
    if isinstance(template, str) and template != "auto":
        out |= template_literal_words(template)
    return frozenset(out)


def probe_rows(trainer: Any, probes_from: str = "train") -> Any:
    """The data set probes are sampled from: the trainer's ``train_dataset`` or its
    ``eval_dataset`` (the first one of a dict of eval sets), or None."""
    if probes_from == "eval":
        data = getattr(trainer, "eval_dataset", None)
        if isinstance(data, Mapping):
            data = next(iter(data.values()), None)
        return data
    return getattr(trainer, "train_dataset", None)


def _first_row(data: Any) -> Mapping[str, Any] | None:
    try:
        row = data[0] if hasattr(data, "__getitem__") and hasattr(data, "__len__") else None
        if row is None:
            row = next(iter(data), None)
    except (IndexError, KeyError, StopIteration, TypeError):
        return None
    return row if isinstance(row, Mapping) else None


def check_probe_source(cfg: Any, trainer: Any) -> None:
    """Refuse, before training starts, a data set the callback cannot sample probes from.

    Runs when the callback is attached (``InteractionCallback(trainer=...)``, ``attach``
    or ``Trainer(callbacks=[...])``): a ``ValueError`` names the columns seen and the fix.
    Nothing is checked when explicit ``probes`` are given.
    """
    if cfg.probes is not None:
        return
    which = getattr(cfg, "probes_from", "train")
    data = probe_rows(trainer, which)
    attr = f"trainer.{which}_dataset"
    if data is None:
        other = "eval" if which == "train" else "train"
        raise ValueError(
            f"InteractionCallback: probes_from={which!r} but {attr} is None; pass that data "
            f"set to the trainer, set probes_from={other!r}, or pass probes=[...]"
        )
    row = _first_row(data)
    if row is None:
        raise ValueError(
            f"InteractionCallback: {attr} is empty or its rows are not mappings; pass "
            "probes=[...] explicitly"
        )
    try:
        fmt = row_format(row, _text_field(trainer))
    except ValueError:
        raise ValueError(
            f"InteractionCallback cannot sample probes from {attr}: its columns are "
            f"{sorted(row)}; it reads {FORMATS}. Fix: keep (or rename to) one of these "
            "columns, or pass InteractionCallback(probes=[...])"
        ) from None
    if fmt in ("messages", "prompt_completion") and _needs_chat_template(row):
        tokenizer = getattr(trainer, "processing_class", None)
        tokenizer = getattr(tokenizer, "tokenizer", tokenizer)
        if tokenizer is not None and not getattr(tokenizer, "chat_template", None):
            raise ValueError(
                f"InteractionCallback: {attr} is conversational (columns {sorted(row)}) but "
                "the tokenizer has no chat_template to render it; set "
                "tokenizer.chat_template, or pass probes=[...]"
            )


def check_trainer(cfg: Any, trainer: Any) -> None:
    """Everything the callback can check when it is attached, before training (and W&B)
    starts: the probe data set (:func:`check_probe_source`) and ``schedule="eval"``."""
    check_probe_source(cfg, trainer)
    if cfg.schedule == "eval":
        strategy = str(getattr(getattr(trainer, "args", None), "eval_strategy", "no"))
        if strategy.lower().endswith("no"):
            raise ValueError(
                'InteractionCallback: schedule="eval" probes at every evaluation, but the '
                'trainer never evaluates (eval_strategy="no"); set eval_strategy="steps" '
                "with eval_steps (and an eval_dataset), or choose another schedule"
            )


def eval_schedule(args: Any, state: Any) -> list[int]:
    """The optimizer steps at which the trainer evaluates (``schedule="eval"``).

    ``eval_strategy="steps"``: every ``eval_steps`` (a fraction of ``max_steps`` when
    below 1); ``"epoch"``: the end of every epoch (``max_steps / num_train_epochs``
    steps each). Step 0 is added by the schedule.
    """
    max_steps = int(getattr(state, "max_steps", 0) or getattr(args, "max_steps", 0) or 0)
    strategy = str(getattr(args, "eval_strategy", "no")).lower()
    if strategy.endswith("epoch"):
        epochs = max(1, math.ceil(float(getattr(state, "num_train_epochs", 0) or 1)))
        every = max(1, math.ceil(max_steps / epochs))
    else:
        every_raw = getattr(state, "eval_steps", None) or getattr(args, "eval_steps", None)
        every_raw = every_raw or getattr(args, "logging_steps", 1) or 1
        every = math.ceil(max_steps * every_raw) if every_raw < 1 else int(every_raw)
        every = max(1, every)
    return list(range(every, max_steps + 1, every))


def probe_source(cfg: Any, trainer: Any, args: Any, state: Any) -> dict[str, Any]:
    """The keyword arguments of ``start_run`` that come from the trainer: the rows to
    sample probes from (``probes_from``), their text column, and the resolved schedule."""
    which = getattr(cfg, "probes_from", "train")
    schedule = eval_schedule(args, state) if cfg.schedule == "eval" else cfg.schedule
    return {
        "train_dataset": probe_rows(trainer, which),
        "text_field": _text_field(trainer),
        "source": f"trainer.{which}_dataset",
        "schedule": schedule,
    }


def _needs_chat_template(row: Mapping[str, Any]) -> bool:
    return "messages" in row or "conversations" in row or not isinstance(row.get("prompt"), str)


def _text_field(trainer: Any) -> str:
    """TRL's ``dataset_text_field`` (the language-modelling column), ``"text"`` by default."""
    field = getattr(getattr(trainer, "args", None), "dataset_text_field", None)
    return field if isinstance(field, str) and field else "text"


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
    exclude_words: Sequence[str] | None = None,
    template: str | None = "auto",
    text_field: str = "text",
    source: str = "trainer.train_dataset",
) -> list[Probe]:
    """The run's probes, all with the same number of players, deterministic by ``seed``.

    Given probes with fewer players than ``n_players`` are kept, with one warning naming
    them; sampled probes follow :func:`probes_from_dataset` (template words excluded, one
    common players count, one warning when anything was reduced).

    For a sequence classifier (``kind="classifier"``) rows with ``text`` and a label are
    probed on the raw text (what the classifier sees) with the label name as target;
    ``label_names`` (e.g. from ``config.id2label``) name integer labels.
    """
    exclude = template_exclusions(exclude_words, template)
    if probes is not None:
        out = [
            p if isinstance(p, Probe) else _from_mapping(p, k, n_players, tokenizer, seed, exclude)
            for k, p in enumerate(probes)
        ]
        sizes = sorted({p.n_players for p in out})
        if len(sizes) > 1:
            raise ValueError(
                f"probes have different numbers of players {sizes} ("
                + ", ".join(f"{p.id!r}: {p.n_players}" for p in out[:8])
                + "); give every probe the same number of players, e.g. set n_players="
                f"{sizes[0]} or longer prompts"
            )
        _warn_small_probes(out, n_players)
        return out
    if train_dataset is None:
        raise ValueError(
            f"InteractionCallback: no probes given and {source} is None, nothing to sample "
            "them from; pass InteractionCallback(probes=[Probe(...), ...])"
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
                exclude_words=exclude,
                template=None if template is None else "auto",
                text_field=text_field,
                **extra,
            )
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(
            f"InteractionCallback: could not sample probes from {source} ({err}). Keep the "
            "raw text columns (prompt/completion, messages, text, text/label, ...) in the "
            "data set, or pass InteractionCallback(probes=[...])"
        ) from err
    for w in caught:
        if not issubclass(w.category, DeprecationWarning):
            warnings.warn(str(w.message), w.category, stacklevel=2)
    return out


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

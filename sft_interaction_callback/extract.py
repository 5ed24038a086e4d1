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
from sft_interaction_callback.distributed import (
    Collective,
    LockstepRunner,
    PeerFailure,
    gather_rows,
    shard_plan,
)
from sft_interaction_callback.probing import (
    CausalLMValue,
    Probe,
    SequenceClassifierValue,
    learn_baseline,
    probes_from_dataset,
    select_players,
)
from sft_interaction_callback.probing.values import CPU_BATCH_SIZE
from sft_interaction_callback.runtime import free_memory, is_out_of_memory

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

    Out of memory: the value engine halves its batch on ``torch.OutOfMemoryError``; an
    OOM it does not handle (the ``RuntimeError`` wording of some backends) is retried
    here with half the batch, down to 1, and then raised (the callback skips the point).
    A reduced batch size is kept for later probe points.

    Many processes (``comm`` active, see :mod:`sft_interaction_callback.distributed`): the
    masks are sharded over the ranks, failures are agreed on (every rank raises
    :class:`~sft_interaction_callback.distributed.PeerFailure` together), the values are
    gathered so that every rank holds the same ``v``, and the AND-OR fit runs on rank 0
    and is broadcast, so every rank holds the same interactions. With ``lockstep`` (FSDP,
    ZeRO-3) every rank runs the same forward passes in chunks of one agreed batch size.
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
        comm: Collective | None = None,
        lockstep: bool = False,
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
        self.comm = comm
        self.lockstep = lockstep
        #: value-function calls of the last :meth:`values` on this rank, and their masks
        self.last_calls = 0
        self.last_masks = 0
        self._oom = False

    def _comm(self) -> Collective:
        return self.comm if self.comm is not None else Collective()

    def _make_fn(self, model: nn.Module, baseline: Any) -> Any:
        cls = SequenceClassifierValue if self.kind == "classifier" else CausalLMValue
        kw: dict[str, Any] = {}
        if self.lockstep and cls is CausalLMValue:
            kw["prefix_sharing"] = False  # the same forward calls on every rank
        return cls(model, self.tokenizer, baseline=baseline, batch_size=self.batch_size, **kw)

    def _value_fn(self, model: nn.Module, probes: Sequence[Probe]) -> Any:
        if self.baseline is not None:
            return self._make_fn(model, self.baseline)
        spec = "pad" if self.baseline_spec == "learned" else self.baseline_spec
        if spec == "pad" and getattr(self.tokenizer, "pad_token_id", None) is None:
            spec = "unk" if getattr(self.tokenizer, "unk_token_id", None) is not None else "zero"
            warnings.warn(
                f"the tokenizer has no pad token; using the {spec!r} baseline", stacklevel=3
            )
        fn = self._make_fn(model, spec)
        if self.baseline_spec == "learned":
            with torch.enable_grad():
                learned = learn_baseline(fn, self.tokenizer, list(probes), init=spec)
            fn = self._make_fn(model, learned)
        self.baseline = fn.baseline.detach().clone()
        return fn

    def _call(self, fn: Any, probe: Probe, masks: torch.Tensor | None) -> torch.Tensor:
        """``fn(probe[, masks])`` with the OOM back-off the engine does not do itself."""
        self.last_calls += 1
        self.last_masks += (1 << probe.n_players) if masks is None else int(masks.numel())
        while True:
            try:
                return fn(probe) if masks is None else fn(probe, masks)
            except Exception as err:
                if not is_out_of_memory(err):
                    raise
                self._oom = True
                free_memory()
                current = fn.batch_size or self.batch_size or CPU_BATCH_SIZE
                if isinstance(err, _ENGINE_OOM) or current <= 1:
                    raise  # the engine has already halved down to 1 (or nothing is left)
                fn.batch_size = self.batch_size = max(1, current // 2)
                warnings.warn(
                    f"out of memory while probing; retrying with batch_size={fn.batch_size}",
                    stacklevel=3,
                )

    def values(self, model: nn.Module, probes: Sequence[Probe]) -> torch.Tensor:
        """``v [num_probes, 2**n]`` (float32, on the model's device)."""
        self.last_calls = self.last_masks = 0
        self._oom = False
        start_batch = self.batch_size
        comm = self._comm()
        fresh = self.baseline is None
        error: BaseException | None = None
        fn = None
        try:
            fn = self._value_fn(model, probes)
        except Exception as err:  # noqa: BLE001 - agreed on by every rank just below
            error = err
        try:
            comm.agree(error, "preparing the value function")
        except BaseException:
            if fresh:
                self.baseline = None  # every rank resolves it again next time
            raise
        if fresh and comm.active:  # rank 0's baseline everywhere (a learned one may differ)
            self.baseline = comm.broadcast_tensor(self.baseline)
            fn = self._make_fn(model, self.baseline)
        if not comm.active:
            v = torch.stack([self._call(fn, p, None).float() for p in probes])
        else:
            v = self._sharded_values(fn, probes, comm).to(fn.device)
        if fn.batch_size is not None and (
            self.batch_size is None or fn.batch_size < self.batch_size
        ):
            self.batch_size = fn.batch_size  # keep what the engine learned about memory
        shrunk = None not in (start_batch, self.batch_size) and self.batch_size < start_batch
        if self._oom or shrunk:
            free_memory()  # an OOM was survived: hand the cached blocks back
        if not bool(torch.isfinite(v).all()):
            bad = [p.id for p, row in zip(probes, v, strict=True) if not torch.isfinite(row).all()]
            raise NonFiniteValues(f"non-finite values (NaN/inf) for probe(s) {bad}")
        return v

    def _sharded_values(self, fn: Any, probes: Sequence[Probe], comm: Collective) -> torch.Tensor:
        n = probes[0].n_players
        plan = shard_plan(len(probes), n, comm.world_size, comm.rank, lockstep=self.lockstep)
        local: list[torch.Tensor] = []
        if self.lockstep:
            batch = comm.min_int(self.batch_size or LOCKSTEP_BATCH)
            runner = LockstepRunner(comm, batch, on_oom=self._on_lockstep_oom)

            def one(probe: Probe, chunk: torch.Tensor) -> torch.Tensor:
                fn.batch_size = runner.batch
                self.last_calls += 1
                self.last_masks += int(chunk.numel())
                return fn(probe, chunk)

            for p, masks in plan.calls:
                local.append(runner.run(one, probes[p], masks))
            if runner.batch < batch:
                self.batch_size = runner.batch
        else:
            error: BaseException | None = None
            try:
                for p, masks in plan.calls:
                    local.append(self._call(fn, probes[p], masks))
            except Exception as err:  # noqa: BLE001 - every rank learns about it below
                error = err
            comm.agree(error, "probing")
        return gather_rows(comm, plan, local)

    def _on_lockstep_oom(self) -> None:
        self._oom = True
        free_memory()

    def interactions(self, v: torch.Tensor) -> AndOrInteractions:
        comm = self._comm()
        if not comm.active:
            return self._fit(v)
        payload: tuple[Any, ...] = ("skip",)
        if comm.is_main:
            try:
                payload = ("ok", self._fit(v))
            except Exception as err:  # noqa: BLE001 - sent to every rank, raised there
                payload = ("error", type(err).__name__, str(err))
        payload = comm.broadcast_object(payload)
        if payload[0] == "ok":
            return payload[1]
        if payload[1] == NonFiniteValues.__name__:
            raise NonFiniteValues(payload[2])
        raise PeerFailure(f"the AND-OR fit failed on rank 0: {payload[1]}: {payload[2]}")

    def _fit(self, v: torch.Tensor) -> AndOrInteractions:
        out = fit_and_or(v, noise_bound=self.noise_bound, solver=self.solver, **self.solver_options)
        finite = all(
            bool(torch.isfinite(t).all()) for t in (out.i_and, out.i_or)
        ) and math.isfinite(float(out.i_and.abs().sum()))
        if not finite:
            raise NonFiniteValues("the AND-OR fit produced non-finite interactions")
        return out.to("cpu")


#: The OOM errors the value engine already answers by halving its batch (down to 1).
_ENGINE_OOM: tuple[type[BaseException], ...] = tuple(
    {getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError), torch.cuda.OutOfMemoryError}
)
#: Masks per forward pass in lockstep mode when ``probe_batch_size`` is not set.
LOCKSTEP_BATCH = 32


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

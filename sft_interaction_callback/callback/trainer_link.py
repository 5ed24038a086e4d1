"""How the callback reaches its ``Trainer`` without reading the call stack.

The Trainer hands its callbacks neither itself nor its ``callback_handler``, yet the
callback needs it (``trainer.log`` reaches every ``report_to`` sink, ``train_dataset``
holds the probes' rows). Two explicit routes exist: ``InteractionCallback(trainer=...)``
/ ``attach(trainer)``, and, for ``Trainer(callbacks=[cb])``, ``on_init_end``, which runs
inside ``Trainer.__init__`` right after the handler holding ``cb`` was stored on the
trainer: :func:`find_trainer_of` follows that reference chain backwards (callback -> the
handler's list -> handler -> trainer) with :func:`gc.get_referrers`, once.

``Trainer.train(resume_from_checkpoint=...)`` is not handed to callbacks either;
:func:`record_resume_argument` wraps the attached trainer's ``train`` so that the
argument is remembered (:func:`requested_checkpoint`) for a resume from a folder outside
``output_dir``.
"""

from __future__ import annotations

import functools
import gc
import os
from collections.abc import Callable, Iterator
from typing import Any

__all__ = ["find_trainer_of", "put_first", "record_resume_argument", "requested_checkpoint"]

_RECORDED = "_interaction_callback_resume_from_checkpoint"


def _holders(obj: Any, accept: Callable[[Any], bool]) -> Iterator[Any]:
    """Objects that hold ``obj`` as an attribute (directly or through their ``__dict__``)."""
    for ref in gc.get_referrers(obj):
        if isinstance(ref, dict):
            yield from (o for o in gc.get_referrers(ref) if accept(o))
        elif accept(ref):
            yield ref


def find_trainer_of(callback: Any) -> Any | None:
    """The ``transformers.Trainer`` whose callback handler lists ``callback``, or None."""
    try:
        from transformers import Trainer
        from transformers.trainer_callback import CallbackHandler
    except ImportError:  # pragma: no cover
        return None
    for callbacks in gc.get_referrers(callback):
        if not isinstance(callbacks, list) or not any(c is callback for c in callbacks):
            continue
        for handler in _holders(
            callbacks,
            lambda o, lst=callbacks: isinstance(o, CallbackHandler) and o.callbacks is lst,
        ):
            for trainer in _holders(
                handler,
                lambda o, h=handler: (
                    isinstance(o, Trainer) and getattr(o, "callback_handler", None) is h
                ),
            ):
                return trainer
    return None


def put_first(callbacks: list, cb: Any) -> None:
    """Make ``cb`` the first entry of ``callbacks`` exactly once (safe mid-iteration)."""
    positions = [i for i, c in enumerate(callbacks) if c is cb]
    for i in reversed(positions[1:]):
        del callbacks[i]
    if not positions:
        callbacks.insert(0, cb)
    elif positions[0] != 0:
        del callbacks[positions[0]]
        callbacks.insert(0, cb)


def record_resume_argument(trainer: Any) -> None:
    """Wrap ``trainer.train`` (once) to remember its ``resume_from_checkpoint`` path."""
    train = getattr(trainer, "train", None)
    if not callable(train) or getattr(train, "_records_resume", False):
        return

    @functools.wraps(train)
    def train_recording_resume(*args: Any, **kwargs: Any) -> Any:
        value = kwargs.get("resume_from_checkpoint", args[0] if args else None)
        path = str(value) if isinstance(value, (str, os.PathLike)) else None
        vars(trainer)[_RECORDED] = path
        return train(*args, **kwargs)

    train_recording_resume._records_resume = True  # type: ignore[attr-defined]
    try:
        trainer.train = train_recording_resume
    except AttributeError:  # pragma: no cover - a trainer that refuses new attributes
        pass


def requested_checkpoint(trainer: Any) -> str | None:
    """The path given to the running ``trainer.train(resume_from_checkpoint=...)``, if any."""
    return getattr(trainer, "__dict__", {}).get(_RECORDED)

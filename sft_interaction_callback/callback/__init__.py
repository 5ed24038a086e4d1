"""The Trainer adapter: ``InteractionCallback`` and what it keeps between Trainer events.

:mod:`.events` (the callback) is a thin layer over typed state (:mod:`.state`); a probe
point is recorded by :mod:`.recording`, logged by :mod:`.metric_log` and shown by
:mod:`.progress`; :mod:`.resume` and :mod:`.resume_run` carry the state through
checkpoints; :mod:`.restore_best` goes back to the best checkpoint; :mod:`.reference`,
:mod:`.noise_floor` and :mod:`.trainer_inputs` measure the reference model, the step-0
floor and read what the Trainer holds (data, tokenizer, model). This is the only layer
that knows the Trainer; nothing below it imports it.

``InteractionCallback`` is loaded on first use, so that importing a module of this
package (``resume``, ``noise_floor``) does not import the Trainer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["InteractionCallback"]

if TYPE_CHECKING:  # pragma: no cover
    from .events import InteractionCallback


def __getattr__(name: str) -> Any:
    if name == "InteractionCallback":
        from .events import InteractionCallback

        return InteractionCallback
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

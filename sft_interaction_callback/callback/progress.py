"""What the console shows while the callback works: a bar per probe point, one line after.

A probe point runs ``num_probes * 2**n`` forward passes and an AND-OR fit, tens of
seconds during which the Trainer's own bar stands still. :func:`probe_progress` shows a
``tqdm`` bar under the Trainer's (main process only, removed when the point is done;
off with ``disable_tqdm``) that counts masked inputs and says what the point costs.

The metrics of a point go through ``Trainer.log`` to every ``report_to`` sink and
``state.log_history``; the Trainer's console printers (``ProgressCallback`` /
``PrinterCallback``) would print them as a raw dict of ~20 keys. :func:`console_hidden`
keeps them off the console for that call, and :func:`summary_line` is the one line
printed instead.
"""

from __future__ import annotations

import contextlib
import math
import sys
from collections.abc import Iterator, Mapping
from typing import Any

from sft_interaction_callback.keys import (
    EMERGED,
    NOISE_KEY,
    PRESERVED,
    REMOVED,
    SECONDS_KEY,
    SKIPPED_KEY,
    category_key,
)

__all__ = ["console_hidden", "print_summary", "probe_progress", "summary_line"]


def _bar_enabled(trainer: Any, state: Any) -> bool:
    if not getattr(state, "is_world_process_zero", True):
        return False
    args = getattr(trainer, "args", None)
    return not bool(getattr(args, "disable_tqdm", False))


@contextlib.contextmanager
def probe_progress(callback: Any, step: int, state: Any) -> Iterator[Any]:
    """A bar over the masked inputs of one probe point (main process), nested under the
    Trainer's and closed when the point ends, whether it succeeded or not.

    The bar counts this process's share of the ``num_probes * 2**n`` masks and shows
    masks/s and the time left; once the values are in it says that the AND-OR fit runs.
    Yields the bar (``None`` when disabled).
    """
    extractor, probes = callback.extractor, callback.probes
    if extractor is None or not probes or not _bar_enabled(callback.trainer, state):
        yield None
        return
    from tqdm.auto import tqdm

    n = probes[0].n_players
    world = getattr(callback.comm, "world_size", 1) if getattr(callback.comm, "active", 0) else 1
    total = math.ceil(len(probes) * (1 << n) / max(1, world))
    bar = tqdm(
        total=total,
        desc=f"interactions @ step {step}",
        unit="mask",
        leave=False,
        dynamic_ncols=True,
        file=sys.stderr,
    )
    bar.set_postfix_str(f"{len(probes)} probes x 2^{n} masks", refresh=False)

    def advance(masks: int) -> None:
        bar.update(masks)
        if bar.n >= total:
            bar.set_postfix_str("fitting AND-OR", refresh=True)

    extractor.on_masks = advance
    try:
        yield bar
    finally:
        extractor.on_masks = None
        bar.close()


_PRINTERS = ("ProgressCallback", "PrinterCallback")


@contextlib.contextmanager
def console_hidden(trainer: Any) -> Iterator[bool]:
    """Take the Trainer's console printers out of its callback list for one ``log`` call.

    Yields whether one was there (then the caller prints :func:`summary_line`). Every
    other callback (W&B, TensorBoard, ...) and ``state.log_history`` still get the logs.
    """
    handler = getattr(trainer, "callback_handler", None)
    callbacks = getattr(handler, "callbacks", None)
    if not isinstance(callbacks, list):
        yield False
        return
    hidden = [(i, c) for i, c in enumerate(callbacks) if type(c).__name__ in _PRINTERS]
    for i, _ in reversed(hidden):
        del callbacks[i]
    try:
        yield bool(hidden)
    finally:
        for i, c in hidden:
            callbacks.insert(i, c)


def _fmt(x: Any) -> str:
    if not isinstance(x, (int, float)) or isinstance(x, bool):
        return str(x)
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e9 else f"{x:.4g}"


def summary_line(step: int | None, logs: Mapping[str, Any]) -> str | None:
    """``interactions @ step 40: noise 0.0123 | removed 12, preserved 3, emerged 5 | 21.3 s``
    for a probe point's logs; None for logs that are not a probe point."""
    if NOISE_KEY not in logs and SKIPPED_KEY not in logs and SECONDS_KEY not in logs:
        return None
    parts = []
    if NOISE_KEY in logs:
        parts.append(f"noise {_fmt(logs[NOISE_KEY])}")
    counts = [
        f"{c} {_fmt(logs[category_key(c, 'count')])}"
        for c in (REMOVED, PRESERVED, EMERGED)
        if category_key(c, "count") in logs
    ]
    if counts:
        parts.append(", ".join(counts))
    if SECONDS_KEY in logs:
        parts.append(f"{float(logs[SECONDS_KEY]):.1f} s")
    if SKIPPED_KEY in logs and logs[SKIPPED_KEY]:
        parts.append(f"skipped so far {_fmt(logs[SKIPPED_KEY])}")
    where = f" @ step {step}" if step is not None else ""
    return f"interactions{where}: " + " | ".join(parts)


def print_summary(trainer: Any, logs: Mapping[str, Any]) -> None:
    """Print :func:`summary_line` on the main process (to stderr, above any bar)."""
    state = getattr(trainer, "state", None)
    if not getattr(state, "is_world_process_zero", True):
        return
    line = summary_line(getattr(state, "global_step", None), logs)
    if line is None:
        return
    try:
        from tqdm.auto import tqdm

        tqdm.write(line, file=sys.stderr)
    except ImportError:  # pragma: no cover
        print(line, file=sys.stderr)

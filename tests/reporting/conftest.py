"""Synthetic run folders with the callback's layout, written with the snapshot helpers.

The interactions are random but shaped like a real run: a base table at step 0, then
tables that drift away from it (some base interactions fade, new ones appear); the real
:class:`InteractionTracker` classifies them, so the masks and metrics on disk are exactly
what the callback would write for these tables.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from sft_interaction_callback.andor import AndOrInteractions
from sft_interaction_callback.probing.probes import Probe
from sft_interaction_callback.snapshots import SnapshotDir, atomic_write_json
from sft_interaction_callback.tracking.tracker import InteractionTracker

N_PLAYERS = 4
PROMPTS = [
    (
        "sales",
        "Please summarise the quarterly sales report for the board",
        "A summary.",
        ["summarise", "quarterly", "sales", "report"],
    ),
    (
        "xss",
        'Translate <script>alert("owned")</script> & keep the cat quiet',
        "Done.",
        ["Translate", "keep", "cat", "quiet"],
    ),
    (
        "cafe",
        "Is the café open on Sunday morning?",
        "Yes, from nine.",
        ["café", "open", "Sunday", "morning"],
    ),
]
STEPS = [0, 2, 5, 10, 15, 20]
SKIPPED_STEP = 12
STOP_STEP = 20
STAGE_END = 10
STOP_REASON = "noise rose for 2 probe points <after> stage 1"


def make_probes() -> list[Probe]:
    probes = []
    for pid, prompt, target, words in PROMPTS:
        spans = [(prompt.index(w), prompt.index(w) + len(w)) for w in words]
        probes.append(Probe(prompt, target, spans, id=pid))
    return probes


def _tables(num_probes: int, steps: list[int], seed: int) -> dict[int, tuple]:
    """``{step: (i_and, i_or)}``: a sparse base that fades, new interactions that grow."""
    g = torch.Generator().manual_seed(seed)
    size = 1 << N_PLAYERS

    def sparse():
        t = torch.randn(num_probes, size, generator=g)
        keep = torch.rand(num_probes, size, generator=g) < 0.45
        return t * keep

    base_and, base_or = sparse(), sparse()
    new_and, new_or = sparse(), sparse()
    out = {}
    for step in steps:
        a = min(step / max(steps), 1.0)
        fade = torch.where(torch.rand(num_probes, size, generator=g) < 0.5 * a, 0.0, 1.0)
        scale = 1.0 + 3.0 * a  # the output scale grows during training
        i_and = scale * (base_and * fade + a * new_and)
        i_or = scale * (base_or * fade + a * new_or)
        i_and[:, 0] = -5.0 * scale  # I_and({}) = v({}): large, never salient
        i_or[:, 0] = 0.0
        i_or[:, [1 << k for k in range(N_PLAYERS)]] = 0.0  # folded into AND
        out[step] = (i_and, i_or)
    return out


def _interactions(v, i_and, i_or) -> AndOrInteractions:
    p, q = torch.zeros_like(i_and), torch.zeros_like(i_and)  # safetensors refuses shared ones
    return AndOrInteractions(v=v, i_and=i_and, i_or=i_or, p=p, q=q, n_players=N_PLAYERS)


def log_history(last_step: int) -> list[dict]:
    history = [
        {"step": s, "epoch": s / 10, "loss": 3.0 - 0.05 * s + 0.1 * (s % 3), "learning_rate": 1e-3}
        for s in range(1, last_step + 1)
    ]
    for s in range(5, last_step + 1, 5):
        history.append({"step": s, "epoch": s / 10, "eval_loss": 3.1 - 0.03 * s})
    return history


def write_run(
    root: Path,
    *,
    logs: str | None = "trainer_state",
    reference: bool = True,
    stop: bool = True,
    subdir: str = "interactions",
    seed: int = 0,
) -> SimpleNamespace:
    """A run folder under ``root``; ``logs`` is where the loss history goes:
    ``"trainer_state"``, ``"checkpoint"``, ``"log_history.json"`` or None."""
    probes = make_probes()
    snap = SnapshotDir(root / subdir)
    snap.write_probes(probes, {"n_players": N_PLAYERS, "model_kind": "causal_lm"})
    tables = _tables(len(probes), STEPS, seed)
    tracker = InteractionTracker()
    if reference:
        ref = _tables(len(probes), [0, 20], seed + 1)
        ref_and = 0.5 * tables[0][0] + 0.5 * ref[20][0]
        ref_or = 0.5 * tables[0][1] + 0.5 * ref[20][1]
        tracker.set_reference(ref_and, ref_or)
        snap.write_reference(_interactions(torch.zeros_like(ref_and), ref_and, ref_or))
    stop_step = STOP_STEP if stop else None
    for step in STEPS:
        i_and, i_or = tables[step]
        metrics = tracker.set_base(i_and, i_or) if step == 0 else tracker.update(step, i_and, i_or)
        sets = tracker.last_sets()
        inter = _interactions(torch.randn(len(probes), 1 << N_PLAYERS), i_and, i_or)
        masks = {"salient": sets["preserved"] | sets["emerged"]}
        masks.update({k: sets[k] for k in ("removed", "preserved", "emerged", "noise")})
        snap.write_step(step, inter, masks, {"n_players": N_PLAYERS, "num_probes": len(probes)})
        record = {
            "step": step,
            "skipped": False,
            **metrics,
            "interactions/stopper/stage": 1.0 if step < STAGE_END else 2.0,
            "interactions/probe_seconds": 0.5,
        }
        if step == stop_step:
            record["interactions/stop_step"] = step
            record["interactions/stop_reason"] = STOP_REASON
        snap.append_metrics(record)
        if step == 10:
            snap.append_metrics({"step": SKIPPED_STEP, "skipped": True, "error": "out of memory"})
    if stop:
        snap.write_stop({"stop_step": STOP_STEP, "reason": STOP_REASON, "checkpoint_saved": True})

    last = STEPS[-1]
    if logs == "trainer_state":
        atomic_write_json(
            root / "trainer_state.json", {"global_step": last, "log_history": log_history(last)}
        )
    elif logs == "checkpoint":
        for s in (10, last):
            atomic_write_json(
                root / f"checkpoint-{s}" / "trainer_state.json",
                {"global_step": s, "log_history": log_history(s)},
            )
    elif logs == "log_history.json":
        atomic_write_json(root / subdir / "log_history.json", log_history(last))
    elif logs is not None:
        raise ValueError(logs)
    return SimpleNamespace(
        root=root,
        interactions=root / subdir,
        probes=probes,
        tables=tables,
        histograms=tracker.last_histograms(),
        sets=tracker.last_sets(),
        stop_step=stop_step,
        stop_reason=STOP_REASON,
        stage_end=STAGE_END,
        skipped_step=SKIPPED_STEP,
    )


@pytest.fixture(scope="session")
def make_run():
    """``make_run(root, **kw) -> SimpleNamespace`` (see :func:`write_run`)."""
    return write_run


@pytest.fixture(scope="session")
def full_run(tmp_path_factory):
    """One run with everything (reference, stop, stage end, losses), written once."""
    return write_run(tmp_path_factory.mktemp("full_run"))


@pytest.fixture(scope="session")
def full_report(full_run, tmp_path_factory):
    """``build_report`` of :func:`full_run` into a folder of its own (built once)."""
    from sft_interaction_callback.reporting.report import build_report

    return build_report(full_run.root, tmp_path_factory.mktemp("full_report"))

"""Shared machinery of the issue-14 studies (MiniLM LP-FT and the causal LM).

One training run per (config, seed) records, at every point of one step grid (probe
points = evaluation points), everything any stop rule needs, so that every stop is
replayed afterwards from stored curves (:mod:`stops`):

* the ``interactions/...`` metrics of ``InteractionCallback`` (``metrics.jsonl``);
* the EB-criterion statistic of Mahsereci et al. 2017 (:class:`EBCriterion`), label-free;
* loss and accuracy on the tuning split (what eval-loss patience reads);
* accuracy on the judging split (used only to score a stop, and by the oracle).

It also measures the **floor** of the interaction metrics (:func:`measure_floor`): the
same tracker quantities for the step-0 model with its weights perturbed by a tiny
relative noise, i.e. what an unchanged model scores.

Data protocol (GoEmotions, single-label rows): ``dev.tsv`` is shuffled with the data
seed and halved; the first half is the tuning split, the second the judging split
(``--judge-file`` replaces the judging split by any labelled TSV in GoEmotions' format).
Training, tuning and probe rows never share a text with the judging rows.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import random
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "goemotions"
CACHE = Path.home() / ".cache" / "sft_interaction_callback"


# ---------------------------------------------------------------------- data
def read_rows(path: Path) -> list[tuple[str, int]]:
    """Single-label rows ``(text, label)`` of a GoEmotions-format TSV (text, labels, id)."""
    rows = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            parts = line.rstrip("\n").split("\t")
            if len(parts) < 2 or not parts[0].strip():
                continue
            labels = [x for x in parts[1].split(",") if x.strip()]
            if len(labels) == 1:
                rows.append((parts[0], int(labels[0])))
    return rows


def read_label_names(data_dir: Path) -> list[str]:
    return [x.strip() for x in (data_dir / "ekman" / "labels.txt").read_text().splitlines() if x]


def inject_noise(labels: list[int], share: float, num_labels: int, seed: int) -> list[int]:
    """A seeded ``share`` of the rows get a uniformly random *different* label."""
    rng = random.Random(seed)
    out = list(labels)
    for i in rng.sample(range(len(out)), int(round(share * len(out)))):
        out[i] = rng.choice([c for c in range(num_labels) if c != out[i]])
    return out


@dataclass
class Splits:
    train: list[tuple[str, int]]
    tune: list[tuple[str, int]]
    judge: list[tuple[str, int]]
    judge_source: str
    counts: dict[str, int]


def make_splits(
    data_dir: Path,
    judge_file: Path | None,
    *,
    train_size: int,
    tune_size: int,
    judge_size: int,
    data_seed: int = 0,
) -> Splits:
    """Disjoint train / tuning / judging rows (see the module docstring)."""
    dev = read_rows(data_dir / "ekman" / "dev.tsv")
    order = list(range(len(dev)))
    random.Random(data_seed + 1).shuffle(order)
    half = len(order) // 2
    tune_half = [dev[i] for i in order[:half]]
    if judge_file is None:
        judge = [dev[i] for i in order[half:]][:judge_size]
        source = f"judging half of {data_dir / 'ekman' / 'dev.tsv'} (seed {data_seed})"
    else:
        judge = read_rows(Path(judge_file))[:judge_size]
        source = str(judge_file)
    banned = {t for t, _ in judge}
    tune = [r for r in tune_half if r[0] not in banned][:tune_size]
    banned |= {t for t, _ in tune}
    train_all = [r for r in read_rows(data_dir / "ekman" / "train.tsv") if r[0] not in banned]
    rng = random.Random(data_seed)
    idx = rng.sample(range(len(train_all)), train_size)
    train = [train_all[i] for i in idx]
    return Splits(
        train,
        tune,
        judge,
        source,
        {"train": len(train), "tune": len(tune), "judge": len(judge), "dev_single": len(dev)},
    )


def pick_probes(
    rows: Sequence[tuple[str, int]], tokenizer: Any, n_players: int, k: int, max_tokens: int
) -> list[int]:
    """Indices of ``k`` short rows with ``>= n_players`` eligible words, distinct labels
    first (a probe costs ``2**n`` forward passes of its full length)."""
    from sft_interaction_callback.probing import eligible_words

    cands = []
    for i, (text, y) in enumerate(rows):
        if len(eligible_words(text, tokenizer=tokenizer)) >= n_players:
            length = len(tokenizer(text)["input_ids"])
            if length <= max_tokens:
                cands.append((length, i, y))
    cands.sort()
    pool = cands[: 10 * k]
    out, seen = [], set()
    for _, i, y in pool:
        if y not in seen and len(out) < k:
            out.append(i)
            seen.add(y)
    for _, i, _ in pool:
        if len(out) >= k:
            break
        if i not in out:
            out.append(i)
    return out


# ---------------------------------------------------------------------- EB criterion
class EBCriterion:
    """The EB-criterion of Mahsereci et al. 2017, "Early Stopping without a Validation Set".

    At the requested steps it draws a fixed-size minibatch of ``B`` training examples
    (seeded, its own RNG), computes the per-example gradients of the training loss over
    the trainable parameters, their mean ``g_k`` and unbiased variance
    ``S_k = sum_b (g_bk - g_k)^2 / (B - 1)``, and records

        EB = 1 - (B / D) * sum_k g_k^2 / S_k

    over the ``D`` coordinates with ``S_k > 0`` (coordinates that no example touches, e.g.
    embedding rows of absent words, carry no information and are left out). The rule
    stops when ``EB > 0``: the gradient is no larger than its own sampling noise.

    The model runs in eval mode (no dropout; no RNG is consumed) with
    ``torch.autograd.grad`` (``.grad`` untouched), so training is not changed.
    ``loss_of(model, examples)`` returns the mean loss of a list of examples.
    """

    def __init__(
        self,
        examples: Sequence[Any],
        loss_of: Callable[[Any, Sequence[Any]], Any],
        *,
        batch: int = 32,
        seed: int = 0,
    ) -> None:
        rng = random.Random(seed)
        self.examples = list(examples)
        self.loss_of = loss_of
        self.batch = min(batch, len(self.examples))
        self.rng = rng
        self.values: dict[int, float] = {}
        self.dims: dict[int, int] = {}
        self.seconds = 0.0

    def measure(self, model: Any, step: int) -> float:
        import torch

        t0 = time.perf_counter()
        params = [p for p in model.parameters() if p.requires_grad]
        picks = [self.examples[i] for i in self.rng.sample(range(len(self.examples)), self.batch)]
        was_training = model.training
        model.eval()
        s1 = [torch.zeros_like(p, dtype=torch.float64) for p in params]
        s2 = [torch.zeros_like(p, dtype=torch.float64) for p in params]
        try:
            for ex in picks:
                with torch.enable_grad():
                    loss = self.loss_of(model, [ex])
                    grads = torch.autograd.grad(loss, params, allow_unused=True)
                for a, b, g in zip(s1, s2, grads, strict=True):
                    if g is not None:
                        g = g.detach().double()
                        a += g
                        b += g * g
        finally:
            model.train(was_training)
        B = self.batch
        snr, dims = 0.0, 0
        for a, b in zip(s1, s2, strict=True):
            mean = a / B
            var = (b - B * mean * mean) / (B - 1)
            keep = var > 1e-30
            dims += int(keep.sum())
            snr += float((mean[keep] ** 2 / var[keep]).sum())
        value = 1.0 - (B / dims) * snr if dims else math.nan
        self.values[int(step)] = value
        self.dims[int(step)] = dims
        self.seconds += time.perf_counter() - t0
        return value


# ---------------------------------------------------------------------- the grid callback
def grid_callback(
    grid: Sequence[int],
    measure: Callable[[Any, int], None],
) -> Any:
    """A TrainerCallback that calls ``measure(model, step)`` at step 0 (train begin) and
    after every optimizer step in ``grid``."""
    from transformers import TrainerCallback

    steps = set(int(s) for s in grid)

    class GridMeasures(TrainerCallback):
        def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if 0 in steps:
                measure(kw["model"], 0)

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if int(state.global_step) in steps:
                measure(kw["model"], int(state.global_step))

    return GridMeasures()


class GridRecorder:
    """``measure(model, step)`` for :func:`grid_callback`: at each grid step the tuning
    split's loss and accuracy, the judging split's accuracy and the EB statistic, with
    no RNG moved; ``points[step]`` holds them, ``eval_seconds`` the time spent scoring."""

    def __init__(self, name: str, score: Any, tune: list[dict], judge: list[dict],
                 eb: EBCriterion, log: Callable[[str], None]) -> None:  # fmt: skip
        self.name, self.score, self.tune, self.judge = name, score, tune, judge
        self.eb, self.log = eb, log
        self.points: dict[int, dict[str, Any]] = {}
        self.eval_seconds = 0.0

    def __call__(self, model: Any, step: int) -> None:
        with no_rng_change():
            t0 = time.perf_counter()
            tl, ta = self.score(model, self.tune)
            _, ja = self.score(model, self.judge)
            self.eval_seconds += time.perf_counter() - t0
            e = self.eb.measure(model, step)
        self.points[step] = {"tune_loss": tl, "tune_acc": ta, "judge_acc": ja, "eb": e}
        self.log(f"  {self.name} step {step}: tune loss {tl:.3f} acc {ta:.3f} EB {e:+.3f}")


def no_rng_change() -> Any:
    """A context that restores Python / torch RNG states (measurements never move them)."""
    import contextlib

    import torch

    @contextlib.contextmanager
    def ctx() -> Any:
        py, th = random.getstate(), torch.get_rng_state()
        try:
            yield
        finally:
            random.setstate(py)
            torch.set_rng_state(th)

    return ctx()


# ---------------------------------------------------------------------- floor
#: the two category definitions the claims are reported for (DESIGN.md §5 and §9)
CATEGORY_MODES = ("debounced", "design")


def _tracker(config: Any, categories: str) -> Any:
    """The run's tracker settings with ``categories`` (and its matching noise signal)."""
    from sft_interaction_callback.tracking.tracker import InteractionTracker

    return InteractionTracker(
        config.salient_rel,
        config.salient_abs,
        salient_scope=config.salient_scope,
        match_type=config.match_type,
        categories=categories,
        noise_signal="pooled" if categories == "debounced" else "design",
    )


def _clean(metrics: Mapping[str, Any]) -> dict[str, float | None]:
    return {
        k: (None if isinstance(v, float) and math.isnan(v) else float(v))
        for k, v in metrics.items()
        if isinstance(v, (int, float))
    }


def measure_floor(
    model0: Any,
    tokenizer: Any,
    snap_dir: Path,
    *,
    kind: str,
    config: Any,
    rel: float = 1e-2,
    seed: int = 0,
) -> dict[str, dict[str, float | None]]:
    """Tracker metrics of two consecutive "checkpoints" that are the step-0 model with
    every weight perturbed by ``rel`` times its tensor's std (two Gaussian draws): what an
    unchanged model scores against step 0, per category mode (the second point's metrics,
    so that debounced categories, which need two agreeing points, can move at all).

    Same probes, players, baseline, solver and tracker settings as the run
    (``probes.json``, ``step-00000000`` and ``reference`` snapshots of ``snap_dir``).
    """
    import torch

    from sft_interaction_callback.andor import AndOrInteractions
    from sft_interaction_callback.engine.extractor import ValueExtractor
    from sft_interaction_callback.snapshots import SnapshotDir

    sd = SnapshotDir(snap_dir)
    probes = sd.read_probes()
    base = AndOrInteractions.load(sd.step_path(0))
    ref = AndOrInteractions.load(sd.reference_path) if sd.reference_path.is_file() else None
    ex = ValueExtractor.from_config(config, tokenizer, kind=kind, baseline=config.baseline)
    draws = []
    for k in range(2):
        model = copy.deepcopy(model0).eval()
        gen = torch.Generator().manual_seed(1000 * seed + k)
        with torch.no_grad():
            for p in model.parameters():
                if p.numel() > 1:
                    p.add_(torch.randn(p.shape, generator=gen) * rel * float(p.float().std()))
        draws.append(ex.measure(model, probes))
        del model
    out = {}
    for mode in CATEGORY_MODES:
        tracker = _tracker(config, mode)
        if ref is not None:
            tracker.set_reference(ref.i_and, ref.i_or)
        tracker.set_base(base.i_and, base.i_or)
        tracker.update(1, draws[0].i_and, draws[0].i_or)
        out[mode] = _clean(tracker.update(2, draws[1].i_and, draws[1].i_or))
    return out


def design_points(snap_dir: Path, config: Any) -> dict[int, dict[str, float | None]]:
    """The tracker metrics with DESIGN.md §5 categories and the §7 signal, recomputed
    from the run's step snapshots (no model needed)."""
    from sft_interaction_callback.andor import AndOrInteractions
    from sft_interaction_callback.snapshots import SnapshotDir

    sd = SnapshotDir(snap_dir)
    tracker = _tracker(config, "design")
    if sd.reference_path.is_file():
        ref = AndOrInteractions.load(sd.reference_path)
        tracker.set_reference(ref.i_and, ref.i_or)
    out = {}
    for step in sd.steps():
        inter = AndOrInteractions.load(sd.step_path(step))
        if step == 0:
            out[0] = _clean(tracker.set_base(inter.i_and, inter.i_or))
        else:
            out[step] = _clean(tracker.update(step, inter.i_and, inter.i_or))
    return out


# ---------------------------------------------------------------------- records
def interaction_points(snap_dir: Path) -> dict[int, dict[str, float]]:
    """``{step: metrics}`` of ``metrics.jsonl`` (skipped points left out), floats only."""
    from sft_interaction_callback.snapshots import read_jsonl

    out = {}
    for r in read_jsonl(Path(snap_dir) / "metrics.jsonl"):
        if r.get("skipped"):
            continue
        out[int(r["step"])] = {
            k: float(v)
            for k, v in r.items()
            if k.startswith("interactions/") and isinstance(v, (int, float)) and math.isfinite(v)
        }
    return out


def order_histograms(run_dir: Path, steps: Sequence[int]) -> dict[str, Any]:
    """Per-category order histograms (mean over probes) at the given probe steps."""
    from sft_interaction_callback.reporting.run_data import load_run

    run = load_run(run_dir)
    out = {}
    for s in steps:
        try:
            h = run.order_histograms(s)
        except Exception:  # noqa: BLE001 - a histogram never loses the run
            h = None
        out[str(s)] = h
    return out


def pip_freeze() -> list[str]:
    try:
        text = subprocess.run(
            [sys.executable, "-m", "pip", "freeze", "--exclude-editable"],
            capture_output=True,
            text=True,
            timeout=120,
        ).stdout
    except Exception as err:  # noqa: BLE001
        return [f"# pip freeze failed: {err}"]
    return [line for line in text.splitlines() if line and not line.startswith("-e ")]


def code_state() -> dict[str, Any]:
    """The commit the package was imported from and whether its files differed from it
    (the working tree is shared: uncommitted package edits would change the results)."""

    def git(*args: str) -> str:
        try:
            return subprocess.run(
                ["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=60
            ).stdout.strip()
        except Exception as err:  # noqa: BLE001
            return f"git failed: {err}"

    return {
        "commit": git("rev-parse", "HEAD"),
        "package_uncommitted": git("status", "--porcelain", "sft_interaction_callback"),
    }


def write_json(path: Path, data: Any) -> None:
    from sft_interaction_callback.snapshots import json_safe

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(json_safe(data), indent=1, allow_nan=False) + "\n")
    tmp.replace(path)


def aggregate(out: Path, meta: dict[str, Any]) -> dict[str, Any]:
    """``out/runs.json``: every finished run in ``out/runs/`` with its replayed stops."""
    from stops import judge

    runs = []
    for p in sorted((out / "runs").glob("*.json")):
        rec = json.loads(p.read_text())
        rec["stops"] = judge(rec)
        runs.append(rec)
    payload = {"meta": meta, "runs": runs}
    write_json(out / "runs.json", payload)
    return payload


def run_name(noise: float, method: str, seed: int) -> str:
    return f"noise{int(round(100 * noise)):02d}-{method}-seed{seed}"


def run_grid(
    label: str,
    configs: Sequence[tuple[float, str]],
    seeds: Sequence[int],
    out: Path,
    meta: dict[str, Any],
    run: Callable[[float, str, int], dict[str, Any]],
    log: Callable[[str], None],
    started: float,
) -> None:
    """Every (noise, method, seed) run not yet on disk, in order; ``runs.json`` after each.

    Resumable: a run whose ``runs/<name>.json`` exists is skipped, so a study continues
    where an interrupted invocation stopped.
    """
    for noise, method in configs:
        for seed in seeds:
            path = out / "runs" / f"{run_name(noise, method, seed)}.json"
            if path.is_file():
                log(f"[{label}] {path.name} exists: skipped")
                continue
            log(f"[{label}] {run_name(noise, method, seed)} ...")
            rec = run(noise, method, seed)
            rec["code"] = code_state()
            write_json(path, rec)
            aggregate(out, meta)
            log(f"[{label}] {rec['run']} done in {rec['timing']['run_seconds']} s")
    meta["wall_seconds_this_call"] = round(time.perf_counter() - started, 1)
    aggregate(out, meta)
    log(f"[{label}] wrote {out / 'runs.json'} ({meta['wall_seconds_this_call']} s)")


# ---------------------------------------------------------------------- shared by studies C-E
def study_args(argv: list[str] | None, doc: str, out: str, work_dir: str,
               configs_example: str) -> argparse.Namespace:  # fmt: skip
    """The command line every judged study takes (see their module docstrings)."""
    p = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    p.add_argument("--out", default=str(ROOT / "docs" / "results" / out))
    p.add_argument("--judge-file", default=None, help="labelled TSV (GoEmotions format)")
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    p.add_argument("--tiny", action="store_true")
    p.add_argument("--configs", nargs="+", default=None, help=f"e.g. {configs_example}")
    p.add_argument("--data-dir", default=str(DEFAULT_DATA))
    p.add_argument("--work-dir", default=work_dir)
    p.add_argument("--threads", type=int, default=1)
    return p.parse_args(argv)


Score = Callable[[Any, list[dict]], tuple[float, float]]


def causal_scorer(
    batch_of: Callable[[list[dict]], dict], label_ids: list[int], chunk: int = 128
) -> Score:
    """``score(model, rows) -> (completion cross-entropy, accuracy)`` for a causal LM.

    ``batch_of(rows)`` pads rows into ``input_ids`` / ``labels`` (-100 outside the
    completion) / ``attention_mask``; accuracy is the label whose token (``label_ids``) has
    the largest next-token logit after the prompt (``rows[i]["prompt_ids"]``)."""
    import torch

    def score(model: Any, rows: list[dict]) -> tuple[float, float]:
        was = model.training
        model.eval()
        loss_sum, n_tok, hits = 0.0, 0, 0
        order = sorted(range(len(rows)), key=lambda i: len(rows[i]["prompt_ids"]))
        with torch.no_grad():
            for k in range(0, len(order), chunk):
                part = [rows[i] for i in order[k : k + chunk]]
                b = batch_of(part)
                logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
                lg, lb = logits[:, :-1], b["labels"][:, 1:]
                mask = lb != -100
                loss_sum += float(
                    torch.nn.functional.cross_entropy(lg[mask], lb[mask], reduction="sum")
                )
                n_tok += int(mask.sum())
                pos = torch.tensor([len(r["prompt_ids"]) - 1 for r in part])
                scores = logits[torch.arange(len(part)), pos][:, label_ids]
                gold = torch.tensor([r["label"] for r in part])
                hits += int((scores.argmax(-1) == gold).sum())
        model.train(was)
        return loss_sum / max(1, n_tok), hits / len(rows)

    return score


def attach_interactions(points: dict[int, dict[str, Any]], snap: Path, config: Any,
                        model0: Any, tokenizer: Any, *, kind: str, rel: float,
                        seed: int) -> tuple[dict[str, Any], float]:  # fmt: skip
    """After training: the callback's metrics (debounced and DESIGN categories) into each
    grid point, and ``(floor, probe seconds)``; the floor from ``model0`` (step 0)."""
    inter = interaction_points(snap)
    floor = measure_floor(model0, tokenizer, snap, kind=kind, config=config, rel=rel, seed=seed)
    design = design_points(snap, config)
    for st, p in points.items():
        p["interactions"] = inter.get(st, {})
        p["interactions_design"] = design.get(st, {})
    probe_s = sum(p["interactions"].get("interactions/probe_seconds", 0.0) for p in points.values())
    return floor, probe_s


def quiet_libraries(threads: int) -> None:
    """Hugging Face and ``datasets`` without progress bars or info logs, warnings off,
    and ``threads`` torch threads: a study's log holds its own lines only."""
    import torch
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        import datasets

        datasets.disable_progress_bars()
    except ImportError:  # pragma: no cover - trl brings datasets
        pass
    warnings.filterwarnings("ignore")
    torch.set_num_threads(max(1, threads))


def cpu_run_args(out_dir: Path, *, steps: int, batch_size: int, lr: float, seed: int,
                 warmup: float) -> dict[str, Any]:  # fmt: skip
    """The ``TrainingArguments`` / ``SFTConfig`` fields every judged study shares: a linear
    schedule on the CPU, logging every 10 steps, no evaluation, checkpoints or reporting by
    the Trainer (the grid callback does those), ``seed`` for both the model and the data."""
    return {
        "output_dir": str(out_dir),
        "max_steps": steps,
        "per_device_train_batch_size": batch_size,
        "learning_rate": lr,
        "lr_scheduler_type": "linear",
        "warmup_steps": warmup,
        "logging_steps": 10,
        "eval_strategy": "no",
        "save_strategy": "no",
        "report_to": [],
        "seed": seed,
        "data_seed": seed,
        "use_cpu": True,
        "disable_tqdm": True,
        "dataloader_num_workers": 0,
    }


def run_outcome(points: Mapping[int, dict[str, Any]], floor: Any, eb: Any, measure: Any, *,
                wall: float, probe_s: float, started: float) -> dict[str, Any]:  # fmt: skip
    """The part of a run's record every study writes alike: its points, the measured floor,
    the EB dimensions and where the run's time went (``started``: ``perf_counter`` at its
    start)."""
    return {
        "points": {str(k): v for k, v in sorted(points.items())},
        "floor": floor,
        "eb_dims": eb.dims,
        "timing": {
            "train_wall_seconds": round(wall, 1),
            "probe_seconds": round(probe_s, 1),
            "eval_seconds": round(measure.eval_seconds, 1),
            "eb_seconds": round(eb.seconds, 1),
            "run_seconds": round(time.perf_counter() - started, 1),
        },
    }

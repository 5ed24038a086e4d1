"""PNG plots of one run (matplotlib, Agg, no global pyplot state).

Every ``plot_*`` function draws one figure from a :class:`~.run_data.RunData` and writes it
to ``path``; it returns the path, or ``None`` when the run holds nothing to draw (the
reason is appended to ``notes``). Colours are fixed per category (removed red, preserved
blue, emerged green); the early-stop step is a dashed black vertical line and the end of
the first (denoising) stage, when the stopper recorded it, a dotted grey one.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..keys import CATEGORIES, NOISE_KEY, REMOVED_FRACTION_KEY, category_key
from .run_data import RunData

__all__ = [
    "COLORS",
    "PLOTS",
    "PlotSpec",
    "plot_counts",
    "plot_loss",
    "plot_noise",
    "plot_order_histograms",
    "plot_overview",
    "plot_quality",
    "plot_strengths",
]

COLORS = {"removed": "#d62728", "preserved": "#1f77b4", "emerged": "#2ca02c"}
NOISE_COLOR = "#7b3294"
STOP_COLOR = "#222222"
STAGE_COLOR = "#888888"
LABELS = {"removed": "removed", "preserved": "preserved", "emerged": "newly emerged"}
EVAL_COLORS = ("#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#bcbd22")
DPI = 110
#: removed interactions are measured on the base (step-0) tables, as the tracker does
SHARE_LABEL = "share of total strength Σ|I|\n(removed: of the step-0 total)"


def _figure(width: float, height: float, rows: int = 1, cols: int = 1):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    return fig, [ax for row in axes for ax in row]


def _save(fig, path: Path) -> Path:
    """One legend below the axes for the whole figure (labels from every axes, once each)."""
    entries: dict[str, object] = {}
    for ax in fig.axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            entries.setdefault(label, handle)
    if entries:
        fig.legend(
            list(entries.values()),
            list(entries),
            loc="outside lower center",
            ncols=min(len(entries), 5),
            frameon=False,
            fontsize=9,
        )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=DPI, facecolor="white")
    return path


def _finite(values: list[float]) -> bool:
    return any(math.isfinite(v) for v in values)


def _markers(run: RunData, ax) -> None:
    """Vertical lines at the stop step and the end of the first stage."""
    stage = run.stage_end_step
    if stage is not None and stage != run.stop_step:
        ax.axvline(stage, color=STAGE_COLOR, ls=":", lw=1.4, label=f"stage 1 ends (step {stage})")
    if run.stop_step is not None:
        ax.axvline(
            run.stop_step, color=STOP_COLOR, ls="--", lw=1.2, label=f"stop (step {run.stop_step})"
        )


def _style(ax, title: str, ylabel: str, xlabel: str = "training step") -> None:
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True, steps=[1, 2, 2.5, 5, 10]))
    if xlabel == "training step":  # every step axis starts at 0, as the probe points do
        lo, hi = ax.get_xlim()
        ax.set_xlim(left=min(lo, -0.05 * (hi - lo)))
    ax.set_title(title, fontsize=11, loc="left", fontweight="bold")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3, lw=0.6)
    ax.spines[["top", "right"]].set_visible(False)


def _category_lines(run: RunData, ax, metric: str, ls: str = "-", suffix: str = "") -> int:
    drawn = 0
    for c in CATEGORIES:
        steps, values = run.series(category_key(c, metric))
        if not _finite(values):
            continue
        ax.plot(
            steps,
            values,
            ls,
            color=COLORS[c],
            marker="o",
            ms=3.5,
            lw=1.8,
            label=LABELS[c] + suffix,
        )
        drawn += 1
    return drawn


# ---------------------------------------------------------------------- panels
def _panel_counts(run: RunData, ax) -> bool:
    if not _category_lines(run, ax, "count"):
        return False
    _markers(run, ax)
    _style(ax, "Salient interactions per probe", "count (mean over probes)")
    ax.set_ylim(bottom=0)
    return True


def _panel_strengths(run: RunData, ax) -> bool:
    if not _category_lines(run, ax, "strength_norm"):
        return False
    _markers(run, ax)
    _style(ax, "Strength, normalised", SHARE_LABEL)
    ax.set_ylim(bottom=0)
    return True


def _panel_rho(run: RunData, ax) -> bool:
    if not _category_lines(run, ax, "rho"):
        return False
    _markers(run, ax)
    _style(ax, "ρ: uncancelled-effect ratio", "ρ  (0 = effects cancel, like noise)")
    ax.set_ylim(-0.03, 1.03)
    return True


def _panel_gamma(run: RunData, ax) -> bool:
    if not _category_lines(run, ax, "gamma"):
        return False
    _markers(run, ax)
    _style(ax, "γ: generalizability", "γ  (share of strength the reference shares)")
    ax.set_ylim(-0.03, 1.03)
    return True


def _panel_orders(run: RunData, ax, what: str) -> bool:
    hists = run.order_histograms()
    if hists is None:
        return False
    n = len(hists["removed"][what]) - 1
    width = 0.27
    for j, c in enumerate(CATEGORIES):
        xs = [o + (j - 1) * width for o in range(1, n + 1)]
        ax.bar(xs, hists[c][what][1:], width, color=COLORS[c], label=LABELS[c], alpha=0.9)
    ax.set_xticks(range(1, n + 1))
    step = run.focus_step
    which = "stop" if step == run.stop_step else "last"
    if what == "count":
        _style(
            ax,
            f"Order histogram at step {step} ({which})",
            "count (mean over probes)",
            "order |S| (number of words)",
        )
    else:
        _style(
            ax,
            f"Strength by order at step {step} ({which})",
            SHARE_LABEL,
            "order |S| (number of words)",
        )
    ax.grid(False, axis="x")
    return True


def _panel_noise(run: RunData, ax) -> bool:
    steps, noise = run.series(NOISE_KEY)
    if not _finite(noise):
        return False
    ax.plot(steps, noise, "-", color=NOISE_COLOR, marker="o", ms=3.5, lw=2, label="noise signal")
    best = [v for v in noise if math.isfinite(v)]
    _markers(run, ax)
    _style(ax, "New-interaction noise (early-stopping signal)", "noise")
    ax.set_ylim(bottom=min(0.0, min(best)))
    if run.has(REMOVED_FRACTION_KEY):
        twin = ax.twinx()
        s, frac = run.series(REMOVED_FRACTION_KEY)
        twin.plot(
            s,
            frac,
            "-",
            color=COLORS["removed"],
            alpha=0.45,
            lw=1.4,
            label="removed fraction (right axis)",
        )
        twin.set_ylim(-0.03, 1.03)
        twin.set_ylabel("removed fraction of base strength", color=COLORS["removed"], alpha=0.8)
        twin.spines[["top"]].set_visible(False)
    return True


def _panel_loss(run: RunData, ax) -> bool:
    losses = run.losses()
    if not losses:
        return False
    i = -1
    for name, (steps, values) in losses.items():
        if name == "train":
            ax.plot(steps, values, "-", color="#444444", lw=1.2, alpha=0.85, label="training loss")
        else:
            label = "evaluation loss" if name == "eval_loss" else name
            color = EVAL_COLORS[(i := i + 1) % len(EVAL_COLORS)]
            ax.plot(steps, values, "-", color=color, marker="s", ms=4, lw=1.8, label=label)
    _markers(run, ax)
    _style(ax, "Loss", "loss")
    return True


# ---------------------------------------------------------------------- figures
def _single(panel: Callable[..., bool], what: str) -> Callable[..., Path | None]:
    def plot(run: RunData, path: Path, notes: list[str] | None = None) -> Path | None:
        fig, (ax,) = _figure(8, 4.4)
        if not panel(run, ax):
            if notes is not None:
                notes.append(f"{Path(path).name}: {what}")
            return None
        return _save(fig, path)

    return plot


plot_counts = _single(_panel_counts, "no interaction counts in metrics.jsonl")
plot_counts.__doc__ = "(a) Count of removed / preserved / emerged interactions over steps."
plot_strengths = _single(_panel_strengths, "no normalised strengths in metrics.jsonl")
plot_strengths.__doc__ = "(b) Normalised strength of each category over steps."
plot_noise = _single(_panel_noise, "no noise signal in metrics.jsonl")
plot_noise.__doc__ = "(e) The noise signal with the stop / stage-end steps marked."
plot_loss = _single(_panel_loss, "no Trainer log history (loss) found")
plot_loss.__doc__ = "(f) Training and evaluation loss on the step axis."


def plot_quality(run: RunData, path: Path, notes: list[str] | None = None) -> Path | None:
    """(c) ρ per category over steps, and γ beside it when a reference model was used."""
    has_gamma = any(run.has(category_key(c, "gamma")) for c in CATEGORIES)
    if not any(run.has(category_key(c, "rho")) for c in CATEGORIES):
        if notes is not None:
            notes.append(f"{Path(path).name}: no ρ values in metrics.jsonl")
        return None
    fig, axes = _figure(13 if has_gamma else 8, 4.4, 1, 2 if has_gamma else 1)
    _panel_rho(run, axes[0])
    if has_gamma:
        _panel_gamma(run, axes[1])
    elif notes is not None:
        notes.append("no reference model: γ (generalizability) was not measured")
    return _save(fig, path)


def plot_order_histograms(run: RunData, path: Path, notes: list[str] | None = None) -> Path | None:
    """(d) Count and strength share by order of each category at the stop (or last) step."""
    fig, axes = _figure(13, 4.4, 1, 2)
    if not _panel_orders(run, axes[0], "count"):
        if notes is not None:
            notes.append(
                f"{Path(path).name}: the snapshots hold no removed/preserved/emerged masks"
            )
        return None
    _panel_orders(run, axes[1], "share")
    return _save(fig, path)


def plot_overview(run: RunData, path: Path, notes: list[str] | None = None) -> Path | None:
    """One picture: counts, strengths, γ (else ρ), orders, noise and loss, one legend."""
    fig, axes = _figure(15, 8.4, 2, 3)
    has_gamma = any(run.has(category_key(c, "gamma")) for c in CATEGORIES)
    panels = [
        _panel_counts,
        _panel_strengths,
        _panel_gamma if has_gamma else _panel_rho,
        lambda r, ax: _panel_orders(r, ax, "count"),
        _panel_noise,
        _panel_loss,
    ]
    drawn = 0
    for panel, ax in zip(panels, axes, strict=True):
        if panel(run, ax):
            drawn += 1
        else:
            ax.set_axis_off()
            ax.text(
                0.5,
                0.5,
                "not available",
                ha="center",
                va="center",
                color="#999999",
                transform=ax.transAxes,
            )
    if not drawn:
        if notes is not None:
            notes.append(f"{Path(path).name}: nothing to draw")
        return None
    fig.suptitle("AND-OR interactions during SFT", fontsize=14, fontweight="bold")
    return _save(fig, path)


@dataclass(frozen=True)
class PlotSpec:
    """One plot of the report: file name, title (HTML caption) and drawing function."""

    name: str
    title: str
    draw: Callable[..., Path | None]


#: the report's plots, in page order
PLOTS = (
    PlotSpec("overview.png", "Overview", plot_overview),
    PlotSpec("counts.png", "Removed, preserved and newly emerged interactions", plot_counts),
    PlotSpec("strengths.png", "Normalised strength per category", plot_strengths),
    PlotSpec("quality.png", "Quality: ρ and γ per category", plot_quality),
    PlotSpec("orders.png", "Order histograms at the stop (or last) step", plot_order_histograms),
    PlotSpec("noise.png", "Noise signal and early stop", plot_noise),
    PlotSpec("loss.png", "Training and evaluation loss", plot_loss),
)

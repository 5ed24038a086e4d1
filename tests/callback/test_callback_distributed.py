"""Two processes (torchrun, gloo on CPU) against one: same values, same metrics, same stop.

``accelerate launch --cpu --num_processes 2`` starts a single process on this kind of
machine (its CPU path only goes multi-process through MPI), so the tests launch with
``torchrun --nproc_per_node 2`` and, once, with ``accelerate launch --multi_gpu
--num_processes 2`` (which runs torch's elastic launcher underneath); the script forces
the CPU with ``TrainingArguments(use_cpu=True)`` and the ``gloo`` backend. The script is
``dist_train_script.py`` next to this file.

In every run: an injected out-of-memory error on one rank (rank 1 of 2) at step 2 makes
*both* ranks skip that probe point, and a custom stopper that fires on rank 0 only
(at step 4) stops both ranks at step 4.

* ``local`` (DDP's mode): learning rate 0, so both runs probe the very same weights at
  every point; metrics and snapshots must agree to 1e-5. The two-process run is killed
  (``os._exit`` on every rank) after its step-2 checkpoint and resumed from it, so this
  also checks the resume under DDP: rank 0 reads the state and broadcasts it.
* ``lockstep`` (the FSDP / ZeRO-3 mode, run here over DDP): a real training run; the
  two runs' weights differ by float rounding of the gradient all-reduce, so values
  agree to 1e-5 and metrics to 1e-3 (relative); every rank runs the same forward passes.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sft_interaction_callback.keys import SOLVER_GAP_MAX
from sft_interaction_callback.snapshots import load_tensors, read_jsonl

HERE = Path(__file__).resolve().parent
SCRIPT = HERE / "dist_train_script.py"
COMMON = ["--max-steps", "6", "--schedule", "2", "--stop-step", "4", "--fault-step", "2"]


def _script():
    spec = importlib.util.spec_from_file_location("dist_train_script", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _launcher(name: str) -> list[str]:
    """The command that starts two processes: ``torchrun`` or ``accelerate launch``."""
    exe = shutil.which(name, path=os.path.dirname(sys.executable)) or name
    if name == "torchrun":
        return [exe, "--standalone", "--nproc_per_node", "2"]
    # ``--cpu`` cannot start two processes without MPI; ``--multi_gpu`` runs torch's
    # elastic launcher, and the script forces the CPU (use_cpu=True) and gloo
    return [exe, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1"] + [
        "--mixed_precision", "no", "--dynamo_backend", "no",
        "--main_process_port", str(_free_port()),
    ]  # fmt: skip


def _torchrun(
    out: Path, *extra: str, killed: bool = False, launcher: str = "torchrun"
) -> list[dict]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(HERE.parents[1])}
    cmd = [*_launcher(launcher), str(SCRIPT), str(out)]
    proc = subprocess.run(
        cmd + COMMON + ["--per-device-batch", "2", "--fault-rank", "1", *extra],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    if killed:
        assert proc.returncode != 0
        return []
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return [json.loads((out / f"result-rank{r}.json").read_text()) for r in (0, 1)]


def _metrics(result: dict) -> list[dict]:
    """Logged interaction entries without wall-clock seconds."""
    return [{k: v for k, v in e.items() if "seconds" not in k} for e in result["logged"]]


#: The fit's certified gap (logged when the solver certifies one) bounds the solver's own
#: precision; the rounding of another world size moves it by ~1e-4, absolute.
GAP_ABS_TOL = 1e-3


def _close(a: dict, b: dict, rel: float, abs_: float) -> None:
    assert a.keys() == b.keys(), a.keys() ^ b.keys()
    for k in a:
        tol = max(abs_, GAP_ABS_TOL) if k == SOLVER_GAP_MAX else abs_
        assert math.isclose(a[k], b[k], rel_tol=rel, abs_tol=tol), (a.get("step"), k, a[k], b[k])


def _common_checks(one: dict, two: list[dict]) -> None:
    for r in two:  # both ranks: stopped by rank 0's stopper at the same step
        assert r["world_size"] == 2 and r["global_step"] == 4 and r["stop_step"] == 4
        assert r["skipped_steps"] == [2]  # rank 1's OOM skipped the point on both ranks
    assert one["global_step"] == 4 and one["stop_step"] == 4 and one["skipped_steps"] == [2]
    # every rank computed identical metrics (not just close)
    assert _metrics(two[0]) == _metrics(two[1])
    steps = [e["step"] for e in two[0]["logged"] if "interactions/noise" in e]
    assert steps == [0, 4]
    assert [e["step"] for e in one["logged"] if "interactions/noise" in e] == [0, 4]


def _snapshots(out_one: Path, out_two: Path, atol: float, check_fit: bool = True) -> None:
    for step in (0, 4):
        a, _ = load_tensors(out_one / "interactions" / f"step-{step:08d}.safetensors")
        b, _ = load_tensors(out_two / "interactions" / f"step-{step:08d}.safetensors")
        torch.testing.assert_close(b["v"], a["v"], rtol=0, atol=atol)
        if check_fit:
            for k in ("i_and", "i_or"):
                torch.testing.assert_close(b[k], a[k], rtol=0, atol=atol)
            for k in ("removed", "preserved", "emerged"):
                assert torch.equal(a[k], b[k]), (step, k)
    records = read_jsonl(out_two / "interactions" / "metrics.jsonl")
    assert [(r["step"], r["skipped"]) for r in records] == [(0, False), (2, True), (4, False)]
    assert "out of memory on rank(s) 1" in records[1]["error"]
    assert json.loads((out_two / "interactions" / "stop.json").read_text())["stop_step"] == 4


def _local_mode_matches(one: dict, two: list[dict], root: Path) -> None:
    """Same weights on every rank: metrics and snapshots equal to one process (1e-5)."""
    _common_checks(one, two)
    for a, b in zip(_metrics(one), _metrics(two[0]), strict=True):
        b.pop("interactions/probe_seconds_max", None)
        _close(a, b, rel=0, abs_=1e-5)
    _snapshots(root / "one", root / "two", atol=1e-5)


def test_two_processes_local_mode_match_one(tmp_path):
    """Also killed after the checkpoint of step 2 and resumed from it, on both ranks."""
    mod = _script()
    one = mod.main([str(tmp_path / "one"), *COMMON, "--per-device-batch", "4", "--lr", "0"])
    local = ["--lr", "0", "--mode", "local", "--save-steps", "2"]
    _torchrun(tmp_path / "two", *local, "--kill-at", "3", killed=True)
    assert [r["step"] for r in read_jsonl(tmp_path / "two/interactions/metrics.jsonl")] == [0, 2]
    two = _torchrun(tmp_path / "two", *local, "--resume", str(tmp_path / "two/checkpoint-2"))
    assert two[0]["mode"] == two[1]["mode"] == "local"
    _local_mode_matches(one, two, tmp_path)


def test_accelerate_launch_two_processes_match_one(tmp_path):
    """The launcher users type, ``accelerate launch``, with two processes on the CPU."""
    mod = _script()
    one = mod.main([str(tmp_path / "one"), *COMMON, "--per-device-batch", "4", "--lr", "0"])
    two = _torchrun(tmp_path / "two", "--lr", "0", "--mode", "local", launcher="accelerate")
    _local_mode_matches(one, two, tmp_path)


def test_two_processes_lockstep_mode_match_one(tmp_path):
    mod = _script()
    one = mod.main([str(tmp_path / "one"), *COMMON, "--per-device-batch", "4"])
    two = _torchrun(tmp_path / "two", "--mode", "lockstep")
    assert two[0]["mode"] == two[1]["mode"] == "lockstep"
    _common_checks(one, two)
    for a, b in zip(_metrics(one), _metrics(two[0]), strict=True):
        b.pop("interactions/probe_seconds_max", None)
        # lockstep probing (sharded weights) measures no step-0 noise floor (noise_floor.py)
        assert "interactions/noise_floor" not in b
        a.pop("interactions/noise_floor", None)
        a.pop("interactions/noise_floor_sd", None)
        _close(a, b, rel=1e-3, abs_=1e-5)
    # the fit amplifies the training's rounding a little: values to 1e-5, fit to 1e-4
    _snapshots(tmp_path / "one", tmp_path / "two", atol=1e-5, check_fit=False)
    _snapshots(tmp_path / "one", tmp_path / "two", atol=1e-4)
    # lockstep: both ranks ran the same forward passes at every step (training's
    # included), except at step 2 where the injected fault fired before rank 1's passes
    f0, f1 = ({int(k): v for k, v in r["forwards"].items()} for r in two)
    deltas = [(s, f0[s] - f0.get(s - 1, 0), f1[s] - f1.get(s - 1, 0)) for s in sorted(f0) if s != 2]
    assert all(d0 == d1 for _, d0, d1 in deltas), deltas


def test_shard_plans_cover_every_mask_once():
    from sft_interaction_callback.engine.distributed import shard_plan

    for lockstep in (False, True):
        for probes, n, world in [(2, 3, 2), (3, 4, 3), (1, 2, 4), (2, 4, 1), (5, 5, 8)]:
            v = torch.randn(probes, 1 << n)
            plans = [shard_plan(probes, n, world, r, lockstep=lockstep) for r in range(world)]
            assert len({p.per_rank for p in plans}) == 1  # fixed-size all_gather
            rows = []
            for plan in plans:
                local = [v[p][m] for p, m in plan.calls]
                if lockstep:  # same calls, same sizes, distinct masks on every rank
                    assert [(p, len(m)) for p, m in plan.calls] == [
                        (p, len(m)) for p, m in plans[0].calls
                    ]
                    assert all(len(set(m.tolist())) == len(m) for _, m in plan.calls)
                rows.append(plan.pad(torch.cat(local) if local else torch.empty(0)))
            assert torch.equal(plans[0].assemble(torch.stack(rows)), v)
            real = torch.cat([p.index[p.rank][p.index[p.rank] >= 0] for p in plans])
            assert sorted(real.tolist()) == list(range(probes << n))


@pytest.mark.parametrize("flag", [False, True])
def test_collective_is_a_no_op_in_one_process(flag):
    from sft_interaction_callback.engine.distributed import Collective

    comm = Collective()
    assert not comm.active and comm.world_size == 1 and comm.is_main
    assert comm.any(flag) is flag and comm.min_int(7) == 7
    t = torch.arange(3.0)
    assert torch.equal(comm.all_gather(t), t[None]) and comm.broadcast_object("x") == "x"
    comm.agree(None, "nothing")
    with pytest.raises(ValueError, match="boom"):
        comm.agree(ValueError("boom"), "something")


def test_lockstep_probing_of_fsdp_sharded_models(tmp_path):
    """FSDP 1 and 2 (CPU, gloo): sharded forward passes in step, values of the full model."""
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable)) or "torchrun"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(HERE.parents[1])}
    script = HERE / "fsdp_probe_script.py"
    cmd = [torchrun, "--standalone", "--nproc_per_node", "2", str(script), str(tmp_path)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    ranks = [json.loads((tmp_path / f"fsdp-rank{r}.json").read_text()) for r in (0, 1)]
    for version in ("fsdp", "fsdp2"):
        a, b = (r[version] for r in ranks)
        assert a["kind"] == b["kind"] == version
        assert a["max_diff"] < 1e-5 and b["max_diff"] < 1e-5
        # 2 probes x 8 masks per rank in chunks of 3: 3 passes each, the same on both ranks
        assert a["forwards"] == b["forwards"] == 2 * 3

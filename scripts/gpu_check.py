#!/usr/bin/env python
"""One prepared command that turns a lent GPU's minutes into correctness checks and timings.

An accelerator is lent to some sessions only, for about 15 minutes in all, so everything
that needs one is measured by this single script, tested beforehand on the CPU
(``--device cpu --tiny``, ``tests/test_gpu_check.py``). On the device::

    python scripts/gpu_check.py --budget-s 480            # default --out docs/results/gpu/
    python scripts/gpu_check.py --device cpu --tiny --out /tmp/gpucheck   # the CPU rehearsal

The exact AND-OR fit needs ``highspy``; a machine without it (and without network) can be
given its wheel (``pip download highspy --only-binary=:all: -d .whl`` here, then
``pip install --no-index .whl/*.whl`` there). Without it ``fit_and_or`` falls back to the
approximate ``admm-pdhg`` solver, and the JSON says so under ``skipped``. The package is
imported from this checkout, so it need not be installed there.

What each section measures, in this order (the largest sizes come last, so they are the
ones dropped when the budget runs short; every section is estimated before it starts and
skipped, with the reason recorded, when the remaining budget would not cover it):

1. **Correctness on the device.** First a short ``Trainer`` run of a tiny LoRA Llama,
   twice, without and with the ``InteractionCallback``, under deterministic algorithms (on
   CUDA with ``CUBLAS_WORKSPACE_CONFIG=:4096:8``, for this check only; it runs first so
   that cuBLAS starts under that setting): every loss and grad norm and the final weights
   must be identical, and no probe point may be skipped. Then, on a small Llama in fp32
   (a large init, so that masks move the values): the values of every mask on the device
   equal the CPU's (within ``VALUE_RTOL`` times the largest ``|v|``, at least that much
   absolute; TF32 off), the prefix-tree and full-pass paths of the value engine agree
   (same tolerance), the AND-OR fit of the device values equals the fit of the CPU values
   (within ``FIT_RTOL`` times the probe's largest ``|I|``), and bf16 probing against fp32
   (max / mean value error, Jaccard of the salient sets: information, not a check).
2. **Timings at LLM size, random weights, bf16** (Llama-3.2-1B, Qwen2.5-1.5B, Llama-2-7B
   and Qwen2.5-7B shapes built from transformers configs directly on the device, LoRA
   r 8 on q/k/v/o attached as in a real run): masked inputs per second through
   ``ValueExtractor`` with the prefix tree and with full passes, for 8 probes x 8 players
   and 16 x 10 on ~128-token prompts of synthetic words (players chosen as words, as
   ``scripts/bench_probe.py`` does), with the peak memory; one LoRA training step
   (batch 4 x 512, AdamW); the host-CPU fit time per point and per probe at n = 8 and 10
   on all usable cores (random games and the first model's values); and the overhead of
   the default schedule on a 3,000-step run from these numbers only:
   ``points x (probe s + fit s) / (3000 x step s)``, one GPU at batch 4 x 512.
3. **Fit overlap**: the callback fits after the forward passes of a point (serial); the
   overlapped variant fits point k in a worker thread while the device computes point
   k + 1. Both are timed on the first model at the larger setting; ``fit_share`` says how
   much of a serial point the fit is (whether it is on the critical path at all).

Output: a markdown report (printed, and written with ``--out DIR`` as
``DIR/gpu_check_<date>.md`` with ``DIR/gpu_check_<date>.json``); the last stdout line is one
JSON object with ``device``, ``versions``, ``values``, ``fit``, ``train``, ``overhead`` and
``skipped``. The exit status is 0 when every correctness check passed, 1 otherwise.
``--tiny`` runs the same code at tiny sizes (tiny Llama/Qwen2 configs, a few probes of
4-6 players, ~32-token prompts, a 2 x 64 training step): in well under two minutes on a
2-core CPU, where the "device" is the CPU itself.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import datetime
import gc
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_MODE", "disabled")

ROOT = Path(__file__).resolve().parents[1]
for _path in (ROOT, ROOT / "scripts"):  # the package from this checkout; bench_probe's prompts
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

import torch  # noqa: E402

#: Values on two devices (or two paths) agree within this fraction of the table's largest
#: ``|v|`` (and at least this much absolute): fp32 with different reduction orders.
VALUE_RTOL = 1e-4
#: Fits of two value tables agree within this fraction of the probe's largest ``|I|``.
FIT_RTOL = 1e-3
#: Run length of the overhead projection (the default schedule is scaled to it).
OVERHEAD_STEPS = 3000


# ---------------------------------------------------------------------------- sizes
@dataclass(frozen=True)
class Shape:
    """A decoder's shape, enough for a transformers config with random weights."""

    name: str
    family: str  # "llama" or "qwen2"
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    mlp: int
    vocab: int
    tie: bool


@dataclass(frozen=True)
class Setup:
    """One probe point: ``probes`` prompts of ~``prompt_tokens`` tokens, ``n`` players each."""

    name: str
    probes: int
    n: int
    prompt_tokens: int
    target_tokens: int


@dataclass(frozen=True)
class Sizes:
    """Everything that differs between the device run and the ``--tiny`` rehearsal."""

    check_model: Shape
    check_setup: Setup
    loss_steps: int
    models: tuple[Shape, ...]
    setups: tuple[Setup, ...]
    train_batch: int
    train_length: int
    warmup_steps: int
    timed_steps: int
    overlap_points: int
    slice_s: float  # at most this long per throughput measurement (then fewer probes)


FULL = Sizes(
    check_model=Shape("check-llama-h256x4", "llama", 256, 4, 4, 4, 1024, 512, False),
    check_setup=Setup("4x8", 4, 8, 48, 4),
    loss_steps=20,
    models=(
        Shape("llama-3.2-1b", "llama", 2048, 16, 32, 8, 8192, 128_256, True),
        Shape("qwen2.5-1.5b", "qwen2", 1536, 28, 12, 2, 8960, 151_936, True),
        Shape("llama-2-7b", "llama", 4096, 32, 32, 32, 11008, 32_000, False),
        Shape("qwen2.5-7b", "qwen2", 3584, 28, 28, 4, 18944, 152_064, False),
    ),
    setups=(Setup("8x8", 8, 8, 128, 8), Setup("16x10", 16, 10, 128, 8)),
    train_batch=4,
    train_length=512,
    warmup_steps=2,
    timed_steps=5,
    overlap_points=3,
    slice_s=20.0,
)
TINY = Sizes(
    check_model=Shape("check-llama-h32x2", "llama", 32, 2, 4, 2, 64, 128, False),
    check_setup=Setup("2x5", 2, 5, 24, 3),
    loss_steps=10,
    models=(
        Shape("llama-tiny", "llama", 64, 2, 4, 2, 128, 1024, False),
        Shape("qwen2-tiny", "qwen2", 64, 2, 4, 2, 128, 1024, True),
    ),
    setups=(Setup("2x4", 2, 4, 32, 4), Setup("3x6", 3, 6, 32, 4)),
    train_batch=2,
    train_length=64,
    warmup_steps=1,
    timed_steps=3,
    overlap_points=2,
    slice_s=5.0,
)


# ---------------------------------------------------------------------------- budget
class Budget:
    """Seconds left of ``--budget-s``; a section starts only if its estimate fits."""

    def __init__(self, seconds: float) -> None:
        self.total = seconds
        self.start = time.perf_counter()
        self.skipped: list[dict[str, str]] = []

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def left(self) -> float:
        return self.total - self.elapsed()

    def admit(self, section: str, what: str, estimate: float) -> bool:
        """True if ``estimate`` seconds fit in what is left; else record why it was skipped."""
        if estimate <= self.left():
            return True
        self.skip(
            section, f"{what}: estimated {estimate:.0f} s, {max(0.0, self.left()):.0f} s left"
        )
        return False

    def skip(self, section: str, reason: str) -> None:
        self.skipped.append({"section": section, "reason": reason})
        print(f"[gpu_check] skipped {section}: {reason}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------- device
def sync(device: torch.device) -> None:
    """Wait for queued kernels, so that wall time measures the work (CUDA only)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_gib(device: torch.device) -> float | None:
    """Peak allocated GPU memory since the last reset; None off CUDA (not measured)."""
    if device.type != "cuda":
        return None
    return torch.cuda.max_memory_allocated(device) / 2**30


def free_device(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


@contextlib.contextmanager
def deterministic(device: torch.device) -> Iterator[None]:
    """Deterministic algorithms (and cuBLAS's fixed workspace on CUDA), restored after."""
    before = torch.are_deterministic_algorithms_enabled()
    env = os.environ.get("CUBLAS_WORKSPACE_CONFIG")
    if device.type == "cuda":
        os.environ["CUBLAS_WORKSPACE_CONFIG"] = ":4096:8"
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before)
        if device.type == "cuda":
            if env is None:
                os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)
            else:
                os.environ["CUBLAS_WORKSPACE_CONFIG"] = env


@contextlib.contextmanager
def exact_fp32(device: torch.device) -> Iterator[None]:
    """No TF32 in fp32 matrix products while device and CPU values are compared."""
    if device.type != "cuda":
        yield
        return
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


# ---------------------------------------------------------------------------- data
def word_tokenizer() -> Any:
    """A fast word-level tokenizer over bench_probe's words: offsets, BOS, pad; no download."""
    from bench_probe import WORDS  # type: ignore[import-not-found]
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    special = ["[PAD]", "[UNK]", "[BOS]", "[EOS]"]
    fillers = ["the", "a", "of", "and", "to", "in", "was", "with"]
    words = special + sorted(set(WORDS) | set(fillers)) + [".", ",", ":"]
    core = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    core.post_processor = processors.TemplateProcessing(
        single="[BOS] $A", special_tokens=[("[BOS]", words.index("[BOS]"))]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token="[BOS]",
        eos_token="[EOS]",
        pad_token="[PAD]",
        unk_token="[UNK]",
    )


def make_probes(tokenizer: Any, setup: Setup, seed: int) -> list[Any]:
    """``setup.probes`` probes: bench_probe's synthetic prompts, ``n`` word players spread."""
    from bench_probe import WORDS, make_prompt  # type: ignore[import-not-found]

    from sft_interaction_callback.probing import Probe, select_players

    probes = []
    for i in range(setup.probes):
        prompt = make_prompt(tokenizer, setup.prompt_tokens, seed + i)
        target = " ".join(WORDS[(seed + i + k) % len(WORDS)] for k in range(setup.target_tokens))
        players = select_players(prompt, setup.n)
        probes.append(Probe(prompt, " " + target, players, id=f"{setup.name}-{i}"))
    return probes


def build_lm(shape: Shape, dtype: torch.dtype, device: torch.device, seed: int) -> Any:
    """A causal LM of ``shape`` with random weights, created in ``dtype`` on ``device``."""
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    config_cls, model_cls = {
        "llama": (LlamaConfig, LlamaForCausalLM),
        "qwen2": (Qwen2Config, Qwen2ForCausalLM),
    }[shape.family]
    config = config_cls(
        vocab_size=shape.vocab,
        hidden_size=shape.hidden,
        intermediate_size=shape.mlp,
        num_hidden_layers=shape.layers,
        num_attention_heads=shape.heads,
        num_key_value_heads=shape.kv_heads,
        max_position_embeddings=4096,
        tie_word_embeddings=shape.tie,
        pad_token_id=0,
    )
    torch.manual_seed(seed)
    with torch.device(device):
        try:
            model = model_cls._from_config(config, dtype=dtype)
        except TypeError:  # transformers 4: torch_dtype
            model = model_cls._from_config(config, torch_dtype=dtype)
    if next(model.parameters()).device.type != device.type:  # a version that ignored the context
        model = model.to(device)
    return model.eval()


def add_lora(model: Any, r: int = 8, dropout: float = 0.05, targets: tuple[str, ...] = ()) -> Any:
    """The model with PEFT LoRA adapters, as a run would probe and train it."""
    from peft import LoraConfig, get_peft_model

    targets = targets or ("q_proj", "k_proj", "v_proj", "o_proj")
    config = LoraConfig(r=r, lora_alpha=2 * r, lora_dropout=dropout, target_modules=list(targets))
    return get_peft_model(model, config)


def n_params(model: Any) -> int:
    return sum(p.numel() for p in model.parameters())


# ---------------------------------------------------------------------------- values
def extractor(tokenizer: Any, prefix: bool) -> Any:
    """The engine the callback uses, with the forward path fixed instead of timed."""
    from sft_interaction_callback.engine.extractor import ValueExtractor

    ext = ValueExtractor(tokenizer, kind="causal", baseline="pad")
    ext.prefix_sharing = prefix
    return ext


def values_of(model: Any, tokenizer: Any, probes: list[Any], prefix: bool) -> torch.Tensor:
    """``v [probes, 2**n]`` on the CPU, through ``ValueExtractor.values``."""
    with torch.no_grad():
        return extractor(tokenizer, prefix).values(model, probes).float().cpu()


def compare_values(a: torch.Tensor, b: torch.Tensor) -> dict[str, Any]:
    """Max / mean ``|a - b|`` and the pass flag at ``VALUE_RTOL`` of the larger table."""
    diff = (a.double() - b.double()).abs()
    scale = max(1.0, float(a.abs().max()), float(b.abs().max()))
    tol = VALUE_RTOL * scale
    return {
        "max_abs": float(diff.max()),
        "mean_abs": float(diff.mean()),
        "max_abs_v": scale,
        "tolerance": tol,
        "bitwise_equal": bool(torch.equal(a, b)),
        "passed": bool(float(diff.max()) <= tol),
    }


def jaccard(a: torch.Tensor, b: torch.Tensor) -> list[float]:
    """Per-row Jaccard index of two boolean masks (1 where both are empty)."""
    inter = (a & b).sum(-1).double()
    union = (a | b).sum(-1).double()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union)).tolist()


def compare_fits(v_ref: torch.Tensor, v_other: torch.Tensor) -> dict[str, Any]:
    """Fit both value tables on the host (fit_and_or) and compare interactions and salience."""
    from sft_interaction_callback.andor import fit_and_or, salient
    from sft_interaction_callback.andor.decomposition import resolve_solver

    ref, other = fit_and_or(v_ref), fit_and_or(v_other)
    a, b = ref.concatenated().double(), other.concatenated().double()
    scale = a.abs().amax(-1).clamp(min=1e-12)
    rel = ((a - b).abs().amax(-1) / scale).tolist()
    s_ref = salient(ref.concatenated(), concatenated=True)
    s_other = salient(other.concatenated(), concatenated=True)
    return {
        "solver": resolve_solver("default", ref.i_and.shape[-1].bit_length() - 1),
        "max_rel_diff": max(rel),
        "tolerance": FIT_RTOL,
        "bitwise_equal": bool(torch.equal(a, b)),
        "salient_jaccard": jaccard(s_ref, s_other),
        "gap_max": float(max(ref.gap.max(), other.gap.max())),
        "passed": bool(max(rel) <= FIT_RTOL),
    }


def check_values(
    sizes: Sizes, device: torch.device, tokenizer: Any, seed: int
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Section 1a: device vs CPU, prefix vs full, fits, bf16 vs fp32 on a small fp32 model."""
    from sft_interaction_callback.andor import fit_and_or, salient

    cpu_model = build_lm(sizes.check_model, torch.float32, torch.device("cpu"), seed)
    with torch.no_grad():  # a larger init than 0.02, so that masking visibly moves the values
        for p in cpu_model.parameters():
            if p.dim() == 2:
                p.mul_(4.0)
    dev_model = copy.deepcopy(cpu_model).to(device)
    probes = make_probes(tokenizer, sizes.check_setup, seed)
    with exact_fp32(device):
        v_cpu_full = values_of(cpu_model, tokenizer, probes, prefix=False)
        v_cpu_tree = values_of(cpu_model, tokenizer, probes, prefix=True)
        v_dev_full = values_of(dev_model, tokenizer, probes, prefix=False)
        v_dev_tree = values_of(dev_model, tokenizer, probes, prefix=True)
    bf16_model = copy.deepcopy(dev_model).to(torch.bfloat16)
    v_bf16 = values_of(bf16_model, tokenizer, probes, prefix=True)
    del bf16_model, dev_model
    free_device(device)

    fp32_fit, bf16_fit = fit_and_or(v_dev_tree), fit_and_or(v_bf16)
    sal32 = salient(fp32_fit.concatenated(), concatenated=True)
    sal16 = salient(bf16_fit.concatenated(), concatenated=True)
    err = (v_bf16.double() - v_dev_tree.double()).abs()
    spread = (v_dev_tree.amax(-1) - v_dev_tree.amin(-1)).double().clamp(min=1e-12)
    jac = jaccard(sal32, sal16)
    values = {
        "model": sizes.check_model.name,
        "setup": asdict(sizes.check_setup),
        "device_vs_cpu": {
            "full": compare_values(v_cpu_full, v_dev_full),
            "prefix": compare_values(v_cpu_tree, v_dev_tree),
        },
        "prefix_vs_full": {
            "device": compare_values(v_dev_full, v_dev_tree),
            "cpu": compare_values(v_cpu_full, v_cpu_tree),
        },
        "bf16_vs_fp32": {
            "max_abs": float(err.max()),
            "mean_abs": float(err.mean()),
            "max_rel_to_range": float((err.amax(-1) / spread).max()),
            "salient_jaccard": jac,
            "salient_jaccard_mean": statistics.fmean(jac),
            "salient_jaccard_min": min(jac),
        },
    }
    for group in ("device_vs_cpu", "prefix_vs_full"):
        values[group]["passed"] = all(c["passed"] for c in values[group].values())
    fits = compare_fits(v_cpu_full, v_dev_full)
    return values, fits


# ---------------------------------------------------------------------------- losses
def check_losses(sizes: Sizes, device: torch.device, tokenizer: Any, seed: int) -> dict[str, Any]:
    """Section 1b: a tiny LoRA Llama trained twice, without and with the callback."""
    from bench_probe import make_prompt  # type: ignore[import-not-found]
    from transformers import Trainer, TrainingArguments

    from sft_interaction_callback import InteractionCallback
    from sft_interaction_callback.keys import SKIPPED_KEY

    setup = Setup("loss-probes", 2, 4, 16, 1)
    probes = make_probes(tokenizer, setup, seed + 100)
    rows = []
    for i in range(8):
        prompt = tokenizer(make_prompt(tokenizer, setup.prompt_tokens, seed + 200 + i)).input_ids
        target = tokenizer(" " + ("river", "garden", "window", "winter")[i % 4]).input_ids[1:]
        rows.append({"input_ids": prompt + target, "labels": [-100] * len(prompt) + target})
    pad = tokenizer.pad_token_id

    def collate(batch: list[dict[str, list[int]]]) -> dict[str, torch.Tensor]:
        width = max(len(x["input_ids"]) for x in batch)

        def padded(key: str, value: int) -> torch.Tensor:
            return torch.tensor([x[key] + [value] * (width - len(x[key])) for x in batch])

        ids = padded("input_ids", pad)
        return {"input_ids": ids, "labels": padded("labels", -100), "attention_mask": ids != pad}

    def run(with_callback: bool, out: Path) -> tuple[list[tuple[float, ...]], Any, Any]:
        shape = Shape("loss-llama", "llama", 32, 2, 4, 2, 64, len(tokenizer), False)
        model = build_lm(shape, torch.float32, torch.device("cpu"), seed)
        with torch.no_grad():
            for p in model.parameters():
                if p.dim() == 2:
                    p.mul_(4.0)
        model = add_lora(model, r=4, dropout=0.1, targets=("q_proj", "v_proj"))
        args = TrainingArguments(
            output_dir=str(out),
            max_steps=sizes.loss_steps,
            per_device_train_batch_size=2,
            learning_rate=5e-3,
            logging_steps=1,
            save_strategy="no",
            report_to=[],
            seed=seed,
            use_cpu=device.type == "cpu",
            disable_tqdm=True,
            dataloader_num_workers=0,
        )
        trainer = Trainer(
            model=model,
            args=args,
            train_dataset=rows,
            data_collator=collate,
            processing_class=tokenizer,
        )
        cb = None
        if with_callback:
            cb = InteractionCallback(
                trainer=trainer,
                probes=probes,
                n_players=setup.n,
                num_probes=setup.probes,
                template=None,
                schedule=5,
                early_stopping=False,
            )
        with contextlib.redirect_stdout(sys.stderr):  # the Trainer prints its log dicts
            trainer.train()
        history = trainer.state.log_history
        losses = [(e["step"], e["loss"], e["grad_norm"]) for e in history if "loss" in e]
        return losses, trainer, cb

    with tempfile.TemporaryDirectory() as tmp, deterministic(device):
        plain, plain_trainer, _ = run(False, Path(tmp) / "plain")
        tracked, tracked_trainer, cb = run(True, Path(tmp) / "tracked")
    same_weights = all(
        torch.equal(a.detach().cpu(), b.detach().cpu())
        for (_, a), (_, b) in zip(
            plain_trainer.model.named_parameters(),
            tracked_trainer.model.named_parameters(),
            strict=True,
        )
    )
    history = tracked_trainer.state.log_history
    skipped = max([float(e[SKIPPED_KEY]) for e in history if SKIPPED_KEY in e], default=0.0)
    probe_steps = list(cb.state_dict()["meta"].get("probe_steps", []))
    identical = plain == tracked and len(plain) == sizes.loss_steps
    return {
        "steps": sizes.loss_steps,
        "losses_identical": identical,
        "weights_identical": same_weights,
        "probe_steps": probe_steps,
        "probe_points_skipped": int(skipped),
        "first_loss": plain[0][1] if plain else None,
        "last_loss": plain[-1][1] if plain else None,
        "passed": bool(identical and same_weights and skipped == 0 and len(probe_steps) > 1),
    }


# ---------------------------------------------------------------------------- timings
def time_values(
    model: Any, tokenizer: Any, probes: list[Any], prefix: bool, device: torch.device, cap: float
) -> dict[str, Any]:
    """Masked inputs per second through ``ValueExtractor.values`` on as many probes as
    fit in ``cap`` seconds (at least one), and the peak memory."""
    from sft_interaction_callback.probing import CausalLMValue

    n = probes[0].n_players
    warm = CausalLMValue(model, tokenizer, prefix_sharing=prefix)
    warm(probes[0], torch.arange(min(64, 1 << n)))  # CUDA context, kernels, allocator
    sync(device)
    del warm
    ext = extractor(tokenizer, prefix)
    reset_peak(device)
    start = time.perf_counter()
    parts = [ext.values(model, probes[:1])]
    sync(device)
    first = time.perf_counter() - start
    more = max(0, min(len(probes) - 1, int((cap - first) / max(first, 1e-9))))
    if more:
        parts.append(ext.values(model, probes[1 : 1 + more]))
        sync(device)
    seconds = time.perf_counter() - start
    timed = 1 + more
    rate = timed * (1 << n) / seconds
    return {
        "path": "prefix" if prefix else "full",
        "probes_timed": timed,
        "masks": timed * (1 << n),
        "seconds": seconds,
        "masks_per_s": rate,
        "seconds_per_point": len(probes) * (1 << n) / rate,
        "peak_gib": peak_gib(device),
        "batch_size": ext.batch_size,
        "v": torch.cat(parts).float().cpu(),
    }


def time_train_step(model: Any, sizes: Sizes, vocab: int, device: torch.device) -> dict[str, Any]:
    """Seconds of one LoRA step (forward, backward, AdamW) at ``train_batch x train_length``."""
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    g = torch.Generator().manual_seed(0)
    shape = (sizes.train_batch, sizes.train_length)
    ids = torch.randint(0, vocab, shape, generator=g).to(device)
    times, loss = [], float("nan")
    reset_peak(device)
    for i in range(sizes.warmup_steps + sizes.timed_steps):
        sync(device)
        start = time.perf_counter()
        out = model(input_ids=ids, labels=ids)
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync(device)
        if i >= sizes.warmup_steps:
            times.append(time.perf_counter() - start)
        loss = float(out.loss.detach())
    model.eval()
    del opt, out
    return {
        "seconds_per_step": statistics.median(times),
        "steps_timed": len(times),
        "tokens_per_step": shape[0] * shape[1],
        "trainable_params": sum(p.numel() for p in params),
        "peak_gib": peak_gib(device),
        "loss": loss,
    }


def time_fits(setups: tuple[Setup, ...], model_v: dict[int, torch.Tensor], seed: int) -> list:
    """Host-CPU seconds of ``fit_and_or`` per point and per probe, on all usable cores."""
    from sft_interaction_callback.andor import fit_and_or
    from sft_interaction_callback.andor.decomposition import resolve_solver
    from sft_interaction_callback.cpus import usable_cpus

    rows = []
    g = torch.Generator().manual_seed(seed)
    for setup in setups:
        n, count = setup.n, setup.probes
        games = {"random": torch.randn(count, 1 << n, generator=g)}
        if n in model_v:
            v = model_v[n]
            games["model"] = v.repeat(math.ceil(count / len(v)), 1)[:count]
        fit_and_or(games["random"][:1])  # the LP's structure for n, built once per run
        for name, v in games.items():
            start = time.perf_counter()
            inter = fit_and_or(v)
            seconds = time.perf_counter() - start
            rows.append(
                {
                    "setup": setup.name,
                    "n": n,
                    "probes": count,
                    "games": name,
                    "solver": resolve_solver("default", n),
                    "threads": usable_cpus(),
                    "seconds_per_point": seconds,
                    "seconds_per_probe": seconds / count,
                    "gap_max": float(inter.gap.max()),
                }
            )
    return rows


def time_overlap(
    model: Any, tokenizer: Any, probes: list[Any], prefix: bool, device: torch.device, points: int
) -> dict[str, Any]:
    """Wall time per point: values then fit (the callback), and the fit of point k in a
    worker thread while the device computes point k + 1."""
    ext = extractor(tokenizer, prefix)
    ext.interactions(ext.values(model, probes[:1]))  # baseline, kernels, the LP's structure
    sync(device)
    forward = fit = 0.0
    start = time.perf_counter()
    for _ in range(points):
        t0 = time.perf_counter()
        v = ext.values(model, probes)
        sync(device)
        t1 = time.perf_counter()
        ext.interactions(v)
        forward, fit = forward + t1 - t0, fit + time.perf_counter() - t1
    serial = (time.perf_counter() - start) / points
    with ThreadPoolExecutor(max_workers=1) as pool:
        start = time.perf_counter()
        pending = None
        for _ in range(points):
            v = ext.values(model, probes)
            sync(device)
            if pending is not None:
                pending.result()
            pending = pool.submit(ext.interactions, v)
        if pending is not None:
            pending.result()
        overlapped = (time.perf_counter() - start) / points
    return {
        "points": points,
        "path": "prefix" if prefix else "full",
        "values_seconds_per_point": forward / points,
        "fit_seconds_per_point": fit / points,
        "fit_share": fit / (forward + fit),
        "serial_seconds_per_point": serial,
        "overlapped_seconds_per_point": overlapped,
        "saving": 1.0 - overlapped / serial,
    }


def time_model(
    shape: Shape,
    sizes: Sizes,
    device: torch.device,
    tokenizer: Any,
    budget: Budget,
    seed: int,
    first: bool,
    result: dict[str, Any],
) -> dict[str, float]:
    """Section 2 for one model: build, LoRA, throughput of both paths at both setups, (the
    fit timings and the overlap on the first model), one training step. Returns the
    seconds each part took, for the next model's estimate."""
    took: dict[str, float] = {}
    start = time.perf_counter()
    model = add_lora(build_lm(shape, torch.bfloat16, device, seed))
    sync(device)
    took["build"] = time.perf_counter() - start
    params = n_params(model.get_base_model()) - sum(
        p.numel() for p in model.parameters() if p.requires_grad
    )
    info = {"model": shape.name, "params": params, "shape": asdict(shape)}
    info["sharing_obstacle"] = _sharing_obstacle(model)
    result["models"].append(info)
    model_v: dict[int, torch.Tensor] = {}
    per_point: dict[str, float] = {}
    for setup in sizes.setups:
        probes = make_probes(tokenizer, setup, seed)
        for prefix in (True, False):
            what = f"{shape.name} {setup.name} {'prefix' if prefix else 'full'}"
            if not budget.admit("values", what, sizes.slice_s + 2):
                continue
            t0 = time.perf_counter()
            row = time_values(model, tokenizer, probes, prefix, device, sizes.slice_s)
            took[f"{setup.name}-{row['path']}"] = time.perf_counter() - t0
            model_v.setdefault(setup.n, row.pop("v"))
            result["values"]["timings"].append({"model": shape.name, "setup": setup.name, **row})
            best = per_point.get(setup.name)
            per_point[setup.name] = min(best or math.inf, row["seconds_per_point"])
    if first:
        if budget.admit("fit", "host-CPU fit timings", 5.0 * len(sizes.setups)):
            result["fit"]["timings"] = time_fits(sizes.setups, model_v, seed)
        _overlap(model, shape, sizes, device, tokenizer, budget, seed, per_point, result)
    t0 = time.perf_counter()
    if budget.admit("train", f"{shape.name} LoRA step", 3.0 + took["build"]):
        row = time_train_step(model, sizes, shape.vocab, device)
        result["train"]["steps"].append({"model": shape.name, **row})
    took["train"] = time.perf_counter() - t0
    del model
    free_device(device)
    return took


def _sharing_obstacle(model: Any) -> str | None:
    from sft_interaction_callback.probing._model import ModelAdapter

    return ModelAdapter(model).sharing_obstacle()


def _overlap(
    model: Any,
    shape: Shape,
    sizes: Sizes,
    device: torch.device,
    tokenizer: Any,
    budget: Budget,
    seed: int,
    per_point: dict[str, float],
    result: dict[str, Any],
) -> None:
    """Section 3 on the first model, with its faster forward path, at the largest setup
    whose serial and overlapped runs take at most a tenth of the budget (else smaller)."""
    chosen = None
    for setup in reversed(sizes.setups):
        rows = [r for r in result["values"]["timings"] if r["model"] == shape.name]
        rows = [r for r in rows if r["setup"] == setup.name]
        fits = [r for r in result["fit"].get("timings", []) if r["setup"] == setup.name]
        if not rows:
            continue
        fit_s = max((r["seconds_per_point"] for r in fits), default=0.0)
        estimate = 2 * (sizes.overlap_points + 1) * (per_point[setup.name] + fit_s) + 2
        chosen = setup, rows, estimate
        if estimate <= 0.1 * budget.total:
            break
    if chosen is None:
        budget.skip("fit", f"overlap: no throughput was measured on {shape.name}")
        return
    setup, rows, estimate = chosen
    if not budget.admit("fit", f"overlap on {shape.name} {setup.name}", estimate):
        return
    prefix = min(rows, key=lambda r: r["seconds_per_point"])["path"] == "prefix"
    probes = make_probes(tokenizer, setup, seed)
    row = time_overlap(model, tokenizer, probes, prefix, device, sizes.overlap_points)
    result["fit"]["overlap"] = {"model": shape.name, "setup": setup.name, **row}


# ---------------------------------------------------------------------------- overhead
def overhead(result: dict[str, Any]) -> dict[str, Any]:
    """``points x (probe s + fit s) / (3000 x step s)`` from the measured numbers only."""
    from sft_interaction_callback.tracking import ProbeSchedule

    points = len(ProbeSchedule(None, max_steps=OVERHEAD_STEPS).steps(OVERHEAD_STEPS))
    rows = []
    fits = result["fit"].get("timings", [])
    for step in result["train"]["steps"]:
        model = step["model"]
        for setup in {r["setup"]: r for r in result["values"]["timings"]}:
            timed = [
                r
                for r in result["values"]["timings"]
                if r["model"] == model and r["setup"] == setup
            ]
            fit_rows = [r for r in fits if r["setup"] == setup]
            if not timed or not fit_rows:
                continue
            best = min(timed, key=lambda r: r["seconds_per_point"])
            probe_s = best["seconds_per_point"]
            fit_s = max(r["seconds_per_point"] for r in fit_rows)
            step_s = step["seconds_per_step"]
            rows.append(
                {
                    "model": model,
                    "setup": setup,
                    "points": points,
                    "path": best["path"],
                    "probe_seconds_per_point": probe_s,
                    "fit_seconds_per_point": fit_s,
                    "seconds_per_step": step_s,
                    "overhead": points * (probe_s + fit_s) / (OVERHEAD_STEPS * step_s),
                }
            )
    return {
        "max_steps": OVERHEAD_STEPS,
        "points": points,
        "formula": "points x (probe s + fit s) / (max_steps x step s); probe s: the faster "
        "path; fit s: the slower of random and model games; one device, the measured batch",
        "rows": rows,
    }


# ---------------------------------------------------------------------------- report
def _f(x: Any, digits: int = 3) -> str:
    if x is None:
        return "-"
    if isinstance(x, bool):
        return "yes" if x else "NO"
    if isinstance(x, float):
        if abs(x) >= 100:
            return f"{x:,.0f}"
        return f"{x:.{digits}g}" if abs(x) < 1e-2 else f"{x:.{digits}f}"
    return str(x)


def _count(n: int) -> str:
    return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.2f}M"


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(_f(c) for c in row) + " |" for row in rows]
    return out + [""]


def markdown(r: dict[str, Any]) -> str:
    """The report: correctness, throughput, training step, fit, overlap, overhead, skips."""
    v, fit, train = r["values"], r["fit"], r["train"]
    lines = [
        f"# gpu_check {r['date']} on {r['device']} ({r['mode']})",
        "",
        "versions: " + ", ".join(f"{k} {x}" for k, x in r["versions"].items()),
        f"wall {r['wall_s']:.0f} s of a {r['budget_s']:.0f} s budget; all checks passed: "
        f"{_f(r['correct'])}",
        "",
        "## Correctness",
        "",
    ]
    checks: list[list[Any]] = []
    c = v.get("correctness", {})
    for group, label in (("device_vs_cpu", "device vs CPU"), ("prefix_vs_full", "prefix vs full")):
        for path, x in c.get(group, {}).items():
            if isinstance(x, dict):
                checks.append(
                    [f"values {label} ({path})", x["max_abs"], x["tolerance"], x["passed"]]
                )
    if "correctness" in fit:
        x = fit["correctness"]
        checks.append(
            [f"fit device vs CPU ({x['solver']})", x["max_rel_diff"], x["tolerance"], x["passed"]]
        )
    if "losses" in train:
        x = train["losses"]
        checks.append(
            [
                f"losses without/with callback ({x['steps']} steps, "
                f"{len(x['probe_steps'])} probe points, {x['probe_points_skipped']} skipped)",
                "identical" if x["losses_identical"] else "DIFFERENT",
                "bitwise",
                x["passed"],
            ]
        )
    lines += _table(["check", "max error", "tolerance", "passed"], checks)
    if "bf16_vs_fp32" in c:
        x = c["bf16_vs_fp32"]
        lines += _table(
            ["bf16 vs fp32", "max abs", "mean abs", "max / range", "salient Jaccard mean", "min"],
            [["values", x["max_abs"], x["mean_abs"], x["max_rel_to_range"],
              x["salient_jaccard_mean"], x["salient_jaccard_min"]]],
        )  # fmt: skip
    if r["models"]:
        lines += ["## Models (random weights, bf16, LoRA r 8 on q/k/v/o)", ""]
        lines += _table(
            ["model", "params", "prefix sharing"],
            [[m["model"], _count(m["params"]), m["sharing_obstacle"] or "yes"]
             for m in r["models"]],
        )  # fmt: skip
    if v["timings"]:
        lines += ["## Masked-input throughput (ValueExtractor.values)", ""]
        lines += _table(
            ["model", "probes x n", "path", "probes timed", "masks/s", "s/point", "peak GiB *"],
            [[t["model"], t["setup"], t["path"], t["probes_timed"], t["masks_per_s"],
              t["seconds_per_point"], t["peak_gib"]] for t in v["timings"]],
        )  # fmt: skip
    if train["steps"]:
        lines += ["## One LoRA training step (AdamW)", ""]
        lines += _table(
            ["model", "tokens/step", "s/step", "trainable params", "peak GiB *"],
            [[t["model"], t["tokens_per_step"], t["seconds_per_step"], t["trainable_params"],
              t["peak_gib"]] for t in train["steps"]],
        )  # fmt: skip
    if fit.get("timings"):
        lines += ["## Host-CPU AND-OR fit (fit_and_or)", ""]
        lines += _table(
            ["probes x n", "games", "solver", "threads", "s/point", "s/probe", "max gap"],
            [[t["setup"], t["games"], t["solver"], t["threads"], t["seconds_per_point"],
              t["seconds_per_probe"], t["gap_max"]] for t in fit["timings"]],
        )  # fmt: skip
    if fit.get("overlap"):
        x = fit["overlap"]
        lines += ["## Fit overlapped with the next point's forward passes", ""]
        lines += _table(
            ["model", "probes x n", "path", "values s", "fit s", "fit share", "serial s/point",
             "overlapped s/point", "saving"],
            [[x["model"], x["setup"], x["path"], x["values_seconds_per_point"],
              x["fit_seconds_per_point"], x["fit_share"], x["serial_seconds_per_point"],
              x["overlapped_seconds_per_point"], x["saving"]]],
        )  # fmt: skip
    o = r["overhead"]
    if o.get("rows"):
        lines += [f"## Overhead of the default schedule ({o['max_steps']:,} steps)", ""]
        lines += [o["formula"] + ".", ""]
        lines += _table(
            ["model", "probes x n", "points", "path", "probe s", "fit s", "step s", "overhead"],
            [[x["model"], x["setup"], x["points"], x["path"], x["probe_seconds_per_point"],
              x["fit_seconds_per_point"], x["seconds_per_step"], f"{100 * x['overhead']:.1f}%"]
             for x in o["rows"]],
        )  # fmt: skip
    if v["timings"] or train["steps"]:
        lines += ["\\* torch.cuda.max_memory_allocated, the weights included; - off CUDA.", ""]
    if r["skipped"]:
        lines += ["## Skipped", ""]
        lines += _table(["section", "reason"], [[s["section"], s["reason"]] for s in r["skipped"]])
    return "\n".join(lines)


# ---------------------------------------------------------------------------- main
def versions() -> dict[str, str]:
    import peft
    import transformers

    out = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
    }
    if torch.version.cuda:
        out["cuda"] = str(torch.version.cuda)
    try:
        from importlib.metadata import version

        import highspy  # noqa: F401

        out["highspy"] = version("highspy")
    except Exception:  # noqa: BLE001 - absent or unversioned: the fit falls back
        out["highspy"] = "missing"
    return out


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    from sft_interaction_callback.cpus import usable_cpus

    return f"cpu ({platform.machine()}, {usable_cpus()} usable cores)"


def guarded(budget: Budget, section: str, fn: Callable[[], Any]) -> Any:
    """Run one section; an exception is recorded as a skip with its reason, never fatal."""
    try:
        return fn()
    except Exception as err:  # noqa: BLE001 - the report must still be written
        budget.skip(section, f"error: {type(err).__name__}: {err}"[:500])
        return None


def run(args: argparse.Namespace) -> dict[str, Any]:
    """All sections in order, within the budget; the result dict of the JSON line."""
    sizes = TINY if args.tiny else FULL
    device = torch.device(args.device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise SystemExit("--device cuda: no CUDA device is visible (use --device cpu --tiny)")
        device = torch.device("cuda", device.index or 0)
        torch.cuda.set_device(device)
    threads = args.threads or (1 if args.tiny and device.type == "cpu" else None)
    if threads:
        torch.set_num_threads(threads)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    budget = Budget(args.budget_s)
    result: dict[str, Any] = {
        "device": device_name(device),
        "versions": versions(),
        "mode": "tiny" if args.tiny else "full",
        "date": datetime.date.today().isoformat(),
        "budget_s": args.budget_s,
        "torch_threads": torch.get_num_threads(),
        "models": [],
        "values": {"timings": []},
        "fit": {},
        "train": {"steps": []},
        "overhead": {},
        "skipped": budget.skipped,
    }
    if result["versions"]["highspy"] == "missing":
        budget.skip("fit", "highspy not installed: fits ran with the approximate admm-pdhg")
    tokenizer = word_tokenizer()

    # The losses first: cuBLAS then creates its first handle under CUBLAS_WORKSPACE_CONFIG.
    if budget.admit("train", "same losses with and without the callback", 60):
        losses = guarded(budget, "train", lambda: check_losses(sizes, device, tokenizer, 0))
        if losses is not None:
            result["train"]["losses"] = losses
    free_device(device)
    if budget.admit("values", "correctness of values and fits", 60 if not args.tiny else 20):
        checked = guarded(budget, "values", lambda: check_values(sizes, device, tokenizer, 0))
        if checked is not None:
            result["values"]["correctness"], result["fit"]["correctness"] = checked
    free_device(device)

    last: tuple[int, dict[str, float]] | None = None
    for i, shape in enumerate(sizes.models):
        params = _approx_params(shape)
        estimate = _estimate(shape, sizes, params, last, first=i == 0, budget_s=args.budget_s)
        if not budget.admit("values", f"{shape.name} timings", estimate):
            continue
        took = guarded(
            budget,
            "values",
            lambda shape=shape, i=i: time_model(
                shape, sizes, device, tokenizer, budget, 0, i == 0, result
            ),
        )
        free_device(device)
        if took is not None:
            last = (params, took)
    if "timings" not in result["fit"] and budget.admit("fit", "host-CPU fit timings", 20):
        # no model ran the fit section: time it on random games alone
        fits = guarded(budget, "fit", lambda: time_fits(sizes.setups, {}, 0))
        if fits is not None:
            result["fit"]["timings"] = fits
    result["overhead"] = guarded(budget, "overhead", lambda: overhead(result)) or {}
    if not result["overhead"].get("rows"):
        budget.skip("overhead", "no model has a throughput, a fit time and a training step")
    result["correct"] = all_passed(result)
    result["wall_s"] = budget.elapsed()
    return result


def _approx_params(shape: Shape) -> int:
    """Parameters from the shape (for the estimate, before the model exists)."""
    head_dim = shape.hidden // shape.heads
    attn = 2 * shape.hidden * shape.hidden + 2 * shape.hidden * shape.kv_heads * head_dim
    block = attn + 3 * shape.hidden * shape.mlp
    embed = shape.vocab * shape.hidden * (1 if shape.tie else 2)
    return shape.layers * block + embed


def _estimate(
    shape: Shape,
    sizes: Sizes,
    params: int,
    last: tuple[int, dict[str, float]] | None,
    *,
    first: bool,
    budget_s: float,
) -> float:
    """Seconds of one model's timings: build and training step scaled by parameters from
    the last model measured (a guess for the first), each throughput measurement at its
    cap, and the fit timings and the overlap for the first model."""
    measurements = 2 * len(sizes.setups)
    if last is None:
        build = train = 3.0 + 2.0 * params / 1e9
    else:
        scale = params / max(last[0], 1)
        build = last[1].get("build", 0.0) * scale
        train = last[1].get("train", 0.0) * scale
    extra = 10.0 + 0.1 * budget_s if first else 0.0  # fit timings; the overlap's tenth
    return build + train + measurements * (sizes.slice_s + 2) + extra


def all_passed(r: dict[str, Any]) -> bool:
    """Every correctness check ran and passed (a skipped check is not a pass)."""
    c = r["values"].get("correctness", {})
    checks = [
        c.get("device_vs_cpu", {}).get("passed"),
        c.get("prefix_vs_full", {}).get("passed"),
        r["fit"].get("correctness", {}).get("passed"),
        r["train"].get("losses", {}).get("passed"),
    ]
    return all(x is True for x in checks)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda", help="cuda (default), cuda:1, or cpu")
    ap.add_argument("--tiny", action="store_true", help="tiny sizes (the CPU rehearsal)")
    ap.add_argument("--budget-s", type=float, default=480.0, help="wall-clock budget")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "results" / "gpu")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (tiny CPU: 1)")
    args = ap.parse_args(argv)
    result = run(args)
    report = markdown(result)
    print(report, flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"gpu_check_{result['date']}"
    stem.with_suffix(".md").write_text(report + "\n")
    stem.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, separators=(",", ":")), flush=True)
    return 0 if result["correct"] else 1


if __name__ == "__main__":
    sys.exit(main())

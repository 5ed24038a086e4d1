"""``sft-interactions explain``: the strongest AND / OR interactions of one prompt.

A quick look at what a (local or hub) model encodes for one example, before wiring the
callback into a training run: mask every subset of ``n`` words, fit AND-OR interactions
and print the strongest ones as word sets.
"""

from __future__ import annotations

import argparse
import re
import sys
from typing import Any

from sft_interaction_callback.cli import print_json
from sft_interaction_callback.paths import model_path_problem

HELP = "explain one prompt: strongest AND/OR interactions between its words"


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``explain`` on an ``argparse`` subparsers object."""
    p = subparsers.add_parser("explain", help=HELP, description=HELP)
    p.add_argument("--model", required=True, help="local directory or hub id")
    p.add_argument("--tokenizer", default=None, help="defaults to --model")
    p.add_argument("--prompt", required=True, help="the input text, as the model sees it")
    p.add_argument("--target", default=None, help="response to score (causal LM)")
    p.add_argument("--label", default=None, help="class name or id: use a sequence classifier")
    p.add_argument("--n", type=int, default=10, help="number of word players (default 10)")
    p.add_argument("--players", default=None, help='comma-separated words, e.g. "w1,w2"')
    p.add_argument("--baseline", default="pad", help="pad, unk, mask, zero or mean")
    p.add_argument("--top", type=int, default=15, help="interactions shown per type")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"])
    p.add_argument("--noise-bound", type=float, default=0.02, help="AND-OR noise bound λ")
    p.add_argument("--seed", type=int, default=0, help="seed for randomly initialised heads")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Load, probe, fit, print. Returns a process exit code (2 on bad input)."""
    try:
        result = explain(args)
    except (ValueError, OSError) as err:  # bad input, or a model path/hub id that won't load
        print(f"sft-interactions explain: error: {err}", file=sys.stderr)
        return 2
    if args.json:
        print_json(result)
    else:
        print(_format_text(result, args.top))
    return 0


def explain(args: argparse.Namespace) -> dict[str, Any]:
    """Everything ``run`` prints, as a JSON-ready dict."""
    import torch

    from sft_interaction_callback.andor import fit_and_or
    from sft_interaction_callback.probing import (
        CausalLMValue,
        Probe,
        SequenceClassifierValue,
        select_players,
    )

    model, tokenizer, kind = _load(args)
    if kind == "causal_lm" and not args.target:
        raise ValueError("--target is required for a causal LM (or pass --label for a classifier)")
    target = args.target if kind == "causal_lm" else str(args.label)
    if args.players:
        players = _find_words(
            args.prompt, [w.strip() for w in args.players.split(",") if w.strip()]
        )
    else:
        players = select_players(args.prompt, args.n, tokenizer=tokenizer)
    probe = Probe(args.prompt, target, players, id="explain")
    baseline: Any = args.baseline
    if kind == "causal_lm":
        vf: Any = CausalLMValue(model, tokenizer, baseline=baseline, batch_size=args.batch_size)
    else:
        label = int(args.label) if str(args.label).lstrip("-").isdigit() else args.label
        vf = SequenceClassifierValue(
            model, tokenizer, label=label, baseline=baseline, batch_size=args.batch_size
        )
    v = _values_with_progress(vf, probe, show=not args.no_progress and not args.json)
    fit = fit_and_or(v[None].double().cpu(), noise_bound=args.noise_bound)
    words = probe.words
    n = probe.n_players
    return {
        "model": args.model,
        "kind": kind,
        "prompt": probe.prompt,
        "target": probe.target,
        "label": args.label,
        "baseline": args.baseline,
        "n_players": n,
        "words": words,
        "players": [list(p) for p in probe.players],
        "v_full": float(v[-1]),
        "v_empty": float(v[0]),
        "and": _top(fit.i_and[0], words, args.top),
        "or": _top(fit.i_or[0], words, args.top),
        "objective": float(fit.objective()[0]),
        "noise_bound": args.noise_bound,
        "v": [float(x) for x in v.tolist()],
        "n_masks": 1 << n,
        "device": str(torch.device(vf.device)),
    }


def _load(args: argparse.Namespace) -> tuple[Any, Any, str]:
    import torch
    import transformers
    from transformers import (
        AutoConfig,
        AutoModelForCausalLM,
        AutoModelForSequenceClassification,
        AutoTokenizer,
    )

    for flag, spec in (("--model", args.model), ("--tokenizer", args.tokenizer)):
        problem = model_path_problem(spec, flag)
        if problem is not None and not (flag == "--tokenizer" and "config.json" in problem):
            raise ValueError(problem)
    config = AutoConfig.from_pretrained(args.model)
    archs = getattr(config, "architectures", None) or []
    is_classifier = args.label is not None or any("SequenceClassification" in a for a in archs)
    dtype = {"auto": "auto", "float32": torch.float32, "bfloat16": torch.bfloat16}.get(
        args.dtype, torch.float16
    )
    torch.manual_seed(args.seed)  # a missing classification head is initialised reproducibly
    loader = AutoModelForSequenceClassification if is_classifier else AutoModelForCausalLM
    dtype_kw = "dtype" if int(transformers.__version__.split(".")[0]) >= 5 else "torch_dtype"
    model = loader.from_pretrained(args.model, **{dtype_kw: dtype})
    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    model.to(device).eval()
    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer or args.model)
    return model, tokenizer, "sequence_classifier" if is_classifier else "causal_lm"


def _find_words(prompt: str, words: list[str]) -> list[tuple[int, int]]:
    """Spans of the given words, each the first unused whole-word occurrence."""
    taken: list[tuple[int, int]] = []
    for w in words:
        for m in re.finditer(r"(?<!\w)" + re.escape(w) + r"(?!\w)", prompt):
            if m.span() not in taken:
                taken.append(m.span())
                break
        else:
            raise ValueError(f"--players: {w!r} is not a whole word of the prompt")
    return taken


def _values_with_progress(vf: Any, probe: Any, *, show: bool) -> Any:
    """All ``2**n`` values, in chunks that are whole prefix-tree subtrees, with a bar."""
    import torch
    from tqdm.auto import tqdm

    n = probe.n_players
    total = 1 << n
    low = min(n, 4)  # 16 chunks: masks sharing their lowest bits form one subtree
    v = torch.empty(total, dtype=torch.float32)
    with tqdm(total=total, unit="mask", disable=not show, desc="masks") as bar:
        for c in range(1 << low):
            masks = torch.arange(c, total, 1 << low)
            v[masks] = vf(probe, masks).float().cpu()
            bar.update(len(masks))
    return v


def _top(i: Any, words: list[str], k: int) -> list[dict[str, Any]]:
    """The ``k`` strongest non-empty subsets, by |I|."""
    i = i.detach().double().cpu()
    strength = i.abs().clone()
    strength[0] = -1.0
    order = strength.argsort(descending=True)[: max(k, 0)]
    out = []
    for s in order.tolist():
        if strength[s] <= 0:
            break
        members = [w for b, w in enumerate(words) if (s >> b) & 1]
        out.append({"subset": s, "words": members, "order": len(members), "strength": float(i[s])})
    return out


def _format_text(result: dict[str, Any], top: int) -> str:
    lines = [
        f"{result['kind']}: {result['model']}  target: {result['target']!r}",
        f"players ({result['n_players']}): " + ", ".join(result["words"]),
        f"v(all words) = {result['v_full']:.4f}   v(no words) = {result['v_empty']:.4f}",
    ]
    for kind in ("and", "or"):
        lines.append(f"strongest {kind.upper()} interactions (top {top}):")
        if not result[kind]:
            lines.append("  (none)")
        for item in result[kind]:
            members = ", ".join(item["words"])
            lines.append(f"  {item['strength']:+10.4f}  order {item['order']}  {{{members}}}")
    return "\n".join(lines)

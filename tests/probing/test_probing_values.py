"""The engine's v equals a brute-force reference for every mask, on several model families."""

from __future__ import annotations

import pytest
import torch

from sft_interaction_callback.probing import CausalLMValue, Probe, select_players

PROMPT = "Tell me why the old lighthouse keeper painted every stone blue before winter came."
TARGET = " because storms hide colors"


def _probe(n: int = 5, prompt: str = PROMPT, target: str = TARGET, pid: str = "t") -> Probe:
    return Probe(prompt, target, select_players(prompt, n), id=pid)


@pytest.mark.parametrize("family", ["llama", "qwen2", "gpt2"])
@pytest.mark.parametrize("sharing", [True, False])
def test_engine_matches_brute_force(make_tiny, tokenizer, reference_causal, family, sharing):
    model = make_tiny(family)
    probe = _probe(5)
    vf = CausalLMValue(model, tokenizer, baseline="pad", prefix_sharing=sharing, batch_size=7)
    v = vf(probe)
    ref = reference_causal(model, tokenizer, probe, vf.baseline, range(32))
    assert v.dtype == torch.float32 and v.shape == (32,)
    assert torch.allclose(v.double(), ref, atol=1e-4, rtol=0)
    assert ref.std() > 1e-2, "masking must visibly change the value in this test"


@pytest.mark.parametrize("baseline", ["pad", "unk", "mask", "zero", "mean", "tensor"])
def test_every_named_baseline_matches_brute_force(make_tiny, tokenizer, reference_causal, baseline):
    model = make_tiny("llama")
    probe = _probe(4)
    if baseline == "tensor":
        baseline = torch.randn(model.config.hidden_size, generator=torch.Generator().manual_seed(1))
    shared = CausalLMValue(model, tokenizer, baseline=baseline)
    flat = CausalLMValue(model, tokenizer, baseline=baseline, prefix_sharing=False)
    ref = reference_causal(model, tokenizer, probe, shared.baseline, range(16))
    assert torch.allclose(shared(probe).double(), ref, atol=1e-4, rtol=0)
    assert torch.allclose(flat(probe).double(), ref, atol=1e-4, rtol=0)


def test_named_baselines_are_the_right_vectors(make_tiny, tokenizer):
    model = make_tiny("llama")
    emb = model.get_input_embeddings().weight
    for name, tok_id in [
        ("pad", tokenizer.pad_token_id),
        ("unk", tokenizer.unk_token_id),
        ("mask", tokenizer.mask_token_id),
    ]:
        assert torch.equal(CausalLMValue(model, tokenizer, baseline=name).baseline, emb[tok_id])
    assert torch.count_nonzero(CausalLMValue(model, tokenizer, baseline="zero").baseline) == 0
    assert torch.allclose(CausalLMValue(model, tokenizer, baseline="mean").baseline, emb.mean(0))


@pytest.mark.parametrize("sharing", [True, False])
def test_mask_subsets_in_any_order_with_duplicates(make_tiny, tokenizer, sharing):
    """A distributed layer shards masks: any subset, any order, must give the same numbers."""
    model = make_tiny("qwen2")
    probe = _probe(6)
    vf = CausalLMValue(model, tokenizer, prefix_sharing=sharing, batch_size=5)
    full = vf(probe)
    masks = torch.tensor([63, 0, 17, 17, 5, 40, 63, 2])
    assert torch.allclose(vf(probe, masks), full[masks], atol=1e-5, rtol=0)
    assert vf(probe, torch.tensor([], dtype=torch.long)).shape == (0,)
    shards = [torch.arange(r, 64, 3) for r in range(3)]
    merged = torch.empty(64)
    for s in shards:
        merged[s] = vf(probe, s)
    assert torch.allclose(merged, full, atol=1e-5, rtol=0)


def test_masks_out_of_range_rejected(make_tiny, tokenizer):
    vf = CausalLMValue(make_tiny("llama"), tokenizer)
    with pytest.raises(ValueError, match=r"probe 't'.*2\*\*4"):
        vf(_probe(4), torch.tensor([16]))


def test_sharing_with_player_at_first_token_and_tiny_cache_budget(
    make_tiny, tokenizer, reference_causal
):
    """GPT-2 style prompts start with a player (no prefix); 1-row chunks still exact."""
    model = make_tiny("gpt2")
    prompt = "Lighthouse keepers painted stones blue, then red, then green."
    probe = Probe(prompt, " done", select_players(prompt, 5), id="first")
    tok_no_cls = _NoSpecial(tokenizer)
    vf = CausalLMValue(model, tok_no_cls, cache_memory=1)
    ref = reference_causal(model, tokenizer, probe, vf.baseline, range(32), add_special=False)
    assert torch.allclose(vf(probe).double(), ref, atol=1e-4, rtol=0)


class _NoSpecial:
    """A tokenizer that adds no special tokens (like GPT-2's): the first player is token 0."""

    def __init__(self, tok):
        self._tok = tok

    def __getattr__(self, name):
        return getattr(self._tok, name)

    def __call__(self, text, add_special_tokens=True, **kw):
        return self._tok(text, add_special_tokens=False, **kw)


def test_logits_without_logits_to_keep_use_backbone_and_head(make_tiny, tokenizer):
    model = make_tiny("llama")
    probe = _probe(4)
    vf = CausalLMValue(model, tokenizer)
    expected = vf(probe)
    vf.adapter.has_logits_to_keep = False
    assert torch.allclose(vf(probe), expected, atol=1e-5, rtol=0)


def test_chat_rendered_prompt(make_tiny, chat_tokenizer, reference_causal):
    from sft_interaction_callback.probing import probes_from_dataset

    model = make_tiny("llama")
    model.resize_token_embeddings(len(chat_tokenizer))
    rows = [
        {
            "messages": [
                {"role": "system", "content": "You answer briefly."},
                {"role": "user", "content": "Why did the old keeper paint every stone blue?"},
                {"role": "assistant", "content": "For the storms."},
            ]
        }
    ]
    (probe,) = probes_from_dataset(rows, tokenizer=chat_tokenizer, n_players=4, num_probes=1)
    vf = CausalLMValue(model, chat_tokenizer)
    ref = reference_causal(model, chat_tokenizer, probe, vf.baseline, range(16))
    assert torch.allclose(vf(probe).double(), ref, atol=1e-4, rtol=0)


def test_training_mode_restored_and_no_grad(make_tiny, tokenizer):
    model = make_tiny("llama")
    model.train()
    model.model.layers[0].eval()  # mixed modes must come back exactly
    try:
        v = CausalLMValue(model, tokenizer)(_probe(3))
        assert model.training and not model.model.layers[0].training
        assert not v.requires_grad
    finally:
        model.eval()


def test_bf16_weights_give_float32_values(tokenizer, tiny_model):
    model = tiny_model("llama", len(tokenizer)).to(torch.bfloat16)
    probe = _probe(3)
    vf = CausalLMValue(model, tokenizer)
    v = vf(probe)
    assert v.dtype == torch.float32 and torch.isfinite(v).all()
    flat = CausalLMValue(model, tokenizer, prefix_sharing=False)(probe)
    assert torch.allclose(v, flat, atol=0.5)


def test_too_long_probe_is_rejected_not_cut(make_tiny, tokenizer):
    vf = CausalLMValue(make_tiny("llama"), tokenizer)  # context 128
    prompt = "lighthouse " * 130
    probe = Probe(prompt, " yes", [(0, 10)], id="long")
    with pytest.raises(ValueError, match=r"probe 'long'.*longer than the model's context of 128"):
        vf(probe)


def test_oom_halves_batch_and_retries(make_tiny, tokenizer, monkeypatch):
    model = make_tiny("llama")
    probe = _probe(4)
    vf = CausalLMValue(model, tokenizer, prefix_sharing=False, batch_size=16)
    expected = vf(probe)
    real = vf.adapter.target_logits
    seen = []

    def flaky(embeds, m, kv=None):
        seen.append(embeds.shape[0])
        if embeds.shape[0] > 4:
            raise torch.cuda.OutOfMemoryError("fake")
        return real(embeds, m, kv)

    monkeypatch.setattr(vf.adapter, "target_logits", flaky)
    with pytest.warns(UserWarning, match="out of memory; retrying with batch_size") as rec:
        got = vf(probe)
    assert [str(w.message)[-1] for w in rec] == ["8", "4"]
    assert torch.allclose(got, expected, atol=1e-6)
    assert vf.batch_size == 4 and 16 in seen and 8 in seen

    def always(embeds, m, kv=None):
        raise torch.cuda.OutOfMemoryError("fake")

    monkeypatch.setattr(vf.adapter, "target_logits", always)
    with pytest.raises(torch.cuda.OutOfMemoryError), pytest.warns(UserWarning):
        vf(probe)


def test_many(make_tiny, tokenizer):
    vf = CausalLMValue(make_tiny("llama"), tokenizer)
    probes = [_probe(3, pid="a"), _probe(2, prompt="Green lanterns glow softly tonight.", pid="b")]
    out = vf.many(probes)
    assert [o.shape for o in out] == [(8,), (4,)]
    assert torch.allclose(out[1], vf(probes[1]))


def test_baseline_errors_name_the_fix(make_tiny, tokenizer):
    model = make_tiny("llama")
    no_mask = _NoMask(tokenizer)
    with pytest.raises(
        ValueError, match=r"no mask token; use one of \['pad', 'unk', 'zero', 'mean'\]"
    ):
        CausalLMValue(model, no_mask, baseline="mask")
    with pytest.raises(ValueError, match="1-D of size 32"):
        CausalLMValue(model, tokenizer, baseline=torch.zeros(7))
    with pytest.raises(ValueError, match="not known"):
        CausalLMValue(model, tokenizer, baseline="eos")


class _NoMask(_NoSpecial):
    mask_token_id = None

    def __call__(self, *a, **kw):
        return self._tok(*a, **kw)


def test_prefix_tree_runs_far_fewer_tokens(make_tiny, tokenizer, monkeypatch):
    """The tree must actually share work: count tokens fed to the model."""
    model = make_tiny("llama")
    probe = _probe(6)
    fed = {True: 0, False: 0}
    for sharing in (True, False):
        vf = CausalLMValue(model, tokenizer, prefix_sharing=sharing)
        for name in ("target_logits", "extend_cache"):
            real = getattr(vf.adapter, name)

            def counting(embeds, *a, _real=real, _s=sharing, **kw):
                fed[_s] += embeds.shape[0] * embeds.shape[1]
                return _real(embeds, *a, **kw)

            monkeypatch.setattr(vf.adapter, name, counting)
        vf(probe)
    assert fed[True] < 0.5 * fed[False]


@pytest.mark.parametrize("window", [8, 128])
def test_sliding_window_model_exact_either_way(tokenizer, reference_causal, window):
    """Sharing is kept while the probe fits the window, and skipped (with a warning) if not."""
    import warnings

    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    cfg = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        use_sliding_window=True,
        sliding_window=window,
        max_window_layers=1,
    )
    model = Qwen2ForCausalLM(cfg).eval()
    probe = _probe(4)
    vf = CausalLMValue(model, tokenizer)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        v = vf(probe)
    skipped = [w for w in caught if "prefix sharing skipped" in str(w.message)]
    assert bool(skipped) == (window == 8)
    ref = reference_causal(model, tokenizer, probe, vf.baseline, range(16))
    assert torch.allclose(v.double(), ref, atol=1e-4, rtol=0)


def test_pad_token_outside_embedding_table(tiny_model, tokenizer):
    model = tiny_model("llama", 1000)
    big = _NoMask(tokenizer)
    big.pad_token_id = 5000  # e.g. a pad token added without resizing the embeddings
    with pytest.raises(ValueError, match=r"pad token id 5000 is outside .*resize_token_embeddings"):
        CausalLMValue(model, big, baseline="pad")
    assert CausalLMValue(model, big, baseline="unk").baseline.shape == (32,)


def test_wrappers_are_looked_through(make_tiny, tokenizer):
    """torch.compile / DataParallel wrappers: same values, sharing still on, no recompiles."""
    model = make_tiny("llama")
    probe = _probe(3)
    expected = CausalLMValue(model, tokenizer)(probe)
    for wrapped in (torch.compile(model), torch.nn.DataParallel(model)):
        vf = CausalLMValue(wrapped, tokenizer)
        assert vf.prefix_sharing and vf.adapter.core is model
        assert torch.allclose(vf(probe), expected, atol=1e-6)


def test_engine_times_both_paths_once_and_keeps_the_faster(make_tiny, tokenizer, monkeypatch):
    """The prefix tree or full passes: chosen at the first point by timing, kept after,
    and either way the values are those of the brute-force reference."""
    from sft_interaction_callback.engine.extractor import ValueExtractor

    model = make_tiny("llama")
    other = "The quiet river carried small boats past the mill every morning in spring."
    probes = [_probe(5), _probe(5, prompt=other, pid="u")]
    ex = ValueExtractor(tokenizer, kind="causal")
    first = ex.values(model, probes)
    assert isinstance(ex.prefix_sharing, bool)
    for sharing in (True, False):
        direct = torch.stack(
            [CausalLMValue(model, tokenizer, prefix_sharing=sharing)(p) for p in probes]
        )
        assert torch.allclose(first, direct, atol=1e-4, rtol=0)
    timed = []
    monkeypatch.setattr(ValueExtractor, "_choose_path", lambda *a: timed.append(a))
    ex.values(model, probes)
    assert timed == [], "the path is chosen once per run, not at every probe point"


def test_engine_path_choice_follows_the_clock(make_tiny, tokenizer, monkeypatch):
    """Whichever path the clock says is faster is kept (here: full passes made 'faster')."""
    import sft_interaction_callback.engine.extractor as engine

    model = make_tiny("llama")
    ticks = iter([0.0, 5.0, 5.0, 6.0, 6.0, 11.0, 11.0, 12.0])  # tree 5 s, full 1 s (twice)
    monkeypatch.setattr(engine.time, "perf_counter", lambda: next(ticks, 100.0))
    ex = engine.ValueExtractor(tokenizer, kind="causal")
    ex.values(model, [_probe(4)])
    assert ex.prefix_sharing is False

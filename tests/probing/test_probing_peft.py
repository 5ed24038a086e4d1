"""LoRA-wrapped models: values follow the adapter and equal the merged model's values."""

from __future__ import annotations

import copy

import pytest
import torch

from sft_interaction_callback.probing import CausalLMValue, Probe, select_players

peft = pytest.importorskip("peft")

PROMPT = "Why did the old lighthouse keeper paint every stone blue before winter?"


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_lora_values_follow_adapter_and_match_merged(tiny_model, tokenizer, family):
    base = tiny_model(family, len(tokenizer), seed=3)
    targets = ["q_proj", "v_proj"] if family == "llama" else ["c_attn"]
    cfg = peft.LoraConfig(
        fan_in_fan_out=family == "gpt2",  # GPT-2 uses Conv1D
        r=4,
        lora_alpha=8,
        target_modules=targets,
        lora_dropout=0.0,
        init_lora_weights=False,
    )
    model = peft.get_peft_model(copy.deepcopy(base), cfg)
    probe = Probe(PROMPT, " to guide ships", select_players(PROMPT, 4), id="lora")

    v_base = CausalLMValue(base, tokenizer)(probe)
    vf = CausalLMValue(model, tokenizer)
    v_lora = vf(probe)
    assert not torch.allclose(v_lora, v_base, atol=1e-3), "nonzero LoRA B must change values"

    merged = copy.deepcopy(model).merge_and_unload()
    v_merged = CausalLMValue(merged, tokenizer, prefix_sharing=False)(probe)
    assert torch.allclose(v_lora, v_merged, atol=1e-4, rtol=0)

    with torch.no_grad():  # training the adapter moves the values
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.mul_(3.0)
    v_after = vf(probe)
    assert not torch.allclose(v_after, v_lora, atol=1e-3)
    merged2 = copy.deepcopy(model).merge_and_unload()
    assert torch.allclose(v_after, CausalLMValue(merged2, tokenizer)(probe), atol=1e-4, rtol=0)

    with model.disable_adapter():
        assert torch.allclose(vf(probe), v_base, atol=1e-4, rtol=0)

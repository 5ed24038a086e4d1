"""Lockstep probing of FSDP (1 and 2) sharded models on CPU/gloo, against the full model.

Used by ``test_callback_distributed.py`` under ``torchrun --nproc_per_node 2`` (not
collected by pytest). Each rank writes ``OUT/fsdp-rank<r>.json`` with, per FSDP version,
the largest difference to the unsharded model's values and the decoder forward passes.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    import dist_train_script as d
    from torch.distributed.fsdp import FullyShardedDataParallel, fully_shard
    from torch.distributed.fsdp.wrap import transformer_auto_wrap_policy
    from transformers.models.llama.modeling_llama import LlamaDecoderLayer

    from sft_interaction_callback.engine.distributed import Collective
    from sft_interaction_callback.engine.extractor import ValueExtractor
    from sft_interaction_callback.engine.sharded_weights import probe_parameters, sharded_parameters
    from sft_interaction_callback.probing import Probe, select_players

    tok = d.tokenizer()
    text = "Question: what colour is the big house near the river today?"
    probes = [
        Probe(text, " red", select_players(text, 4, tokenizer=tok, seed=k), id=str(k))
        for k in range(2)
    ]

    def fresh():
        return d.model(len(tok)).get_base_model()  # LoRA B is zero: the base Llama

    class Solo(Collective):  # the single-process answer, computed on every rank
        def __init__(self) -> None:
            self.active, self.world_size, self.rank = False, 1, 0
            self.device = torch.device("cpu")

    with torch.no_grad():
        full = ValueExtractor(tok, kind="causal", comm=Solo()).values(fresh(), probes)

    out = {}
    for version in ("fsdp", "fsdp2"):
        model = fresh()
        if version == "fsdp":
            policy = functools.partial(
                transformer_auto_wrap_policy, transformer_layer_cls={LlamaDecoderLayer}
            )
            root = FullyShardedDataParallel(
                model, auto_wrap_policy=policy, use_orig_params=True, device_id="cpu"
            )
            trainer = type("T", (), {"model_wrapped": root, "model": root})
            probed = root.module
        else:
            for layer in model.model.layers:
                fully_shard(layer)
            fully_shard(model)
            trainer, probed = None, model
        kind = sharded_parameters(trainer, probed)
        calls = {"n": 0}
        layer0 = probed.model.layers[0]
        layer0.register_forward_hook(lambda *_, calls=calls: calls.__setitem__("n", calls["n"] + 1))
        ex = ValueExtractor(tok, kind="causal", comm=Collective(), lockstep=True, batch_size=3)
        with probe_parameters(trainer, probed, kind), torch.no_grad():
            v = ex.values(probed, probes)
        out[version] = {
            "kind": kind,
            "max_diff": float((v.cpu() - full.cpu()).abs().max()),
            "forwards": calls["n"],
        }
    rank = dist.get_rank()
    Path(sys.argv[1], f"fsdp-rank{rank}.json").write_text(json.dumps(out))
    dist.destroy_process_group()


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()

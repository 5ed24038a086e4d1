"""Nothing degrades silently: each reduced or unusable setting warns or errors, naming the
probe / field and the fix; the command line says when a local path does not exist;
``--json`` output is pure JSON; ``--version`` prints the version."""

from __future__ import annotations

import argparse
import json
import warnings
from types import SimpleNamespace

import pytest

from sft_interaction_callback import InteractionCallback, __version__
from sft_interaction_callback.callback.progress import console_hidden, summary_line
from sft_interaction_callback.callback.trainer_inputs import check_trainer, prepare_probes
from sft_interaction_callback.cli import json_only, main, print_json
from sft_interaction_callback.config import InteractionConfig
from sft_interaction_callback.probing import Probe, probes_from_dataset


def _prepare(probes, tokenizer, **kw):
    kw = {"train_dataset": None, "n_players": 10, "num_probes": 4, "seed": 0, **kw}
    return prepare_probes(probes, tokenizer=tokenizer, **kw)


def test_a_given_probe_with_fewer_words_than_n_players_warns_naming_it(tokenizer):
    probes = [{"prompt": "keepers paint stones blue", "target": " ok", "id": "short"}]
    with pytest.warns(UserWarning, match=r"probes\[0\] \(id 'short'\): 4.*n_players=4") as rec:
        (p,) = _prepare(probes, tokenizer)
    assert len(rec) == 1 and p.n_players == 4
    given = Probe("keepers paint stones blue", " ok", [(0, 7), (8, 13)], id="mine")
    with pytest.warns(UserWarning, match=r"id 'mine'\): 2"):
        _prepare([given], tokenizer)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _prepare(probes, tokenizer, n_players=4)  # enough words: no warning


def test_short_rows_keep_num_probes_with_fewer_players_and_one_warning(tokenizer):
    rows = [
        {"prompt": "keepers paint bright harbour stones blue every winter", "completion": " a"},
        {"prompt": "sailors admire lighthouses", "completion": " b"},
        {"prompt": "grandma bakes bread daily", "completion": " c"},
        {"prompt": "fog scares tourists", "completion": " d"},
    ]
    with pytest.warns(UserWarning) as rec:
        probes = probes_from_dataset(rows, tokenizer=tokenizer, n_players=6, num_probes=4)
    assert len(probes) == 4 and {p.n_players for p in probes} == {3}
    (w,) = rec
    assert "every probe gets 3 players" in str(w.message) and "n_players=3" in str(w.message)


def test_too_few_rows_and_duplicates_are_reported(tokenizer):
    rows = [{"prompt": "keepers paint bright stones", "completion": " a"}] * 3
    with pytest.warns(UserWarning, match=r"1 probe\(s\) instead of 4; 2 duplicate prompt"):
        probes = probes_from_dataset(rows, tokenizer=tokenizer, n_players=3, num_probes=4)
    assert len(probes) == 1


def test_reference_model_path_is_checked_at_construction(tmp_path):
    with pytest.raises(ValueError, match=r"reference_model path '/no/such/dir' does not exist"):
        InteractionCallback(reference_model="/no/such/dir")
    with pytest.raises(ValueError, match="has no config.json"):
        InteractionConfig(reference_model=str(tmp_path))
    InteractionConfig(reference_model="Qwen/Qwen2.5-0.5B")  # a hub id is not a path


def _trainer(**kw):
    base = {
        "train_dataset": [{"prompt": "keepers paint stones", "completion": " ok"}],
        "eval_dataset": None,
        "args": SimpleNamespace(eval_strategy="no", dataset_text_field="text"),
        "processing_class": None,
    }
    return SimpleNamespace(**{**base, **kw})


def test_settings_that_cannot_work_are_refused_when_attached():
    check_trainer(InteractionConfig(), _trainer())
    with pytest.raises(ValueError, match=r"probes_from='eval' but trainer.eval_dataset is None"):
        check_trainer(InteractionConfig(probes_from="eval"), _trainer())
    with pytest.raises(ValueError, match='schedule="eval".*eval_strategy="steps"'):
        check_trainer(InteractionConfig(schedule="eval"), _trainer())
    odd = _trainer(train_dataset=[{"question": "why", "answer": "because"}])
    with pytest.raises(ValueError, match=r"columns are \['answer', 'question'\]; it reads"):
        check_trainer(InteractionConfig(), odd)
    chat = _trainer(
        train_dataset=[{"messages": [{"role": "user", "content": "hi"}]}],
        processing_class=SimpleNamespace(chat_template=None),
    )
    with pytest.raises(ValueError, match="no chat_template"):
        check_trainer(InteractionConfig(), chat)
    check_trainer(InteractionConfig(probes=[{"prompt": "a b", "target": "c"}]), odd)


def test_token_labels_are_never_class_labels(tokenizer):
    """TRL keeps ``text`` next to ``input_ids`` / ``labels`` (token ids): language modelling."""
    text = "keepers paint bright harbour stones blue before every winter storm"
    ids = tokenizer(text)["input_ids"]
    row = {"text": text + "[SEP]", "input_ids": ids, "labels": ids}
    (p,) = probes_from_dataset([row], tokenizer=tokenizer, n_players=3, num_probes=1)
    assert p.prompt + p.target == text + "[SEP]" and p.target == " winter storm[SEP]"


def test_cli_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"sft-interactions {__version__}"


def test_cli_explain_names_a_missing_local_path(capsys):
    code = main(["explain", "--model", "/no/such/dir", "--prompt", "a b", "--target", "c"])
    err = capsys.readouterr().err
    assert code == 2 and "'/no/such/dir' does not exist" in err and "repo" not in err


def test_json_output_is_pure_json(capsys):
    def noisy(args):
        print("stray text from a library")
        print({"loss": 1.0})
        print_json({"ok": True, "n": 3})
        return 0

    assert json_only(argparse.Namespace(func=noisy, json=True)) == 0
    out, err = capsys.readouterr()
    assert json.loads(out) == {"ok": True, "n": 3}
    assert "stray text" in err and "'loss'" in err


def test_console_shows_one_line_not_a_raw_dict():
    from transformers import PrinterCallback, ProgressCallback

    printers = [ProgressCallback(), PrinterCallback()]
    trainer = SimpleNamespace(callback_handler=SimpleNamespace(callbacks=[object(), *printers]))
    with console_hidden(trainer) as hidden:
        assert hidden and len(trainer.callback_handler.callbacks) == 1
    assert trainer.callback_handler.callbacks[1:] == printers
    line = summary_line(
        40,
        {
            "interactions/noise": 0.0123,
            "interactions/removed/count": 12.0,
            "interactions/preserved/count": 3.0,
            "interactions/emerged/count": 5.5,
            "interactions/probe_seconds": 21.34,
        },
    )
    assert line == (
        "interactions @ step 40: noise 0.0123 | removed 12, preserved 3, emerged 5.5 | 21.3 s"
    )
    assert summary_line(3, {"loss": 1.0}) is None


def test_tokenized_classification_rows_keep_their_label(tokenizer):
    """``input_ids`` + class ``label`` (a tokenized classifier data set): text, then label."""
    text = "keepers paint bright harbour stones blue before every winter storm"
    row = {"input_ids": tokenizer(text)["input_ids"], "label": 1}
    (p,) = probes_from_dataset(
        [row],
        tokenizer=tokenizer,
        n_players=3,
        num_probes=1,
        text_template="{text}",
        target_template="{label}",
        label_names=["calm", "storm"],
    )
    assert p.prompt == text and p.target == "storm"


def test_json_output_is_pure_even_when_native_code_writes_to_stdout(capfd):
    """The HiGHS solver prints its banner from C, straight to file descriptor 1."""
    import os
    import sys

    def native(args):
        sys.stdout.flush()
        os.write(1, b"Running HiGHS 1.16.0 (banner from native code)\n")
        print_json({"ok": True})
        return 0

    assert json_only(argparse.Namespace(func=native, json=True)) == 0
    out, err = capfd.readouterr()
    assert json.loads(out) == {"ok": True} and "HiGHS" in err


def test_pre_tokenized_rows_of_tensors(tokenizer):
    """A torch data set yields tensors: prompt and target split where labels are -100."""
    import torch

    prompt = tokenizer("keepers paint bright harbour stones blue")["input_ids"]
    target = tokenizer(" before winter", add_special_tokens=False)["input_ids"]
    row = {
        "input_ids": torch.tensor(prompt + target),
        "labels": torch.tensor([-100] * len(prompt) + target),
        "attention_mask": torch.ones(len(prompt) + len(target), dtype=torch.long),
    }
    (p,) = probes_from_dataset([row], tokenizer=tokenizer, n_players=3, num_probes=1)
    assert p.prompt == "[CLS] keepers paint bright harbour stones blue [SEP]"
    assert p.target == " before winter" and p.n_players == 3
    assert set(p.words) <= {"keepers", "paint", "bright", "harbour", "stones", "blue"}

"""Probes from SFT rows: every common format, rendered as a trainer renders it."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from sft_interaction_callback.probing import probes_from_dataset, render_row

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "goemotions"

CHAT_ROWS = [
    {
        "messages": [
            {"role": "system", "content": "You are a careful assistant who answers briefly."},
            {
                "role": "user",
                "content": f"Explain why the keeper painted stone {i} blue during winter storms.",
            },
            {"role": "assistant", "content": f"Answer {i}: visibility."},
        ]
    }
    for i in range(6)
]


def inside(probe, regions):
    return all(any(a <= s and e <= b for a, b in regions) for s, e in probe.players)


def test_chat_rows_use_template_and_user_words_only(chat_tokenizer):
    # the rows differ only by a number: template detection would leave one word, so off
    probes = probes_from_dataset(
        CHAT_ROWS, tokenizer=chat_tokenizer, n_players=5, num_probes=3, template=None
    )
    assert len(probes) == 3
    for p in probes:
        i = int(p.id)
        msgs = CHAT_ROWS[i]["messages"]
        expected = chat_tokenizer.apply_chat_template(
            msgs[:-1], tokenize=False, add_generation_prompt=True
        )
        assert p.prompt == expected and p.prompt.endswith("<|im_start|>assistant\n")
        assert p.target == msgs[-1]["content"]
        user_start = p.prompt.index(msgs[1]["content"])
        assert inside(p, [(user_start, user_start + len(msgs[1]["content"]))])
        assert p.n_players == 5


def test_sampling_is_deterministic_by_seed(chat_tokenizer):
    kw = {"tokenizer": chat_tokenizer, "n_players": 4, "num_probes": 3, "template": None}
    a = probes_from_dataset(CHAT_ROWS, seed=1, **kw)
    b = probes_from_dataset(CHAT_ROWS, seed=1, **kw)
    assert a == b
    ids = {tuple(p.id for p in probes_from_dataset(CHAT_ROWS, seed=s, **kw)) for s in range(5)}
    assert len(ids) > 1


def test_chat_rows_need_a_template(tokenizer):
    with pytest.raises(ValueError, match="chat template"):
        probes_from_dataset(CHAT_ROWS, tokenizer=tokenizer, num_probes=1)


def test_prompt_completion_plain_and_conversational(tokenizer, chat_tokenizer):
    row = {"prompt": "Why did the keeper paint the stones blue?", "completion": " For storms."}
    (p,) = probes_from_dataset([row], tokenizer=tokenizer, n_players=3, num_probes=1)
    assert p.prompt == row["prompt"] and p.target == row["completion"]
    assert p.words == ["keeper", "stones", "blue"]
    conv = {
        "prompt": [{"role": "user", "content": "Why did the keeper paint the stones blue?"}],
        "completion": [{"role": "assistant", "content": "For storms."}],
    }
    (q,) = probes_from_dataset([conv], tokenizer=chat_tokenizer, n_players=3, num_probes=1)
    assert q.prompt.startswith("<|im_start|>user\n") and q.target == "For storms."
    assert "im_start" not in q.words and "user" not in q.words


def test_dolly_rows(tokenizer):
    rows = [
        {
            "instruction": "Summarise the lighthouse story",
            "context": "Keepers painted stones blue for sailors.",
            "response": "Blue stones helped.",
        },
        {
            "instruction": "Name three bright winter colours",
            "context": "",
            "response": "White, silver, blue.",
        },
    ]
    p0, p1 = (render_row(r, tokenizer=tokenizer) for r in rows)
    assert p0[0].startswith("### Instruction:\nSummarise") and "### Context:\nKeepers" in p0[0]
    assert p0[0].endswith("### Response:\n") and p0[1] == "Blue stones helped."
    assert "### Context" not in p1[0]
    probes = probes_from_dataset(rows, tokenizer=tokenizer, n_players=3, num_probes=2)
    for p in probes:
        assert "Instruction" not in p.words and "Response" not in p.words


def test_text_label_rows_and_template(tokenizer):
    rows = [{"text": "I really love how bright the lighthouse looks tonight", "label": 1}]
    (p,) = probes_from_dataset(
        rows, tokenizer=tokenizer, n_players=3, num_probes=1, label_names=["anger", "joy"]
    )
    text = "I really love how bright the lighthouse looks tonight"
    assert p.prompt == f"Classify the emotion of this comment: {text}\nEmotion:"
    assert p.target == " joy"
    assert "Classify" not in p.words and "Emotion" not in p.words
    (q,) = probes_from_dataset(
        [{"text": "so angry about the broken lamp again", "label": "anger"}],
        tokenizer=tokenizer,
        n_players=2,
        num_probes=1,
        text_template="Comment: {text}\nFeeling:",
    )
    assert q.prompt.startswith("Comment: so angry") and q.target == " anger"


def test_datasets_dataset_with_classlabel(tokenizer):
    datasets = pytest.importorskip("datasets")
    ds = datasets.Dataset.from_dict(
        {"text": ["the bright lamp makes sailors very happy tonight"] * 3, "label": [0, 1, 0]},
        features=datasets.Features(
            {"text": datasets.Value("string"), "label": datasets.ClassLabel(names=["joy", "fear"])}
        ),
    )
    with pytest.warns(UserWarning, match="1 duplicate prompt"):  # rows 0 and 2 are one probe
        probes = probes_from_dataset(
            ds, tokenizer=tokenizer, n_players=3, num_probes=3, template=None
        )
    assert sorted(p.target for p in probes) == [" fear", " joy"]


def test_short_rows_lower_the_common_players_count_with_one_warning(tokenizer):
    rows = [
        {"prompt": "Paint stones.", "completion": " ok"},
        {"prompt": "Keepers paint bright stones blue nightly.", "completion": " ok"},
    ]
    with pytest.warns(UserWarning, match="every probe gets 2 players .* n_players=2") as rec:
        probes = probes_from_dataset(rows, tokenizer=tokenizer, n_players=4, num_probes=2)
    assert len(rec) == 1 and [p.n_players for p in probes] == [2, 2]


def test_unknown_row_format(tokenizer):
    with pytest.raises(ValueError, match="unrecognised row"):
        probes_from_dataset([{"foo": 1}], tokenizer=tokenizer)


def test_goemotions_rows(tokenizer):
    if not DATA.exists():
        pytest.skip(f"shared GoEmotions data not found at {DATA}")
    names = (DATA / "labels.txt").read_text().split()
    rows = []
    with open(DATA / "dev.tsv", encoding="utf-8") as fh:
        for _, line in zip(range(200), fh, strict=False):
            text, labels, _ = line.rstrip("\n").split("\t")
            rows.append({"text": text, "label": labels})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        probes = probes_from_dataset(
            rows, tokenizer=tokenizer, n_players=6, num_probes=4, label_names=names
        )
    assert len(probes) == 4
    for p in probes:
        assert p.target.strip() in names
        assert p.prompt.startswith("Classify the emotion of this comment: ")
        assert p.n_players == 6


def test_streaming_rows_are_read_up_to_max_rows(tokenizer):
    def stream():
        i = 0
        while True:  # endless, like a streaming data set
            yield {"prompt": f"Keepers paint bright stones blue number {i}", "completion": " ok"}
            i += 1

    probes = probes_from_dataset(
        stream(), tokenizer=tokenizer, n_players=3, num_probes=2, max_rows=5, template=None
    )
    assert len(probes) == 2 and all(int(p.id) < 5 for p in probes)


def test_template_with_unknown_field(tokenizer):
    rows = [{"text": "bright stones glow", "label": "joy"}]
    with pytest.raises(ValueError, match=r"uses \{comment\}; the fields here are \{text\}"):
        probes_from_dataset(rows, tokenizer=tokenizer, text_template="Say: {comment}")


def test_template_that_trims_content(chat_tokenizer):
    chat_tokenizer.chat_template = chat_tokenizer.chat_template.replace(
        "{{ m['content'] }}", "{{ m['content'] | trim }}"
    )
    row = {
        "messages": [
            {"role": "user", "content": "  Why paint the keeper's stones blue?  \n"},
            {"role": "assistant", "content": "Storms."},
        ]
    }
    (p,) = probes_from_dataset([row], tokenizer=chat_tokenizer, n_players=3, num_probes=1)
    assert p.words == ["paint", "stones", "blue"]  # found despite the trim


def test_chat_messages_rename_sharegpt_and_never_write_none():
    """One normaliser for probes and SFT data: null content is empty, not the word None."""
    from sft_interaction_callback.probing.datasets import chat_messages

    turns = [{"from": "human", "value": "Hi there"}, {"role": "assistant", "content": None}]
    assert chat_messages(turns) == [
        {"role": "user", "content": "Hi there"},
        {"role": "assistant", "content": ""},
    ]
    assert chat_messages(None) == []

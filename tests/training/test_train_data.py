"""Data loading: every file format, train/eval splits, rendering, and probes from eval rows."""

from __future__ import annotations

import json
import warnings

import pytest

from sft_interaction_callback.training.config import ConfigError, DataConfig
from sft_interaction_callback.training.data import (
    build_probes,
    detect_format,
    load_sft_data,
    read_file,
    use_chat_template,
)

LABELS = ["anger", "joy", "neutral"]
COMMENTS = [
    "The referee ignored every single foul during the second half tonight",
    "Grandma baked fresh apple pies for the whole street this morning",
    "Traffic downtown crawled slowly because workers repainted lanes again",
    "Our small garden finally produced bright tomatoes after weeks waiting",
    "Someone stole my bicycle seat outside the library yesterday evening",
    "The orchestra played beautiful music under colourful lanterns outdoors",
]


def jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture()
def tsv(tmp_path):
    lines = [f"{c}\t{i % 3}{',1' if i == 0 else ''}\tid{i}" for i, c in enumerate(COMMENTS)]
    (tmp_path / "train.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (tmp_path / "labels.txt").write_text("\n".join(LABELS) + "\n", encoding="utf-8")
    return tmp_path / "train.tsv"


def test_goemotions_tsv_chat_rows(tsv):
    cfg = DataConfig(path=str(tsv), eval_size=2, seed=3)
    data = load_sft_data(cfg, conversational=True)
    assert data.format == "goemotions" and data.label_names == LABELS
    assert len(data.train_examples) == 4 and len(data.eval_examples) == 2
    everything = data.train_examples + data.eval_examples
    assert sorted(e["focus"][0] for e in everything) == sorted(COMMENTS)  # disjoint, complete
    for ex in everything:
        (user,) = ex["prompt"]
        assert user["role"] == "user"
        assert "Choose from: anger, joy, neutral." in user["content"]
        assert user["content"].endswith(f"Comment: {ex['focus'][0]}")
        (reply,) = ex["completion"]
        assert reply["role"] == "assistant" and reply["content"] in LABELS
    first = next(e for e in everything if e["focus"][0] == COMMENTS[0])
    assert first["completion"][0]["content"] == "anger"  # ids "0,1": first label
    ds = data.train_dataset()
    assert ds.column_names == ["prompt", "completion"] and len(ds) == 4


def test_goemotions_all_labels_plain_text_and_system(tsv):
    cfg = DataConfig(
        path=str(tsv),
        eval_size=0,
        label_mode="all",
        label_separator=" + ",
        system_prompt="You label emotions.",
    )
    data = load_sft_data(cfg, conversational=False)
    assert data.eval_examples == [] and data.eval_dataset() is None
    first = next(e for e in data.train_examples if e["focus"][0] == COMMENTS[0])
    assert first["completion"] == "anger + joy"
    assert first["prompt"].startswith("You label emotions.\n\n### Instruction:\nWhich emotion")
    assert first["prompt"].endswith("### Response:\n")
    chat = load_sft_data(cfg, conversational=True).train_examples[0]["prompt"]
    assert chat[0] == {"role": "system", "content": "You label emotions."}


def test_split_is_seeded_and_capped(tsv):
    a = load_sft_data(DataConfig(path=str(tsv), eval_size=0.5, seed=1), conversational=True)
    b = load_sft_data(DataConfig(path=str(tsv), eval_size=0.5, seed=1), conversational=True)
    c = load_sft_data(DataConfig(path=str(tsv), eval_size=0.5, seed=2), conversational=True)
    assert len(a.eval_examples) == 3 and a.eval_examples == b.eval_examples
    assert [e["focus"] for e in a.eval_examples] != [e["focus"] for e in c.eval_examples]
    capped = load_sft_data(
        DataConfig(path=str(tsv), eval_size=1, max_train_rows=2), conversational=True
    )
    assert len(capped.train_examples) == 2 and len(capped.eval_examples) == 1
    ordered = load_sft_data(
        DataConfig(path=str(tsv), eval_size=1, shuffle=False), conversational=True
    )
    assert ordered.eval_examples[0]["focus"] == [COMMENTS[0]]
    with pytest.raises(ConfigError, match="leaving none to train on"):
        load_sft_data(DataConfig(path=str(tsv), eval_size=6), conversational=True)


def test_eval_file_is_capped_by_eval_size(tsv, tmp_path):
    (tmp_path / "dev.tsv").write_text(tsv.read_text(), encoding="utf-8")
    cfg = DataConfig(path=str(tsv), eval_path=str(tmp_path / "dev.tsv"), eval_size=4)
    data = load_sft_data(cfg, conversational=True)
    assert len(data.train_examples) == 6 and len(data.eval_examples) == 4
    all_eval = load_sft_data(
        DataConfig(path=str(tsv), eval_path=str(tmp_path / "dev.tsv"), eval_size=None),
        conversational=True,
    )
    assert len(all_eval.eval_examples) == 6


def test_bad_label_ids_and_tsv_lines(tsv, tmp_path):
    bad = tmp_path / "bad.tsv"
    bad.write_text("fine comment here\t7\tx\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"row 0 of .*bad.tsv \(goemotions format\): label id 7"):
        load_sft_data(DataConfig(path=str(bad), eval_size=0), conversational=True)
    short = tmp_path / "short.tsv"
    short.write_text("no tab on this line\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"short.tsv:1: expected text<TAB>label ids"):
        read_file(short)
    (tmp_path / "sub").mkdir()
    with pytest.raises(ConfigError, match="label names file .*labels.txt does not exist"):
        read_file(tmp_path / "sub" / "x.tsv")


def test_dolly_and_alpaca_jsonl(tmp_path):
    path = jsonl(
        tmp_path / "dolly.jsonl",
        [
            {"instruction": "Name a colour.", "context": "", "response": "Blue", "category": "qa"},
            {
                "instruction": "Summarise this.",
                "context": "Cats sleep a lot.",
                "response": "Cats nap.",
            },
            {"instruction": "Translate to French.", "input": "cat", "output": "chat"},
        ],
    )
    data = load_sft_data(
        DataConfig(path=str(path), eval_size=0, shuffle=False), conversational=True
    )
    assert data.format == "dolly"
    plain, ctx, alpaca = data.train_examples
    assert plain["prompt"] == [{"role": "user", "content": "Name a colour."}]
    assert plain["completion"] == [{"role": "assistant", "content": "Blue"}]
    assert plain["focus"] == ["Name a colour."]
    assert ctx["prompt"][0]["content"] == "Summarise this.\n\nCats sleep a lot."
    assert ctx["focus"] == ["Summarise this.", "Cats sleep a lot."]
    assert alpaca["completion"][0]["content"] == "chat"
    text = load_sft_data(
        DataConfig(path=str(path), eval_size=0, shuffle=False, plain_template="Q: {user}\nA:"),
        conversational=False,
    ).train_examples[1]
    assert text == {
        "prompt": "Q: Summarise this.\n\nCats sleep a lot.\nA:",
        "completion": "Cats nap.",
        "focus": ["Summarise this.", "Cats sleep a lot."],
    }


def test_prompt_completion_strings_and_messages(tmp_path):
    path = jsonl(
        tmp_path / "pc.jsonl",
        [
            {"prompt": "What is two plus two?", "completion": "Four."},
            {
                "prompt": [{"role": "user", "content": "Capital of France?"}],
                "completion": [{"role": "assistant", "content": "Paris."}],
            },
        ],
    )
    data = load_sft_data(
        DataConfig(path=str(path), eval_size=0, shuffle=False), conversational=True
    )
    assert data.format == "prompt_completion"
    s, m = data.train_examples
    assert s["prompt"] == [{"role": "user", "content": "What is two plus two?"}]
    assert m["prompt"] == [{"role": "user", "content": "Capital of France?"}]
    assert m["completion"] == [{"role": "assistant", "content": "Paris."}]
    with pytest.raises(ConfigError, match="row 1 .*message-list prompts need a chat template"):
        load_sft_data(DataConfig(path=str(path), eval_size=0, shuffle=False), conversational=False)


def test_chat_messages_and_sharegpt(tmp_path):
    path = jsonl(
        tmp_path / "chat.jsonl",
        [
            {
                "messages": [
                    {"role": "user", "content": "Hi there"},
                    {"role": "assistant", "content": "Hello"},
                    {"role": "user", "content": "Tell me a joke"},
                    {"role": "assistant", "content": "No."},
                ]
            },
            {
                "conversations": [
                    {"from": "human", "value": "Ping"},
                    {"from": "gpt", "value": "Pong"},
                ]
            },
        ],
    )
    cfg = DataConfig(path=str(path), eval_size=0, shuffle=False, system_prompt="Be brief.")
    data = load_sft_data(cfg, conversational=True)
    assert data.format == "messages"
    multi, share = data.train_examples
    assert [t["role"] for t in multi["prompt"]] == ["system", "user", "assistant", "user"]
    assert multi["completion"] == [{"role": "assistant", "content": "No."}]
    assert multi["focus"] == ["Hi there", "Tell me a joke"]
    assert share["prompt"][-1] == {"role": "user", "content": "Ping"}
    assert share["completion"] == [{"role": "assistant", "content": "Pong"}]
    jsonl(path, [{"messages": [{"role": "user", "content": "unanswered"}]}])
    with pytest.raises(ConfigError, match="must end with an assistant turn"):
        load_sft_data(DataConfig(path=str(path), eval_size=0), conversational=True)


def test_json_csv_parquet_and_column_renames(tmp_path):
    rows = [{"question": f"Question number {i}?", "answer": f"Answer {i}"} for i in range(3)]
    (tmp_path / "rows.json").write_text(json.dumps(rows), encoding="utf-8")
    with open(tmp_path / "rows.csv", "w", encoding="utf-8") as fh:
        fh.write("question,answer\n" + "".join(f'"{r["question"]}",{r["answer"]}\n' for r in rows))
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "rows.parquet")
    for name in ("rows.json", "rows.csv", "rows.parquet"):
        cfg = DataConfig(
            path=str(tmp_path / name),
            eval_size=0,
            shuffle=False,
            columns={"prompt": "question", "completion": "answer"},
        )
        data = load_sft_data(cfg, conversational=True)
        assert data.format == "prompt_completion", name
        assert [e["completion"][0]["content"] for e in data.train_examples] == [
            "Answer 0",
            "Answer 1",
            "Answer 2",
        ]
    with pytest.raises(ConfigError, match=r"cannot tell the row format.*\['answer', 'question'\]"):
        load_sft_data(
            DataConfig(path=str(tmp_path / "rows.json"), eval_size=0), conversational=True
        )
    wrong = DataConfig(path=str(tmp_path / "rows.json"), eval_size=0, columns={"prompt": "q"})
    with pytest.raises(ConfigError, match="maps 'prompt' to 'q', but .* has no column 'q'"):
        load_sft_data(wrong, conversational=True)


def test_file_errors(tmp_path):
    (tmp_path / "bad.jsonl").write_text('{"prompt": "a", "completion": "b"}\n{oops\n')
    with pytest.raises(ConfigError, match=r"bad.jsonl:2: not a JSON object"):
        read_file(tmp_path / "bad.jsonl")
    (tmp_path / "obj.json").write_text('{"prompt": "a"}')
    with pytest.raises(ConfigError, match="must hold a list of row objects"):
        read_file(tmp_path / "obj.json")
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(ConfigError, match="has no rows"):
        load_sft_data(DataConfig(path=str(tmp_path / "empty.jsonl")), conversational=True)
    ids = jsonl(tmp_path / "ids.jsonl", [{"text": "x", "labels": [1]}])
    assert detect_format({"text": "x", "labels": [1]}) == "goemotions"
    with pytest.raises(ConfigError, match="label ids but no label names; set data.labels_file"):
        load_sft_data(DataConfig(path=str(ids), eval_size=0), conversational=True)


def test_text_labels_jsonl_with_names(tmp_path):
    path = jsonl(
        tmp_path / "named.jsonl",
        [{"text": "so happy", "label": "joy"}, {"text": "ugh", "label": "anger"}],
    )
    data = load_sft_data(
        DataConfig(path=str(path), eval_size=0, shuffle=False), conversational=True
    )
    assert data.format == "goemotions"
    assert "Choose from: anger, joy." in data.train_examples[0]["prompt"][0]["content"]
    assert [e["completion"][0]["content"] for e in data.train_examples] == ["joy", "anger"]


def test_hub_source_with_class_labels(monkeypatch):
    """A hub data set (here a stand-in for load_dataset) names label ids from its features."""
    import datasets

    features = datasets.Features(
        {
            "text": datasets.Value("string"),
            "labels": datasets.Sequence(datasets.ClassLabel(names=LABELS)),
        }
    )
    splits = {
        "train": datasets.Dataset.from_dict(
            {"text": COMMENTS[:4], "labels": [[0], [1, 2], [2], [1]]}, features=features
        ),
        "validation": datasets.Dataset.from_dict(
            {"text": COMMENTS[4:], "labels": [[0], [2]]}, features=features
        ),
    }
    calls = []

    def fake_load(name, config_name=None, split=None, revision=None):
        calls.append((name, config_name, split))
        return splits[split]

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    cfg = DataConfig(
        name="org/emotions", config_name="simplified", eval_split="validation", eval_size=None
    )
    data = load_sft_data(cfg, conversational=True)
    assert calls == [
        ("org/emotions", "simplified", "train"),
        ("org/emotions", "simplified", "validation"),
    ]
    assert data.label_names == LABELS and len(data.eval_examples) == 2
    got = {e["focus"][0]: e["completion"][0]["content"] for e in data.train_examples}
    assert got[COMMENTS[1]] == "joy"

    def failing(*a, **k):
        raise ConnectionError("offline")

    monkeypatch.setattr(datasets, "load_dataset", failing)
    with pytest.raises(
        ConfigError,
        match=r"data.name='org/emotions' split 'train' could not be loaded \(ConnectionError",
    ):
        load_sft_data(cfg, conversational=True)


def test_use_chat_template(chat_tokenizer):
    assert use_chat_template(DataConfig(path="x.jsonl"), chat_tokenizer) is True
    assert (
        use_chat_template(DataConfig(path="x.jsonl", use_chat_template=False), chat_tokenizer)
        is False
    )

    class Bare:
        chat_template = None

    assert use_chat_template(DataConfig(path="x.jsonl"), Bare()) is False
    with pytest.raises(ConfigError, match="has no chat template"):
        use_chat_template(DataConfig(path="x.jsonl", use_chat_template=True), Bare())


def test_probes_are_rendered_like_trl_with_players_in_the_comment(tsv, chat_tokenizer):
    data = load_sft_data(DataConfig(path=str(tsv), eval_size=0), conversational=True)
    probes = build_probes(data.train_examples, chat_tokenizer, n_players=5, num_probes=3, seed=0)
    assert len(probes) == 3 and {p.n_players for p in probes} == {5}
    by_id = {f"eval-{i}": ex for i, ex in enumerate(data.train_examples)}
    for p in probes:
        ex = by_id[p.id]
        rendered = chat_tokenizer.apply_chat_template(
            ex["prompt"], tokenize=False, add_generation_prompt=True
        )
        assert p.prompt == rendered  # exactly what TRL tokenizes as the prompt
        assert p.target == ex["completion"][0]["content"]
        start = p.prompt.index(ex["focus"][0])
        end = start + len(ex["focus"][0])
        assert all(start <= s and e <= end for s, e in p.players)  # never instruction words
    again = build_probes(data.train_examples, chat_tokenizer, n_players=5, num_probes=3, seed=0)
    assert [p.to_dict() for p in again] == [p.to_dict() for p in probes]


def test_probes_fewer_rows_warn_and_none_raise(tsv, chat_tokenizer):
    data = load_sft_data(DataConfig(path=str(tsv), eval_size=0), conversational=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        probes = build_probes(data.train_examples, chat_tokenizer, n_players=7, num_probes=10)
    assert 0 < len(probes) < 10 and {p.n_players for p in probes} == {7}
    assert any("tracking" in str(w.message) for w in caught)
    for p in probes:  # plain text: the prompt is the string TRL tokenizes
        assert p.prompt.startswith("### Instruction:\n")
    with pytest.raises(ValueError, match="lower interactions.n_players"):
        build_probes(data.train_examples, chat_tokenizer, n_players=20, num_probes=2)


def test_real_goemotions_file(goemotions_dir, chat_tokenizer):
    cfg = DataConfig(
        path=str(goemotions_dir / "train.tsv"),
        eval_path=str(goemotions_dir / "dev.tsv"),
        max_train_rows=32,
        eval_size=16,
        label_mode="all",
    )
    data = load_sft_data(cfg, conversational=True)
    assert len(data.label_names) == 28 and data.label_names[-1] == "neutral"
    assert len(data.train_examples) == 32 and len(data.eval_examples) == 16
    for ex in data.train_examples:
        names = ex["completion"][0]["content"].split(", ")
        assert set(names) <= set(data.label_names)
    probes = build_probes(data.eval_examples, chat_tokenizer, n_players=4, num_probes=2)
    assert len(probes) == 2

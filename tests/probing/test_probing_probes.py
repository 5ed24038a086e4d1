"""Probe validation (errors that name the probe and the fix) and JSON snapshots."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sft_interaction_callback.probing import MAX_PLAYERS, Probe, word_spans

PROMPT = "The keeper's well-known lamp, bright and old, shone."


def spans_of(prompt: str, *words: str) -> list[tuple[int, int]]:
    out = []
    for w in words:
        s = prompt.index(w)
        out.append((s, s + len(w)))
    return out


def test_words_sorted_and_properties():
    players = spans_of(PROMPT, "lamp", "keeper's", "well-known")
    p = Probe(PROMPT, " yes", players, id="p1")
    assert p.words == ["keeper's", "well-known", "lamp"]  # kept sorted by position
    assert p.n_players == 3


def test_phrase_span_allowed():
    p = Probe(PROMPT, " yes", [(PROMPT.index("bright"), PROMPT.index("old") + 3)], id="x")
    assert p.words == ["bright and old"]


@pytest.mark.parametrize(
    ("players", "match"),
    [
        ([(0, 3), (40, 99)], r"probe 'bad': player span \(40, 99\) is out of range"),
        ([(5, 5)], r"probe 'bad': player span \(5, 5\) is empty"),
        ([(-1, 3)], r"out of range"),
        ([(0, 2)], r"probe 'bad': player span \(0, 2\) = 'Th' is not a word.*word boundaries"),
        ([(4, 10)], r"'keeper' is not a word"),  # cuts keeper's
        ([(28, 29)], r"',' is not a word"),  # punctuation
        ([(0, 3), (0, 3)], r"probe 'bad': players .* overlap"),
        ([(4, 12), (4, 23)], r"overlap"),
        ([], r"probe 'bad': no players; .*select_players"),
        ([(0, 3, 5)], r"not a \(start, end\) pair"),
    ],
)
def test_bad_players(players, match):
    with pytest.raises(ValueError, match=match):
        Probe(PROMPT, " yes", players, id="bad")


def test_empty_target_names_probe_and_fix():
    with pytest.raises(ValueError, match=r"probe 'e1': the target is empty; give the response"):
        Probe(PROMPT, "  \n", [(0, 3)], id="e1")
    with pytest.raises(ValueError, match=r"probe \(no id\)"):
        Probe(PROMPT, "", [(0, 3)])


def test_too_many_players():
    prompt = " ".join(f"w{i}" for i in range(MAX_PLAYERS + 1))
    with pytest.raises(ValueError, match=r"probe 'big': 21 players; at most 20 .*choose fewer"):
        Probe(prompt, "x", word_spans(prompt), id="big")
    assert Probe(prompt, "x", word_spans(prompt)[:MAX_PLAYERS]).n_players == MAX_PLAYERS


def test_json_round_trip_and_tamper_check():
    p = Probe(PROMPT, " it shone", spans_of(PROMPT, "lamp", "shone"), id="j")
    back = Probe.from_dict(json.loads(json.dumps(p.to_dict())))
    assert back == p
    d = p.to_dict()
    d["prompt"] = d["prompt"].replace("lamp", "lamb")
    with pytest.raises(ValueError, match=r"probe 'j': stored words .* do not match"):
        Probe.from_dict(d)


word = st.text(alphabet="abcdefghij", min_size=1, max_size=6)


@settings(max_examples=50, deadline=None)
@given(st.lists(word, min_size=1, max_size=12), st.data())
def test_any_word_subset_is_valid_and_round_trips(words, data):
    prompt = ", ".join(words) + "."
    spans = word_spans(prompt)
    chosen = data.draw(st.lists(st.sampled_from(spans), min_size=1, max_size=8, unique=True))
    p = Probe(prompt, "t", chosen, id="h")
    assert p.players == sorted(chosen)
    assert p.words == [prompt[s:e] for s, e in sorted(chosen)]
    assert Probe.from_dict(json.loads(json.dumps(p.to_dict()))) == p

"""Player selection skips stop words, punctuation and template text; deterministic by seed."""

from __future__ import annotations

import warnings

import pytest

from sft_interaction_callback.probing import STOP_WORDS, Probe, select_players

TEXT = (
    "The lighthouse keeper painted every stone blue before winter, and the sailors "
    "trusted that bright blue coast during long storms at night."
)


def words(prompt, spans):
    return [prompt[s:e] for s, e in spans]


def test_spread_skips_stop_words_and_covers_prompt():
    spans = select_players(TEXT, 6)
    chosen = words(TEXT, spans)
    assert len(chosen) == 6 and spans == sorted(spans)
    assert not any(w.lower() in STOP_WORDS for w in chosen)
    assert chosen[0] in ("lighthouse", "keeper") and chosen[-1] in ("storms", "night")
    Probe(TEXT, "x", spans)  # valid players


def test_random_is_deterministic_by_seed():
    a = select_players(TEXT, 5, strategy="random", seed=3)
    assert a == select_players(TEXT, 5, strategy="random", seed=3)
    assert a == sorted(a)
    assert any(select_players(TEXT, 5, strategy="random", seed=s) != a for s in range(4, 10))
    assert select_players(TEXT, 5) == select_players(TEXT, 5, seed=99)  # spread ignores seed


def test_chat_markup_and_roles_skipped():
    prompt = (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nWhy paint stones blue "
        "system?<|im_end|>\n<|im_start|>assistant\n"
    )
    chosen = words(prompt, select_players(prompt, 5))
    # role headers and markers are skipped; the user's own word "system?" stays eligible
    assert chosen == ["brief", "paint", "stones", "blue", "system"]


@pytest.mark.parametrize(
    "prompt",
    [
        "<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nWhy paint stones blue? [/INST]",
        "<start_of_turn>user\nWhy paint stones blue?<end_of_turn>\n<start_of_turn>model\n",
        "<|start_header_id|>user<|end_header_id|>\n\nWhy paint stones blue?<|eot_id|>",
    ],
)
def test_common_templates(prompt):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        chosen = words(prompt, select_players(prompt, 10))
    assert set(chosen) <= {"Be", "brief", "Why", "paint", "stones", "blue"}
    assert {"paint", "stones", "blue"} <= set(chosen)


def test_tokenizer_special_tokens_skipped(tokenizer):
    prompt = "[CLS] lighthouse keeper [SEP] stones [PAD]"
    chosen = words(prompt, select_players(prompt, 3, tokenizer=tokenizer))
    assert chosen == ["lighthouse", "keeper", "stones"]


def test_custom_special_token_of_tokenizer(chat_tokenizer):
    chat_tokenizer.add_special_tokens({"additional_special_tokens": ["<<ROLE-X>>"]})
    prompt = "<<ROLE-X>> lighthouse keeper stones"
    chosen = words(prompt, select_players(prompt, 3, tokenizer=chat_tokenizer))
    assert chosen == ["lighthouse", "keeper", "stones"]


def test_fewer_eligible_words_warns_and_uses_all():
    with pytest.warns(UserWarning, match=r"only 2 eligible words \(need 5\)"):
        spans = select_players("The stone is blue, and it is so.", 5)
    assert words("The stone is blue, and it is so.", spans) == ["stone", "blue"]


def test_regions_restrict_choice():
    start = TEXT.index("sailors")
    spans = select_players(TEXT, 3, regions=[(start, len(TEXT))])
    assert all(s >= start for s, _ in spans)


def test_bad_arguments():
    with pytest.raises(ValueError, match="strategy"):
        select_players(TEXT, 3, strategy="greedy")
    with pytest.raises(ValueError, match="between 1 and 20"):
        select_players(TEXT, 0)

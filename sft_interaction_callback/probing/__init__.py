"""Probing models: probes (prompt, target, word players), masking, and the value of a masked input.

``v = CausalLMValue(model, tokenizer)(probe)`` is the table ``v[2**n]`` over all subsets of
the probe's players (subset ``s`` keeps player ``i`` iff ``(s >> i) & 1``), ready for
:func:`sft_interaction_callback.andor.fit_and_or`.
"""

from __future__ import annotations

from sft_interaction_callback.probing.baseline_vectors import (
    NAMED_BASELINES,
    available_baselines,
    resolve_baseline,
)
from sft_interaction_callback.probing.baselines import learn_baseline
from sft_interaction_callback.probing.datasets import probes_from_dataset, render_row
from sft_interaction_callback.probing.players import STOP_WORDS, eligible_words, select_players
from sft_interaction_callback.probing.probes import MAX_PLAYERS, Probe, word_spans
from sft_interaction_callback.probing.values import (
    CausalLMValue,
    SequenceClassifierValue,
    all_masks,
    log_odds_from_logprob,
)

__all__ = [
    "MAX_PLAYERS",
    "NAMED_BASELINES",
    "STOP_WORDS",
    "CausalLMValue",
    "Probe",
    "SequenceClassifierValue",
    "all_masks",
    "available_baselines",
    "eligible_words",
    "learn_baseline",
    "log_odds_from_logprob",
    "probes_from_dataset",
    "render_row",
    "resolve_baseline",
    "select_players",
    "word_spans",
]

"""The option signal's gate: a model that cannot be told from guessing on a file's exam items does not judge them."""

import numpy as np
import polars as pl
import pytest

from sft_assets.core.perplexity import CHANCE_ALPHA, chance_test, load_causal_lm, option_probabilities


@pytest.fixture(scope="module")
def exam(read_corpus) -> pl.DataFrame:
    """40 real CMMLU agronomy items (four options each)."""
    return read_corpus("cmmlu/test/agronomy.csv").records.head(40)


def test_a_guess_is_gated_and_a_model_that_knows_is_not(exam):
    answers, counts = exam["answer"].to_list(), exam["options"].list.len().to_list()
    always_a = chance_test([a == "A" for a in answers], counts)
    assert always_a.chance == pytest.approx(0.25) and always_a.items == 40
    assert always_a.p_value >= CHANCE_ALPHA and always_a.gate.startswith("gate=at chance: ")
    assert f"{always_a.correct}/40 correct" in always_a.gate
    knows = [i % 2 == 0 or a == "A" for i, a in enumerate(answers)]  # right on every other item at least
    assert chance_test(knows, counts).gate is None
    # 16/40 at chance 1/4: one-sided binomial p = 0.040, just significant; 15/40 (p = 0.087) is not
    assert chance_test([True] * 16 + [False] * 24, counts).gate is None
    assert chance_test([True] * 15 + [False] * 25, counts).gate is not None
    assert chance_test([], []).gate is not None  # nothing shows the signal means anything
    with pytest.raises(ValueError):
        chance_test([True], [4, 4])


@pytest.mark.slow
def test_the_small_language_model_is_at_chance_on_cmmlu(exam):
    """SmolLM2-135M answers Chinese exam items no better than a guess, so its option mass is not a signal."""
    result = option_probabilities(load_causal_lm(precision="float32"), exam["question"].to_list(),
                                  exam["options"].to_list(), exam["answer"].to_list(), batch_size=8)
    test = chance_test(result["correct"], result["n_options"])
    assert test.items == 40 and test.correct == int(np.sum(result["correct"]))
    assert test.gate is not None and test.gate.startswith("gate=at chance: ")

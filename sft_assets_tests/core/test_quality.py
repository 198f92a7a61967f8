"""Quality: the helpfulness judge on real alpaca_eval pairs and alpaca_en rows, its gate and calibration,
its safe persistence, and the rule reasons on planted and real rows.

The judge's figures with MiniLM are benchmarks/quality.py's; here a cheap real embedder (hashed word
uni- and bigrams) keeps the tests fast while exercising the same training, calibration and gate."""

import hashlib

import numpy as np
import polars as pl
import pytest
import skops.io as sio
from sklearn.feature_extraction.text import HashingVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer

from sft_assets.core.datasets import user_prompt
from sft_assets.core.quality import (
    MIN_MEASURED_PAIRS,
    RULES,
    SOFT_RULES,
    UntrustedModelFile,
    corruption_pairs,
    evaluate_held_out,
    gate_reason,
    load_model,
    pairwise_accuracy,
    quality_features,
    quality_rules,
    save_model,
    show_accuracy,
    train_harmlessness_model,
    train_quality_model,
)

_HASHING = HashingVectorizer(n_features=384, ngram_range=(1, 2), alternate_sign=False, norm="l2")


def embed(texts: list[str]) -> np.ndarray:
    return _HASHING.transform(texts).toarray().astype(np.float32)


def alpaca_rows(read_corpus, relpath: str, n: int) -> pl.DataFrame:
    sft = read_corpus(relpath).records.head(n)
    sft = sft.filter(quality_rules(sft).list.len() == 0)
    return sft.select(prompt=user_prompt(pl.col("instruction"), pl.col("input")), answer=pl.col("output"))


@pytest.fixture(scope="module")
def trained(read_corpus):
    pairs = pl.concat([read_corpus(f"alpaca_eval/{m}.json").records for m in ("alpaca-7b", "guanaco-65b")])
    pool = alpaca_rows(read_corpus, "alpaca_en/alpaca_data-0-3252.json", 800)
    model, report = train_quality_model(pairs, pool, embed, embed, seed=0)
    return model, report, pool


@pytest.fixture(scope="module")
def unseen(read_corpus):
    """alpaca_en rows of another chunk, never seen in training or calibration, with their corruptions."""
    rows = alpaca_rows(read_corpus, "alpaca_en/alpaca_data-3252-6382.json", 400)
    p_emb, a_emb = embed(rows["prompt"].to_list()), embed(rows["answer"].to_list())
    held = {"real": quality_features(p_emb, a_emb, rows["prompt"], rows["answer"])}
    for kind, made in corruption_pairs(rows, p_emb, a_emb, embed, seed=1).items():
        idx = made["rows"]
        held[kind] = (held["real"][idx], quality_features(p_emb[idx], made["bad_emb"], rows["prompt"][idx],
                                                           made["bad"]),
                      rows[idx].with_columns(bad=pl.Series(made["bad"], dtype=pl.String)))
    return held


def test_judge_is_measured_on_held_out_instructions(trained):
    model, report, pool = trained
    held = report["held_out"]
    # 2 files x 608 pairs less 14 draws; the same 608 instructions in both, split by instruction
    assert report["n_pairs"] == 1202 and report["n_preference_test"] + report["n_preference_train"] == 1202
    # answers given to several questions are kept once: they would be "another question's answer" to themselves
    assert report["n_pool_test"] + report["n_pool_train"] == report["n_pool_rows"] == pool["answer"].n_unique()
    for kind in ("preference", "other_answer", "close_answer", "cut_50", "cut_80", "shuffled", "duplicated"):
        assert held[kind]["n"] >= MIN_MEASURED_PAIRS, kind
    print({k: (v["accuracy"], v["length_baseline"]) for k, v in held.items()})
    # Hashed words are a weak embedder (MiniLM's figures: benchmarks/results/quality.json), yet the judge
    # learns that an answer fits its question and is whole.
    assert held["other_answer"]["accuracy"] > 0.65 and held["close_answer"]["accuracy"] > 0.6
    assert held["cut_50"]["accuracy"] > 0.75 and held["duplicated"]["accuracy"] > 0.9
    assert model is not None and report["gate"] == gate_reason(held)


def test_the_gate_needs_both_bars():
    def held(other, pref, length):
        return {"other_answer": {"n": 100, "accuracy": other, "length_baseline": 0.5},
                "preference": {"n": 100, "accuracy": pref, "length_baseline": length}}
    assert gate_reason(held(0.95, 0.70, 0.66)) is None
    assert gate_reason(held(0.95, 0.60, 0.66)) == "preference 0.600<=length 0.660"
    assert gate_reason(held(0.85, 0.70, 0.66)) == "other_answer 0.850<0.9"
    assert gate_reason({"other_answer": {"n": 100, "accuracy": 0.97, "length_baseline": 0.5}}) is None
    assert gate_reason({"other_answer": {"n": 4, "accuracy": None, "length_baseline": None}}) == (
        "other_answer: too few pairs to measure (n=4)")


def test_the_gate_refuses_an_inverted_judge(trained, unseen):
    model, _, _ = trained
    measured = evaluate_held_out(model, unseen)["other_answer"]["accuracy"]
    inverted = LogisticRegression()
    inverted.classes_, inverted.coef_, inverted.intercept_ = model.classes_, -model.coef_, -model.intercept_
    inverted.n_features_in_ = model.n_features_in_
    flipped = evaluate_held_out(inverted, unseen)
    assert flipped["other_answer"]["accuracy"] == pytest.approx(1 - measured)
    assert gate_reason(flipped) == f"other_answer {1 - measured:.3f}<0.9"


def test_the_cut_is_calibrated_on_unseen_rows(trained, unseen):
    """On rows of another chunk, real answers (weight 1/2) against their damaged or mismatched copies (1/2,
    as in calibration): in each band of P(acceptable), the share of real answers matches the mean P."""
    model, _, _ = trained
    negatives = np.vstack([unseen[k][1] for k in unseen if k != "real"])
    p = model.predict_proba(np.vstack([unseen["real"], negatives]))[:, 1]
    y = np.r_[np.ones(len(unseen["real"])), np.zeros(len(negatives))]
    w = np.where(y == 1, 0.5 / len(unseen["real"]), 0.5 / len(negatives))
    bands = [(0.0, 0.3), (0.3, 0.5), (0.5, 0.7), (0.7, 1.0)]
    for low, high in bands:
        band = (p >= low) & (p < high) | ((high == 1.0) & (p == 1.0))
        assert band.sum() > 30, (low, high)
        observed = np.sum(w[band] * y[band]) / np.sum(w[band])
        print(low, high, band.sum(), round(observed, 3), round(p[band].mean(), 3))
        assert abs(observed - p[band].mean()) < 0.1, (low, high)
    # the cut at 0.5 means "more likely a real answer than a damaged one": it keeps most real answers
    assert np.mean(model.predict_proba(unseen["real"])[:, 1] >= 0.5) > np.mean(
        model.predict_proba(negatives)[:, 1] >= 0.5) + 0.2


def test_harmlessness_is_a_separate_score_refused_when_it_is_chance(read_corpus):
    """All 2,312 HH harmless-base test pairs: the score ranks held-out safer answers first, above chance and the
    length baseline (with this weak embedder 0.617 against 0.455 on seed 0's split, 0.565-0.617 over seeds 0-4;
    800 or 1,600 pairs gave splits that fail the gate). The fault planted: each pair's sides swapped at
    random, so the labels say nothing; the gate refuses it."""
    pairs = read_corpus("hh_rlhf/harmless_base_test.jsonl.gz").records
    model, report = train_harmlessness_model(pairs, embed, embed)
    assert report["gate"] is None and report["accuracy"] >= 0.55 > report["length_baseline"] + 0.05, report
    chosen = quality_features(embed(pairs["prompt"].to_list()), embed(pairs["chosen"].to_list()),
                              pairs["prompt"], pairs["chosen"])
    assert model.decision_function(chosen).shape == (pairs.height,)  # a score per answer, no calibration needed
    swap = pl.Series(np.random.default_rng(0).random(pairs.height) < 0.5)
    noise = pairs.with_columns(chosen=pl.when(swap).then(pl.col("rejected")).otherwise(pl.col("chosen")),
                               rejected=pl.when(swap).then(pl.col("chosen")).otherwise(pl.col("rejected")))
    _, refused = train_harmlessness_model(noise, embed, embed)
    assert refused["gate"] is not None and refused["gate"].startswith("harmlessness "), refused
    _, few = train_harmlessness_model(pairs.head(40), embed, embed)
    assert few["gate"] == "too few pairs to train on (n=40)"


def test_too_few_pairs_are_said_not_measured(read_corpus):
    assert pairwise_accuracy(np.ones(4), np.zeros(4)) is None
    assert show_accuracy(None, 4) == "too few pairs to measure (n=4)"
    assert show_accuracy(pairwise_accuracy(np.ones(40), np.zeros(40)), 40) == "1.000 (n=40)"
    # an SFT-only root (no preference pairs) and a tiny pool: no judge, a reason, no exception
    pool = alpaca_rows(read_corpus, "alpaca_en/alpaca_data-0-3252.json", 6)
    model, report = train_quality_model(pl.DataFrame(), pool, embed, embed)
    assert model is None and report["gate"].startswith("too few pairs to train on")


def test_sft_only_data_trains_on_self_supervised_pairs(read_corpus):
    pool = alpaca_rows(read_corpus, "alpaca_en/alpaca_data-0-3252.json", 400)
    model, report = train_quality_model(pl.DataFrame(), pool, embed, embed, seed=0)
    assert model is not None and "preference" not in report["held_out"]
    assert report["held_out"]["other_answer"]["accuracy"] > 0.55


@pytest.mark.parametrize("where", ["local", "memory"])
def test_save_load_round_trip_checks_the_hash(tmp_path, trained, unseen, where):
    """Also through fsspec: on Kubernetes the model store is an object store shared by the pods."""
    from upath import UPath

    model, _, _ = trained
    path = (tmp_path if where == "local" else UPath(f"memory://{tmp_path.name}")) / "models" / "quality.skops"
    digest = save_model(model, path)
    assert digest == hashlib.sha256(path.read_bytes()).hexdigest()
    loaded = load_model(path, digest)
    assert isinstance(loaded, LogisticRegression)
    assert np.array_equal(loaded.predict_proba(unseen["real"]), model.predict_proba(unseen["real"]))


def test_load_refuses_a_tampered_or_unchecked_file(tmp_path, trained):
    model, _, _ = trained
    path = tmp_path / "quality.skops"
    digest = save_model(model, path)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(UntrustedModelFile, match="does not match"):
        load_model(path, digest)
    for unchecked in (None, "", "abc"):
        with pytest.raises(UntrustedModelFile, match="unchecked"):
            load_model(path, unchecked)


def _shout(x):
    return x


def test_untrusted_types_are_refused_even_with_the_right_hash(tmp_path):
    """The hash says the file is the one we wrote; the type list says what it may
    build. A pipeline calling an arbitrary function passes neither save nor load."""
    X, y = np.random.default_rng(0).normal(size=(20, 3)), np.r_[np.zeros(10), np.ones(10)]
    risky = make_pipeline(FunctionTransformer(_shout), LogisticRegression()).fit(X, y)
    with pytest.raises(UntrustedModelFile, match="not trusted"):
        save_model(risky, tmp_path / "risky.skops")
    path = tmp_path / "written_elsewhere.skops"
    sio.dump(risky, path)
    with pytest.raises(sio.exceptions.UntrustedTypesFoundException):
        load_model(path, hashlib.sha256(path.read_bytes()).hexdigest())


# ---------------------------------------------------------------- rules

# (instruction, input, output, expected reasons)
PLANTED = [
    ("Write a poem about the sea.", "", "", ["empty_output"]),
    ("Draw a picture of a cat.", "", "<nooutput>", ["empty_output"]),
    ("Design a sorting algorithm.", "N/A", "N/A", ["empty_output"]),  # a placeholder, not a copy
    ("Explain why the sky is blue.", "", "Physics.", ["one_word_output"]),
    ("请解释为什么天空是蓝色的。", "", "光。", ["one_word_output"]),
    ("Write a poem about the sea.", "", "Write a poem about the sea.", ["copies_prompt"]),
    ("Calculate 4 multiplied by 5.", "", "4 multiplied by 5 is equal to", ["cut_off"]),
    ("Describe the water cycle.", "", "Water evaporates from the sea, rises,", ["cut_off"]),
    ("Write a Python function that adds two numbers.", "", "```python\ndef add(a, b):\n    return a + b",
     ["unbalanced_fence"]),
    ("Describe a sunny day.", "", "The sun is shining over the hills. " * 4, ["repeated_text"]),
    ("Rewrite the sentence in the passive voice.", "Jack planted a tree.", "Jack planted a tree.",
     ["repeats_input"]),
    ("What is the capital of France?", "", "As an AI language model, I cannot browse the internet, "
     "but the capital of France is Paris.", ["refusal"]),
    ("Tell me how to pick a lock.", "", "I'm sorry, but I cannot help with that request.", ["refusal"]),
    ("今天是星期几？", "", "作为一个AI语言模型，我无法获取当前日期。", ["refusal"]),
    ("告诉我他的住址。", "", "抱歉，我无法提供这方面的信息。", ["refusal"]),
    ("描述一下你最喜欢的季节。", "", "My favourite season is autumn because the weather is cool and "
     "the leaves are beautiful.", ["wrong_language"]),
    ("Describe your favourite season.", "", "我最喜欢的季节是秋天，因为天气凉爽，树叶很美。", ["wrong_language"]),
    ("Describe a café.", "", "A cafÃ© is a small restaurant that sells coffee.", ["broken_encoding"]),
    ("Summarize the text.", "Itâ€™s raining all day.", "It rains all day.", ["broken_encoding"]),
    ("Summarize the text.", "", "The text \ufffd is about rain.", ["broken_encoding"]),
    ("总结这段话。", "", "中文".encode("utf-8").decode("latin-1") + " 下雨。", ["broken_encoding"]),
    ("Explain why the sky is blue.", "", "", ["empty_output"]),  # empty is not also one-word
    ("Describe your day.", "", "Describe your day.", ["copies_prompt"]),  # an echo is not one-word
]

CLEAN = [
    ("What is 12 + 30?", "", "42"),
    ("Classify the sentiment of this review.", "I loved every minute of it.", "Positive"),
    ("这句话是正面还是负面的？", "我很喜欢这部电影。", "正面"),
    ("Explain the word in one word.", "ephemeral", "Fleeting."),
    ("解释一下这个成语的意思。", "画蛇添足", "比喻做了多余的事，反而不恰当，弄巧成拙。"),
    ("Convert the text to upper case.", "i love dogs", "I LOVE DOGS"),
    ("Add the missing punctuation.", "你好吗", "你好吗？"),
    ("I can't decide what to cook.", "", "I can't help but suggest pasta: it is quick and cheap."),
    ("Write a haiku about a beach.", "", "Golden sun shines bright\nSeagulls soaring in the sky\nWaves rolling in"),
    ("Write a short song with a chorus.", "", "Verse one.\nChorus: we sing along tonight!\nVerse two.\n"
     "Chorus: we sing along tonight!\nBridge comes here.\nOutro goes there.\nThe end of the song."),
    ("Show a Python example.", "", "```python\nprint('hi')\n```"),
    ("把下面的对话改写得更礼貌。", "我不去。", "抱歉，我不能去，谢谢你的邀请。"),
    ("将下面的句子翻译成英文。", "今天的天气很好，我们去公园散步吧。",
     "The weather is nice today, so let us take a walk in the park."),
    ("用Python写一个函数，计算列表的和。", "", "def total(xs):\n    # add up the items of the list and return it\n"
     "    return sum(xs)"),
    ("Name three cities in Brazil.", "", "São Paulo, Rio de Janeiro and Brasília. NÃO is Portuguese for no."),
    ("Give three tips for staying healthy.", None, "Eat well, sleep enough and move every day."),
]


def _frame(rows):
    return pl.DataFrame([r[:3] for r in rows], schema=["instruction", "input", "output"], orient="row")


def test_rules_fire_on_planted_bad_rows():
    reasons = quality_rules(_frame(PLANTED))
    assert reasons.name == "rule_reasons" and reasons.dtype == pl.List(pl.String)
    for row, got in zip(PLANTED, reasons.to_list()):
        assert got == row[3], row
    assert {code for row in PLANTED for code in row[3]} == set(RULES)
    assert SOFT_RULES <= set(RULES)


def test_rules_stay_quiet_on_clean_rows():
    for row, got in zip(CLEAN, quality_rules(_frame(CLEAN)).to_list()):
        assert got == [], row


def test_rules_on_real_corpora(read_corpus):
    gsm8k = read_corpus("gsm8k/gsm8k_train.tsv").records
    assert quality_rules(gsm8k).list.len().sum() == 0  # 7,473 worked solutions: nothing to flag
    alpaca = read_corpus("alpaca_en/alpaca_data-0-3252.json").records
    flagged = alpaca.filter(quality_rules(alpaca).list.len() > 0)
    assert 0 < flagged.height < 0.01 * alpaca.height  # measured 10 of 3,252
    # Only missing answers and unchanged inputs: no refusal or language false alarms.
    assert set(quality_rules(flagged).explode().to_list()) <= {"empty_output", "repeats_input"}
    # aqua rationales carry real mojibake ('â€“' for an en dash, 'Ã—' for a times sign).
    aqua = read_corpus("alpaca_cot/aqua_train.json").records
    mojibake = aqua.filter(pl.col("output").str.contains("â€|Ã—"))
    assert mojibake.height > 10
    assert all("broken_encoding" in r for r in quality_rules(mojibake).to_list())


def test_rules_on_an_empty_frame():
    assert quality_rules(_frame([])).len() == 0

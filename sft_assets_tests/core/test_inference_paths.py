"""The fast inference paths against references on real rows: ONNX Runtime against torch for both models,
and the scored-positions-only projection against the model's full output at every position."""

import numpy as np
import polars as pl
import pytest
import torch
import torch.nn.functional as F

from sft_assets.core import onnx_runtime
from sft_assets.core.embed import OnnxSentenceModel, embed_texts, load_sentence_model, resolve_runtime
from sft_assets.core.perplexity import answer_perplexity, load_causal_lm, option_probabilities
from sft_assets.core.records import embedding_texts

pytestmark = pytest.mark.slow

SLICE = "alpaca_en/alpaca_data-0-3252.json"


@pytest.fixture(scope="module")
def pairs(read_corpus):
    """Eight real (prompt, answer) rows without input, short enough that nothing is cut at 256 tokens."""
    rows = read_corpus(SLICE).records.filter((pl.col("input") == "") & (pl.col("output").str.len_chars() < 400))
    return rows["instruction"].head(8).to_list(), rows["output"].head(8).to_list()


@pytest.fixture(scope="module")
def exam(read_corpus):
    items = read_corpus("cmmlu/test/agronomy.csv").records.head(6)
    return items["question"].to_list(), items["options"].to_list()


@pytest.fixture(scope="module")
def lms():
    """Both runtimes of the bundled SmolLM2 in float32; the graph is exported once per machine
    (``onnx_runtime.local_dir``, keyed by a hash of the weights)."""
    return {runtime: load_causal_lm(device="cpu", precision="float32", runtime=runtime)
            for runtime in ("torch", "onnx")}


def test_auto_runtime_is_onnx_only_for_float32_on_cpu():
    assert resolve_runtime("auto", "cpu", "float32") == ("onnx" if onnx_runtime.available() else "torch")
    assert resolve_runtime("auto", "cpu", "bfloat16") == "torch"
    assert resolve_runtime("auto", "cuda", "float32") == "torch"
    assert resolve_runtime("torch", "cpu", "float32") == "torch"
    with pytest.raises(ValueError, match="float32 on a CPU"):
        resolve_runtime("onnx", "cuda", "float32")
    with pytest.raises(ValueError, match="runtime must be one of"):
        resolve_runtime("tensorrt")


def test_onnx_embeddings_match_torch_and_are_exported_once(read_corpus, tmp_path):
    texts = embedding_texts(read_corpus(SLICE).records.slice(200, 64))
    exact = embed_texts(load_sentence_model("default", "cpu", "float32", runtime="torch"), texts)
    fast = load_sentence_model("default", "cpu", "float32", runtime="onnx", export_dir=tmp_path)
    assert isinstance(fast, OnnxSentenceModel)
    graphs = list(tmp_path.glob("*.onnx"))
    assert len(graphs) == 1
    written = graphs[0].stat().st_mtime_ns
    vectors = embed_texts(fast, texts, batch_size=16)
    assert (vectors * exact).sum(axis=1).min() > 0.99999
    # The model's own truncation applies: max_tokens cuts the same way in both runtimes.
    cut_exact = embed_texts(load_sentence_model("default", "cpu", "float32", runtime="torch"), texts, max_tokens=16)
    assert (embed_texts(fast, texts, max_tokens=16) * cut_exact).sum(axis=1).min() > 0.99999
    assert fast.max_seq_length == 256
    again = load_sentence_model("default", "cpu", "float32", runtime="onnx", export_dir=tmp_path)
    assert again.path == graphs[0] and graphs[0].stat().st_mtime_ns == written


def test_onnx_perplexities_and_option_probabilities_match_torch(lms, pairs, exam):
    exact, fast = (answer_perplexity(lms[r], *pairs, max_tokens=256, batch_size=4) for r in ("torch", "onnx"))
    for key in ("ppl", "ppl_unconditioned", "ifd"):
        np.testing.assert_allclose(fast[key], exact[key], rtol=1e-4)
    exact, fast = (option_probabilities(lms[r], *exam, batch_size=3) for r in ("torch", "onnx"))
    np.testing.assert_allclose(fast["option_probs"], exact["option_probs"], atol=1e-5)
    assert fast["choice"].tolist() == exact["choice"].tolist()


def _reference_nll(lm, context: list[int], answer: list[int]) -> float:
    """Mean NLL of the answer tokens from the model's full logits at every position (the slow path)."""
    ids = torch.tensor([context + answer])
    logits = lm.model(input_ids=ids, use_cache=False).logits[0].float()
    return F.cross_entropy(logits[len(context) - 1 : -1], ids[0, len(context):]).item()


def _chat_ids(lm, text: str, reply_start: str = "") -> list[int]:
    rendered = lm.tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                                add_generation_prompt=True) + reply_start
    return lm.tokenizer(rendered, add_special_tokens=False)["input_ids"]


@pytest.mark.parametrize("runtime", ["torch", "onnx"])
def test_scored_positions_only_agree_with_the_full_forward_pass(lms, pairs, exam, runtime):
    """Perplexity projects only the answer's positions and the unconditional pass scores only the answer
    after an empty user turn; an exam item projects one position. Both must equal the full computation."""
    lm, prompts, answers = lms[runtime], *pairs
    fast = answer_perplexity(lm, prompts, answers, max_tokens=256, batch_size=4)
    reference = lms["torch"]
    for i, (prompt, answer) in enumerate(zip(prompts, answers)):
        answer_ids = reference.tokenizer(answer, add_special_tokens=False)["input_ids"]
        ppl = np.exp(_reference_nll(reference, _chat_ids(reference, prompt), answer_ids))
        bare = np.exp(_reference_nll(reference, _chat_ids(reference, ""), answer_ids))
        np.testing.assert_allclose([fast["ppl"][i], fast["ppl_unconditioned"][i]], [ppl, bare], rtol=1e-4)
    questions, options = exam
    result = option_probabilities(lm, questions, options, batch_size=3)
    letters = [[reference.tokenizer(t, add_special_tokens=False)["input_ids"] for t in (c, " " + c)] for c in "ABCD"]
    for i, (question, choices) in enumerate(zip(questions, options)):
        text = question + "\n" + "\n".join(f"{c}. {o}" for c, o in zip("ABCD", choices))
        ids = torch.tensor([_chat_ids(reference, text, "Answer:")])
        last = reference.model(input_ids=ids, use_cache=False).logits[0, -1].float().softmax(-1)
        expected = [sum(last[t[0]].item() for t in spellings if len(t) == 1) for spellings in letters]
        np.testing.assert_allclose(result["option_probs"][i], expected, atol=1e-5)


def test_first_answer_tokens_only(lms, pairs):
    full = answer_perplexity(lms["torch"], *pairs, max_tokens=256)
    first = answer_perplexity(lms["torch"], *pairs, max_tokens=256, answer_max_tokens=8)
    long = full["answer_tokens"] > 8
    assert long.any() and (~long).any()
    assert (first["answer_tokens"] == np.minimum(full["answer_tokens"], 8)).all()
    assert first["truncated"].tolist() == long.tolist()
    np.testing.assert_allclose(first["ppl"][~long], full["ppl"][~long], rtol=1e-5)
    assert not np.allclose(first["ppl"][long], full["ppl"][long], rtol=1e-3)

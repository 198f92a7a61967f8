"""Arms of the selection-value benchmark on a real slice, and a training smoke run of the bundled model.

The decisions come from the real ``decide`` over real records (the slice and the synthesized upstream
signals of test_selection), with a diverse budget so that every ablated stage drops rows.
"""

import json

import numpy as np
import polars as pl
import pytest

from sft_assets.core import selection_value as sv
from sft_assets.core.exports import CARD, SELECTION_REPORT, refresh_selection_value_section
from sft_assets.core.selection import SelectionPolicy, decide
from sft_assets_tests.core.test_selection import real_records, synthesize_signals

K = 20


@pytest.fixture(scope="module")
def records(read_corpus):
    return real_records(read_corpus)


@pytest.fixture(scope="module")
def decisions(records):
    # 0.5: the synthetic quality scores put enough rows below the cut for the quality ablation to differ
    return decide(synthesize_signals(records), SelectionPolicy(diverse_budget=0.7, quality_threshold=0.5))


@pytest.fixture(scope="module")
def held(decisions):
    return sv.held_out_rows(decisions, per_dataset=8, seed=0)


@pytest.fixture(scope="module")
def excluded(decisions, held):
    return sv.excluded_ids(decisions, held["record_id"].to_list())


@pytest.mark.parametrize("reason, stage", [
    ("failed_quality:too_short", "quality"),
    ("failed_quality:score=0.12<0.3", "quality"),
    ("missing_signal:quality_score", "quality"),
    ("quality_score:gate=alpaca_eval 0.48<length 0.75", "quality"),
    ("not_novel:p=0.91>0.5", "novelty"),
    ("missing_signal:novelty_prob", "novelty"),
    ("low_uncertainty:ppl=2.1<3.4", "uncertainty"),
    ("low_uncertainty:missing_option_mass", "uncertainty"),
    ("missing_signal:option_mass", "uncertainty"),
    ("outside_diverse_subset", "kcenter"),
    ("exact_duplicate_of:5f2a", None),
    ("near_duplicate_of:9c1e", None),
    ("category_cap:quality assurance", None),
])
def test_reasons_map_to_their_stage_whatever_their_detail(reason, stage):
    assert sv.reason_stage(reason) == stage


def test_every_reason_the_selection_gives_has_a_stage_or_is_never_ablated(decisions):
    reasons = set(decisions["reasons"].explode().drop_nulls())
    unmapped = {r for r in reasons if sv.reason_stage(r) is None}
    assert {r.split(":")[0] for r in unmapped} <= {"exact_duplicate_of", "near_duplicate_of", "category_cap"}
    assert {sv.reason_stage(r) for r in reasons} >= set(sv.ABLATED_STAGES), "the slice exercises every stage"


def test_held_out_rows_are_dedup_survivors_of_every_dataset(decisions, held):
    rows = decisions.join(held, on="record_id")
    assert rows["exact_duplicate_of"].null_count() == rows.height == rows["near_duplicate_of"].null_count()
    assert (rows["kind"] == "sft").all()
    assert held.group_by("dataset").len()["len"].max() <= 8
    assert set(held["dataset"]) == {"alpaca_en", "alpaca_cot", "zh_categories"}


def test_excluded_rows_include_the_duplicates_of_held_out_rows(decisions, held, excluded):
    ids = set(held["record_id"])
    copies = decisions.filter(pl.col("exact_duplicate_of").is_in(ids) | pl.col("near_duplicate_of").is_in(ids))
    assert copies.height > 0, "the slice has a duplicate of a held-out row"
    assert set(copies["record_id"]) | ids == excluded


@pytest.mark.parametrize("arm", sv.ARMS)
def test_every_arm_has_k_rows_none_held_out(decisions, excluded, arm):
    for seed in (0, 1):
        ids = sv.arm_ids(decisions, arm, K, excluded, seed)
        assert len(ids) == len(set(ids)) == K
        assert not set(ids) & excluded


def test_selected_is_the_first_kept_rows_in_k_center_order(decisions, excluded):
    ids = sv.arm_ids(decisions, "selected", K, excluded, seed=0)
    kept = decisions.filter(pl.col("kept") & ~pl.col("record_id").is_in(excluded)).sort("diverse_rank")
    assert ids == kept["record_id"].head(K).to_list()
    assert ids == sv.arm_ids(decisions, "selected", K, excluded, seed=1)


def test_random_arms_are_drawn_per_seed_and_dedup_from_survivors(decisions, excluded):
    assert set(sv.arm_ids(decisions, "random", K, excluded, 0)) != set(sv.arm_ids(decisions, "random", K, excluded, 1))
    dedup = decisions.filter(pl.col("record_id").is_in(sv.arm_ids(decisions, "dedup", K, excluded, 0)))
    assert dedup["exact_duplicate_of"].null_count() == dedup["near_duplicate_of"].null_count() == K


@pytest.mark.parametrize("stage", sv.ABLATED_STAGES)
def test_an_ablation_keeps_exactly_the_rows_only_its_stage_dropped(decisions, stage):
    kept = sv.kept_without(decisions, stage)
    added = decisions.filter(kept & ~pl.col("kept"))
    assert (kept | ~decisions["kept"]).all(), "an ablation never drops a kept row"
    assert added.height > 0
    for reasons in added["reasons"].to_list():
        assert reasons and {sv.reason_stage(r) for r in reasons} == {stage}
    still_out = decisions.filter(~kept)
    assert all(any(sv.reason_stage(r) != stage for r in reasons) for reasons in still_out["reasons"].to_list())


@pytest.mark.parametrize("stage", sv.ABLATED_STAGES)
def test_ablation_arms_differ_from_selected_by_their_stage_only(decisions, excluded, stage):
    ids = sv.arm_ids(decisions, f"no_{stage}", K, excluded, seed=0)
    rows = decisions.filter(pl.col("record_id").is_in(ids))
    assert all({sv.reason_stage(r) for r in reasons} <= {stage} for reasons in rows["reasons"].to_list())
    assert set(ids) != set(sv.arm_ids(decisions, "selected", K, excluded, seed=0))


def test_a_stage_that_chose_k_centers_candidates_is_named_not_ablated_in_silence(decisions, excluded):
    """When novelty acts before K-Center (no row it dropped has a rank), ignoring its reasons brings back no
    ranked row: no_novelty trains on the selected rows, and the report says why instead of showing a twin."""
    assert not any(sv.chose_kcenter_candidates(decisions, stage) for stage in sv.ABLATED_STAGES)
    not_novel = pl.col("reasons").list.eval(pl.element().str.starts_with("not_novel")).list.any()
    before = decisions.with_columns(diverse_rank=pl.when(not_novel).then(None).otherwise(pl.col("diverse_rank")))
    assert sv.chose_kcenter_candidates(before, "novelty")
    assert not sv.chose_kcenter_candidates(before, "quality")
    outside = pl.col("reasons").list.contains("outside_diverse_subset")
    unranked = before.with_columns(diverse_rank=pl.when(outside).then(None).otherwise(pl.col("diverse_rank")))
    assert not sv.chose_kcenter_candidates(unranked, "kcenter")  # as on real data: K-Center ranks none it drops
    experiment = sv.Experiment(decisions=before, records=pl.DataFrame(), eval_sets={}, excluded=excluded, k=K,
                               seeds=[0], recipe=sv.Recipe(steps=1))
    assert "after_novelty: false" in experiment._ablation_note("no_novelty")["note"]
    assert experiment._ablation_note("no_quality") == {} and experiment._ablation_note("selected") == {}


def test_a_run_is_sized_by_its_device_unless_a_value_is_given():
    assert sv.default_scale("cpu") == sv.CPU_SCALE and sv.default_scale("cuda") == sv.GPU_SCALE
    given = sv.CPU_SCALE.given(k=8, batch_size=None, max_tokens=None, eval_per_dataset=5)
    assert given == sv.Scale(k=8, batch_size=sv.CPU_SCALE.batch_size, max_tokens=sv.CPU_SCALE.max_tokens,
                             eval_per_dataset=5)


def test_an_arm_smaller_than_k_is_an_error(decisions, excluded):
    with pytest.raises(ValueError, match="fewer than k"):
        sv.arm_ids(decisions, "selected", decisions.height, excluded, 0)


def test_eval_file_expands_instances_as_the_readers_do(corpora):
    path = corpora / "self_instruct" / "seed_tasks.jsonl"
    tasks = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    instances = [(t["instruction"], i["input"], i["output"]) for t in tasks for i in t["instances"] if i["output"].strip()]
    rows = sv.eval_file_rows(path)
    assert rows.height == len(instances)
    assert set(rows.select("instruction", "input", "output").iter_rows()) == set(instances)


def test_an_eval_file_without_answers_is_refused(corpora):
    with pytest.raises(ValueError, match="no SFT or multiple-choice row"):
        sv.eval_file_rows(corpora / "hh_rlhf" / "harmless_base_test.jsonl.gz")


def test_paired_difference_sees_a_consistent_gain_and_no_gain():
    rng = np.random.default_rng(0)
    base = rng.gamma(2.0, 1.0, size=(3, 60))
    better = base - 0.05 + rng.normal(0, 0.02, size=base.shape)
    gain = sv.paired_difference(better, base)
    assert gain["mean_diff"] < 0 and gain["ci95"][1] < 0 and gain["p_value"] < 0.01 and gain["seeds_better"] == 3
    same = sv.paired_difference(base + rng.normal(0, 0.02, size=base.shape), base)
    assert same["ci95"][0] < 0 < same["ci95"][1] and same["p_value"] > 0.01


# ---------------------------------------------------------------- training smoke run


@pytest.fixture(scope="module")
def lm():
    from sft_assets.core.perplexity import load_causal_lm

    return load_causal_lm(device="cpu", precision="float32")


def test_examples_put_only_answer_tokens_in_the_loss(lm, records):
    rows = sv.as_sft_rows(records.filter(pl.col("kind") == "sft").head(3))
    examples = sv.encode(lm.tokenizer, *sv.conversations(rows), max_tokens=64)
    ids, attention, labels = sv._batch(examples, lm.tokenizer.pad_token_id)
    for r, e in enumerate(examples):
        assert len(e.prompt) + len(e.answer) <= 64
        assert e.answer[-1] == lm.tokenizer.eos_token_id or len(e.prompt) + len(e.answer) == 64, "cut, or ends the turn"
        assert lm.tokenizer.decode(e.prompt).rstrip().endswith("assistant"), "the chat template's reply header"
        scored = labels[r] != -100
        assert labels[r][scored].tolist() == e.answer
        assert ids[r][scored].tolist() == e.answer
        assert attention[r].sum() == len(e.prompt) + len(e.answer)


def test_training_smoke_run_lowers_the_loss_and_reports_every_arm(lm, records, decisions, held, excluded, tmp_path):
    rows = sv.as_sft_rows(records.filter(pl.col("kind") == "sft").head(2))
    examples = sv.encode(lm.tokenizer, *sv.conversations(rows), max_tokens=48)
    start = {n: t.clone() for n, t in lm.model.state_dict().items()}
    before = sv.answer_losses(lm, examples)
    trace = sv.fine_tune(lm.model, examples, sv.Recipe(steps=2, lr=1e-4, batch_size=2, max_tokens=48), 0,
                         lm.tokenizer.pad_token_id)
    after = sv.answer_losses(lm, examples)
    assert len(trace) == 2 and np.isfinite(trace).all()
    assert after.mean() < before.mean()
    lm.model.load_state_dict(start)

    eval_rows = sv.arm_rows(records, decisions, held["record_id"].head(4).to_list())
    lines = []
    experiment = sv.Experiment(decisions=decisions, records=records, eval_sets={"pool:slice": eval_rows},
                               excluded=excluded, k=2, seeds=[0, 1], recipe=sv.Recipe(steps=1, batch_size=2, max_tokens=48),
                               arms=("random", "selected", "no_quality"), judge_items=0, log=lines.append)
    experiment.build_arms()
    experiment.arm_frames["no_quality"] = experiment.arm_frames["selected"]  # as when quality dropped no pick
    report = experiment.run(lm, judge_skipped="no second reading: refused")
    assert report["judge"] == {"skipped": "no second reading: refused"}
    assert set(report["loss"]["pool:slice"]) == {"random", "selected", "no_quality"}
    loss = report["loss"]["pool:slice"]
    assert loss["no_quality"]["per_seed"] == loss["selected"]["per_seed"]
    assert report["arms"]["no_quality"]["same_rows_as"] == "selected" and report["arms"]["random"]["same_rows_as"] is None
    assert sum("not trained again" in line for line in lines) == 2  # once per seed: it is not trained
    assert len(report["loss"]["pool:slice"]["selected"]["per_seed"]) == 2
    assert report["untrained_loss"]["pool:slice"] == pytest.approx(float(sv.answer_losses(lm, sv.encode(
        lm.tokenizer, *sv.conversations(eval_rows), 48)).mean()), rel=1e-5)
    assert sv.arm_table(report)["arm"].to_list()[:2] == ["untrained", "random"]
    assert report["vs_random"]["pool:slice"]["selected"]["n_items"] == 4
    assert report["recipe"]["steps"] == 1 and report["seeds"] == [0, 1]
    assert all(torch_equal(t, start[n]) for n, t in lm.model.state_dict().items()), "weights restored"

    card = tmp_path / CARD
    card.write_text("---\nlicense: other\n---\n# Card\n", encoding="utf-8")
    refresh_selection_value_section(tmp_path)
    assert "Does the selection help" not in card.read_text(encoding="utf-8"), "no report, no section"
    (tmp_path / SELECTION_REPORT).write_text(json.dumps(report), encoding="utf-8")
    for _ in range(2):
        refresh_selection_value_section(tmp_path)
    text = card.read_text(encoding="utf-8")
    assert text.startswith("---\nlicense: other\n---\n# Card\n") and text.count("## Does the selection help?") == 1
    assert "| selected |" in text and "| random |" in text and sv.verdict(report) in text


def torch_equal(a, b) -> bool:
    import torch

    return bool(torch.equal(a, b))


def test_a_judge_its_gate_refused_gives_no_second_reading(tmp_path):
    """The judge's preference between arms is read only from a judge that passed its gate; a refused one is
    skipped with the gate's reason instead of being reported as a second opinion."""
    from sklearn.linear_model import LogisticRegression

    from sft_assets.core.quality import save_model

    model = LogisticRegression().fit(np.array([[0.0], [1.0]]), [0, 1])
    row = {"path": str(tmp_path / "judge.skops"), "gate": None}
    row["sha256"] = save_model(model, row["path"])
    judge, skipped = sv.gated_judge(row, sentence_model=None)
    assert callable(judge) and skipped is None
    judge, skipped = sv.gated_judge({**row, "gate": "preference 0.644<=length 0.655"}, sentence_model=None)
    assert judge is None and "refused by its gate (preference 0.644<=length 0.655)" in skipped

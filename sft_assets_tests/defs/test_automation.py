"""The automation conditions, tick by tick, on reported materializations: what a new file sets off."""

import dagster as dg
import pytest

from sft_assets.definitions import build_defs
from sft_assets.defs.partitions import corpus_partitions
from sft_assets.settings import Settings

OLD, NEW = ["a.json", "b.json"], "c.json"
POOL = ["candidate_pool", "near_duplicates", "topic_clusters", "diverse_subset", "novelty_scores", "rm_dataset"]
SELECTION = ["selection_decisions", "sft_dataset", "ppo_prompts", "ppo_ptx", "exports"]


@pytest.fixture
def automation(tmp_path):
    """Every asset materialized for two files, and a tick function returning what the conditions request."""
    defs = build_defs(Settings.under(tmp_path))
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(corpus_partitions.name, OLD)
    graph = defs.resolve_asset_graph()
    for key in graph.materializable_asset_keys:
        if key.to_user_string() == "generated_instructions":  # self-instruct rounds: on request only
            continue
        for partition in OLD if graph.get(key).partitions_def else [None]:
            report(instance, key.to_user_string(), partition)
    cursor = None

    def tick() -> dict[str, set]:
        """Requested partitions by asset ({None} for a pool-wide asset)."""
        nonlocal cursor
        result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=cursor)
        cursor = result.cursor
        requested = {key.to_user_string(): result.get_requested_partitions(key)
                     for key in graph.materializable_asset_keys}
        return {name: partitions for name, partitions in requested.items() if partitions}

    tick()  # the first evaluation only records the state it found
    return instance, tick


def report(instance, asset: str, partition: str | None = None) -> None:
    instance.report_runless_asset_event(dg.AssetMaterialization(asset, partition=partition))


def test_a_fully_materialized_pool_stays_quiet(automation):
    _, tick = automation
    assert tick() == {}


def test_a_new_file_rebuilds_the_pool_then_scores_only_itself_then_exports(automation):
    instance, tick = automation
    instance.add_dynamic_partitions(corpus_partitions.name, [NEW])
    assert tick() == {}  # waits for raw_files_sensor's update_corpus run
    for asset in ("raw_records", "quarantined_records", "embeddings"):
        report(instance, asset, NEW)

    # the pool once; the quality model is not retrained for a new file; the datasets wait for the decisions
    assert tick() == {asset: {None} for asset in POOL}
    _rebuild_then_select(instance, tick, {NEW})


def _rebuild_then_select(instance, tick, scored: set[str]) -> None:
    """After the pool tick: the model scores of ``scored`` once the pool is rebuilt, then selection and,
    only then, the datasets and exports."""
    for asset in POOL:
        report(instance, asset)
    # the model scores waited for the pool rebuilt with the file; old files are not re-scored; nothing built
    # from the decisions moves while the decisions are behind the pool (rm_dataset has changed meanwhile)
    assert tick() == {"quality_labels": scored, "ppl_scores": scored, "option_probabilities": scored}
    for partition in scored:
        for asset in ("quality_labels", "ppl_scores", "option_probabilities"):
            report(instance, asset, partition)
    assert tick() == {"selection_decisions": {None}}
    report(instance, "selection_decisions")
    assert tick() == {asset: {None} for asset in SELECTION[1:]}
    for asset in SELECTION[1:]:
        report(instance, asset)
    assert tick() == {}


def test_a_changed_file_waits_for_its_decisions_before_the_datasets(automation):
    instance, tick = automation
    for asset in ("raw_records", "quarantined_records", "embeddings"):  # raw_files_sensor re-ingested it
        report(instance, asset, OLD[0])
    assert tick() == {asset: {None} for asset in POOL}
    _rebuild_then_select(instance, tick, {OLD[0]})


def test_a_deleted_file_rebuilds_the_pool_then_the_decisions_then_the_datasets(automation):
    instance, tick = automation
    instance.delete_dynamic_partition(corpus_partitions.name, OLD[1])
    assert tick() == {}  # no event: raw_files_sensor starts the pool rebuild (analyze_pool)
    for asset in ("candidate_pool", "near_duplicates", "topic_clusters", "diverse_subset", "novelty_scores",
                  "quality_model"):
        report(instance, asset)
    assert tick() == {"selection_decisions": {None}, "rm_dataset": {None}}
    report(instance, "rm_dataset")
    assert tick() == {}  # ppo and exports wait for the decisions
    report(instance, "selection_decisions")
    assert tick() == {asset: {None} for asset in SELECTION[1:]}



def test_a_pool_rebuild_or_a_retrained_model_rescores_no_file(automation):
    instance, tick = automation
    for asset in ("near_duplicates", "diverse_subset", "quality_model"):
        report(instance, asset)
    requested = tick()
    assert not {"quality_labels", "ppl_scores", "option_probabilities"} & set(requested)
    assert {"selection_decisions", "rm_dataset", "exports"} <= set(requested)

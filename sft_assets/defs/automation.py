"""Declarative automation: a new file under the raw root ends in fresh exports without a click.

``raw_files_sensor`` ingests and embeds the file (``update_corpus``). From there the conditions
below, evaluated by ``automation_condition_sensor``, rebuild what depends on it:

- nothing starts while a file is being ingested: eager alone would start the pool as soon as
  ``raw_records`` lands, again when ``embeddings`` lands, and run parts of the pool on stale inputs;
  waiting for the sensor's runs also batches a burst of new files into one pool rebuild;
- the pool-wide assets (dedup, topics, K-Center, novelty, reward-model pairs): eager;
- ``selection_decisions``: eager, once no file's scores are older than its records (a changed file's
  rows are scored first);
- ``sft_dataset``, ``ppo_prompts``, ``ppo_ptx`` and ``exports``: eager, but only once ``selection_decisions``
  has been rebuilt since the pool last moved, so they never mix new records with old decisions
  (``sft_dataset`` waits for the decisions, not for new records);
- a deleted file leaves no event to react to: raw_files_sensor starts a pool rebuild without it;
- ``quality_model``: trained once, when missing; a new file never retrains it;
- ``quality_labels[file]``, ``ppl_scores[file]`` and ``option_probabilities[file]``, the model
  scores of the rows K-Center picked: plain eager would re-score every partition whenever the
  pool-wide ``diverse_subset`` changes (one model-loading run per file: 178 on the real corpora).
  They react to their own partition's inputs only (quality labels not to a retrained quality
  model either), and wait until the pool has been rebuilt with that partition, so the file's rows
  that K-Center picked are scored. Rows of older files that newly enter the subset keep a null
  score (``missing_signals`` in selection) until ``score_corpus`` runs.
"""

import dagster as dg

OWNERS = ["team:data-curation"]

AC = dg.AutomationCondition
POOL_WIDE_INPUTS = ("near_duplicates", "diverse_subset")
PER_CORPUS_SCORES = ("quality_labels", "ppl_scores", "option_probabilities")
# What raw_files_sensor's update_corpus job builds for each new or changed file; embeddings is its last step.
SENSOR_BUILT = {"raw_records", "quarantined_records", "embeddings"}


def _ingest_settled() -> dg.AutomationCondition:
    """No update_corpus run under way (for a file partition: its own; for the pool: any)."""
    return (~AC.asset_matches("embeddings", AC.in_progress())).with_label("no file being ingested")


def _eager_ignoring_updates_of(*names: str) -> dg.AutomationCondition:
    """Eager, except that updates of ``names`` do not trigger it (they still block while missing or
    in progress)."""
    return AC.eager().replace("any_deps_updated", AC.any_deps_updated().ignore(dg.AssetSelection.assets(*names))
                              ).with_label(f"eager, not on updates of {', '.join(names)}")


def _pool_rebuilt_since_records() -> dg.AutomationCondition:
    """diverse_subset was requested after this partition's records changed, and has finished since.

    Requested-then-updated, not just updated: a pool run already under way when the file landed
    finishes without the file's rows and must not release the scores.
    """
    records_changed = AC.asset_matches("raw_records", AC.newly_updated())
    subset_requested = AC.asset_matches("diverse_subset", AC.newly_requested())
    subset_updated = AC.asset_matches("diverse_subset", AC.newly_updated())
    return (subset_updated.since(subset_requested) & subset_requested.since(records_changed)).with_label(
        "pool rebuilt with this partition")


def per_corpus_scores(*also_ignored: str) -> dg.AutomationCondition:
    """For the model scores of one file: its own inputs changed, and the pool has caught up."""
    return (_eager_ignoring_updates_of(*POOL_WIDE_INPUTS, *also_ignored) & _pool_rebuilt_since_records()).with_label(
        "eager on this file's inputs, after the pool is rebuilt with it")


def _scores_caught_up() -> dg.AutomationCondition:
    """No file's model scores are older than its records: a changed file's rows are scored before selection
    runs (a new file's scores are missing until then, which eager waits for anyway)."""
    behind = AC.asset_matches("raw_records", AC.newly_updated()).since(AC.newly_updated())
    scores = dg.AssetSelection.assets(*PER_CORPUS_SCORES)
    return (~AC.any_deps_match(behind).allow(scores)).with_label("every file's scores newer than its records")


def _selection_caught_up() -> dg.AutomationCondition:
    """selection_decisions has been rebuilt since the pool last moved (requested, running or updated).

    Without it, the datasets and exports follow a changed file's records or the new reward-model pairs in
    the same tick as the pool rebuild, and are built against decisions that do not know the new rows yet.
    """
    pool_moved = AC.asset_matches("candidate_pool", AC.will_be_requested() | AC.newly_requested()
                                  | AC.in_progress() | AC.newly_updated())
    decided = AC.asset_matches("selection_decisions", AC.newly_updated())
    return (~pool_moved.since(decided)).with_label("selection_decisions caught up with the pool")


def after_selection(*ignored: str) -> dg.AutomationCondition:
    """For what is built from the decisions: eager, once selection_decisions has caught up with the pool."""
    eager = _eager_ignoring_updates_of(*ignored) if ignored else AC.eager()
    return (eager & _selection_caught_up()).with_label(f"{eager.get_label() or 'eager'}, after selection_decisions")


CONDITIONS = {
    "quality_model": AC.on_missing(),
    "quality_labels": per_corpus_scores("quality_model"),
    "ppl_scores": per_corpus_scores(),
    "option_probabilities": per_corpus_scores(),
    "selection_decisions": (AC.eager() & _scores_caught_up()).with_label(
        "eager, once every file's scores are newer than its records"),
    # the kept rows are named by the decisions: new records alone change nothing until they are decided on
    "sft_dataset": after_selection("raw_records"),
    "ppo_prompts": after_selection(),
    "ppo_ptx": after_selection(),
    "exports": after_selection(),
}


def condition_for(key: dg.AssetKey) -> dg.AutomationCondition | None:
    name = key.to_user_string()
    if name in SENSOR_BUILT:
        return None
    condition = CONDITIONS.get(name, AC.eager())
    return (condition & _ingest_settled()).with_label(f"{condition.get_label()}, once no file is being ingested")


def automate(assets: list) -> list:
    """The assets with their automation conditions and owners."""
    return dg.map_asset_specs(
        lambda spec: spec.replace_attributes(automation_condition=condition_for(spec.key), owners=OWNERS), assets)


def automation_sensor(minimum_interval_seconds: int) -> dg.AutomationConditionSensorDefinition:
    """Declared rather than left to Dagster's default sensor, which starts stopped."""
    return dg.AutomationConditionSensorDefinition(
        "automation_condition_sensor",
        target=dg.AssetSelection.all(),
        default_status=dg.DefaultSensorStatus.RUNNING,
        minimum_interval_seconds=minimum_interval_seconds,
        description="Rebuilds what a new or changed corpus file affects, up to the exports; "
        "conditions in sft_assets/defs/automation.py.",
    )

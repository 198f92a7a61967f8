"""Versions Dagster compares to mark an asset "unsynced", and what ``sft-assets run`` materializes.

Every asset has a code version (below): bump an asset's entry when a change to its code (or to the
core function it calls) changes its output, and the UI marks it and its partitions unsynced until
they are rebuilt. With a code version, an asset that supplies no data version of its own gets one
computed from its code version and its inputs' data versions, so an unchanged input never makes
its dependents unsynced. Where the output is not a function of the inputs alone, the asset states
its data version: the raw file's content hash (``raw_files``, observed by the sensor and the CLI),
the quality model's weights (its skops file's bytes differ on every save even for the same weights: zip
entry names and dates), the diverse subset's picks, the curated reference's rows.
"""

import hashlib
import pickle
from collections.abc import Iterable

import dagster as dg

CODE_VERSIONS = {
    "raw_records": "1", "quarantined_records": "1", "embeddings": "1",
    "candidate_pool": "1", "near_duplicates": "1", "topic_clusters": "1", "diverse_subset": "2",
    "curated_reference": "1", "novelty_scores": "9",
    "quality_model": "3", "quality_labels": "2", "ppl_scores": "1", "option_probabilities": "1",
    "selection_decisions": "2", "sft_dataset": "1", "rm_dataset": "1", "ppo_prompts": "1", "ppo_ptx": "1",
    "exports": "2", "generated_instructions": "1", "selection_report": "1",
}

# Assets whose data version is their own (not computed from code and inputs): what follows them is unsynced
# only when their version changes.
USER_VERSIONED = ("diverse_subset", "quality_model", "curated_reference")


def with_code_versions(assets: list) -> list:
    """The assets with their code versions; an asset missing from the table is an error, not unversioned."""
    def versioned(spec: dg.AssetSpec) -> dg.AssetSpec:
        name = spec.key.to_user_string()
        if name not in CODE_VERSIONS:
            raise KeyError(f"{name} has no code version in sft_assets/defs/versions.py")
        return spec.replace_attributes(code_version=CODE_VERSIONS[name])

    return dg.map_asset_specs(versioned, assets)


def ids_version(ids: Iterable[str], *also: str) -> dg.DataVersion:
    """A data version that changes only when the set of ids (or ``also``) does, not their order."""
    digest = hashlib.sha256("\0".join(also).encode("utf-8"))
    for record_id in sorted(ids):
        digest.update(record_id.encode("utf-8") + b"\n")
    return dg.DataVersion(digest.hexdigest()[:24])


def model_version(model) -> dg.DataVersion:
    """A data version of a fitted model's content: its pickle, hashed only (never loaded), is the same bytes
    for the same weights and settings, where the saved skops file is not."""
    return dg.DataVersion(hashlib.sha256(pickle.dumps(model, protocol=5)).hexdigest()[:24])

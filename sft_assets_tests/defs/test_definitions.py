"""Snapshot of the code location: what a user sees in the UI changes only on purpose.

Update after an intended change with ``SFT_ASSETS_UPDATE_SNAPSHOTS=1 make test``.
"""

import json
import os
from pathlib import Path

import dagster as dg

from sft_assets.definitions import build_defs
from sft_assets.settings import Settings

SNAPSHOT = Path(__file__).parents[1] / "snapshots" / "definitions.json"


def describe(defs: dg.Definitions) -> dict:
    graph = defs.resolve_asset_graph()
    assets = {}
    for key in sorted(graph.get_all_asset_keys(), key=lambda k: k.to_user_string()):
        node = graph.get(key)
        assets[key.to_user_string()] = {
            "group": node.group_name,
            "partitioned": node.partitions_def is not None,
            "deps": sorted(d.to_user_string() for d in node.parent_keys),
            "kinds": sorted(node.kinds),
            "owners": node.owners,
            "automation": node.automation_condition.get_label() if node.automation_condition else None,
            "has_description": bool(node.description),
            "code_version": node.code_version,
        }
    checks = sorted(f"{c.asset_key.to_user_string()}:{c.name}" for c in graph.asset_check_keys)
    return {
        "assets": assets,
        "checks": checks,
        "jobs": sorted(j.name for j in defs.jobs or []),
        "sensors": sorted(s.name for s in defs.sensors or []),
        "resources": sorted(defs.resources),
    }


def test_definitions_load_and_match_snapshot(tmp_path):
    defs = build_defs(Settings.under(tmp_path))
    dg.Definitions.validate_loadable(defs)
    current = describe(defs)
    if os.environ.get("SFT_ASSETS_UPDATE_SNAPSHOTS") or not SNAPSHOT.exists():
        SNAPSHOT.write_text(json.dumps(current, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    assert current == json.loads(SNAPSHOT.read_text(encoding="utf-8"))
    assert all(a["has_description"] for a in current["assets"].values())
    # every asset Dagster builds has a code version, so its "unsynced" mark can follow code changes
    assert all(a["code_version"] for name, a in current["assets"].items() if name != "raw_files")


def test_selection_report_runs_on_request_only(tmp_path):
    """Fine-tuning is expensive: no automation condition, in no job that a sensor or `sft-assets run` starts."""
    defs = build_defs(Settings.under(tmp_path))
    node = defs.resolve_asset_graph().get(dg.AssetKey("selection_report"))
    assert node.automation_condition is None and node.group_name == "evaluation"
    for job in defs.jobs or []:
        assert dg.AssetKey("selection_report") not in defs.resolve_job_def(job.name).asset_layer.executable_asset_keys


def test_a_phase_run_is_rechecked_only_below_an_asset_that_states_its_own_version(tmp_path):
    """After a run, `sft-assets run` asks Dagster what is still unsynced only where the run could have left a
    phase asset behind: below the curated reference, whose own version decides whether novelty reruns."""
    from sft_assets.cli import settled, with_followers

    defs = build_defs(Settings.under(tmp_path))
    graph = defs.resolve_asset_graph()
    phase = {name: sorted(defs.resolve_job_def(name).asset_layer.selected_asset_keys)
             for name in ("analyze_pool", "score_corpus")}
    labels, reference = dg.AssetKey("quality_labels"), dg.AssetKey("curated_reference")
    assert settled(graph, phase["score_corpus"], with_followers(graph, phase["score_corpus"], {labels}))
    assert not settled(graph, phase["score_corpus"], {labels})  # its perplexities would be left out
    below_reference = with_followers(graph, phase["analyze_pool"], {reference})
    assert below_reference == {reference} and not settled(graph, phase["analyze_pool"], below_reference)
    rerun = with_followers(graph, phase["analyze_pool"], below_reference | graph.get(reference).child_keys)
    assert dg.AssetKey("novelty_scores") in rerun and settled(graph, phase["analyze_pool"], rerun)

"""A missing curated folder means an empty reference: novelty filtering off, said in metadata, no crash."""

import dagster as dg

from sft_assets.defs import novelty
from sft_assets.definitions import build_defs
from sft_assets.settings import Settings


def test_missing_curated_folder_gives_an_empty_reference(tmp_path):
    defs = build_defs(Settings.under(tmp_path))
    names = ("curated_root", "embedding_model", "io_manager")
    result = dg.materialize([novelty.curated_reference], resources={n: defs.resources[n] for n in names})
    assert result.success
    meta = result.asset_materializations_for_node("curated_reference")[0].metadata
    assert meta["dagster/row_count"].value == 0 and meta["files"].value == 0

"""Exports: byte-identical rewrites, loadable by HF datasets, shaped as TRL and
LLaMA-Factory document, and a validator that finds planted faults."""

import json
import re
import shutil

import polars as pl
import pytest
import yaml

from sft_assets.core.datasets import ppo_dataset, rm_dataset, sft_dataset
from sft_assets.core.exports import (
    CARD,
    DATASET_INFO,
    EXPORT_FILES,
    publish_exports,
    validate_exports,
    write_exports,
)
from sft_assets.core.selection import SelectionPolicy, decide
from sft_assets_tests.core.test_datasets import preference_slice
from sft_assets_tests.core.test_selection import real_records, synthesize_signals

POLICY = SelectionPolicy(category_cap=30, quality_threshold=0.5)  # 0.5: the synthetic scores put rows on both sides

# LLaMA-Factory data/README.md: the keys of a dataset_info.json entry, its
# "columns" per formatting, and the sharegpt "tags".
LF_ENTRY_KEYS = {"hf_hub_url", "ms_hub_url", "script_url", "file_name", "file_sha1", "formatting", "ranking",
                 "subset", "split", "folder", "num_samples", "columns", "tags"}
LF_COLUMNS = {
    "alpaca": {"prompt", "query", "response", "history", "system", "tools", "images", "chosen", "rejected", "kto_tag"},
    "sharegpt": {"messages", "system", "tools", "images", "chosen", "rejected", "kto_tag"},
}
LF_TAGS = {"role_tag", "content_tag", "user_tag", "assistant_tag", "observation_tag", "function_tag", "system_tag"}

# TRL "Dataset formats and types": the columns of each type, standard (strings)
# and conversational (lists of {"role", "content"} messages).
TRL_TYPES = {
    "rm_pairs.jsonl": ("preference", "standard", {"prompt", "chosen", "rejected"}),
    "rm_pairs_conversational.jsonl": ("preference", "conversational", {"prompt", "chosen", "rejected"}),
    "ppo_prompts.jsonl": ("prompt-only", "standard", {"prompt"}),
    "ppo_prompts_conversational.jsonl": ("prompt-only", "conversational", {"prompt"}),
    "sft_messages.jsonl": ("language modeling", "conversational", {"messages"}),
}


@pytest.fixture(scope="module")
def tables(read_corpus):
    records = real_records(read_corpus)
    decisions = decide(synthesize_signals(records), POLICY)
    sft = sft_dataset(records, decisions)
    rm, _ = rm_dataset(preference_slice(read_corpus))
    prompts, ptx = ppo_dataset(sft, rm, ptx_fraction=0.2)
    return {"sft": sft, "rm": rm, "ppo_prompts": prompts, "ptx": ptx, "decisions": decisions}


def _write(folder, tables, **replace):
    t = {**tables, **replace}
    return write_exports(folder, t["sft"], t["rm"], t["ppo_prompts"], t["ptx"], t["decisions"], POLICY)


@pytest.fixture(scope="module")
def exported(tables, tmp_path_factory):
    folder = tmp_path_factory.mktemp("exports")
    return folder, _write(folder, tables)


def _lines(path):
    text = path.read_text(encoding="utf-8")
    return json.loads(text) if path.suffix == ".json" else [json.loads(line) for line in text.split("\n") if line]


def test_every_file_is_written_and_counted(exported, tables):
    folder, written = exported
    assert set(written) == {f.name for f in EXPORT_FILES} | {DATASET_INFO, CARD, "reasons.png", "categories.png"}
    assert all(path.is_file() and path.parent == folder for path in written.values())
    sizes = {f.name: len(_lines(folder / f.name)) for f in EXPORT_FILES}
    table_rows = {f.name: tables[f.table].height for f in EXPORT_FILES}
    assert sizes == table_rows and min(sizes.values()) > 0


def test_rewrites_are_byte_identical_whatever_the_row_order(exported, tables, tmp_path):
    folder, written = exported
    shuffled = {name: frame.sample(fraction=1.0, shuffle=True, seed=3) for name, frame in tables.items()}
    again = _write(tmp_path / "again", shuffled)
    for name, path in written.items():
        assert again[name].read_bytes() == path.read_bytes(), name
    for path in written.values():
        data = path.read_bytes()
        if path.suffix == ".png":
            assert b"Software" not in data  # no matplotlib version stamp
        else:
            assert b"\r\n" not in data and data.endswith(b"\n")


def test_text_is_utf8_not_escaped_with_sorted_keys(exported):
    folder, _ = exported
    for spec in EXPORT_FILES:
        if spec.name.endswith(".jsonl"):
            for line in (folder / spec.name).read_text(encoding="utf-8").split("\n")[:-1]:
                assert line == json.dumps(json.loads(line), ensure_ascii=False, sort_keys=True)
    assert "\\u" not in (folder / "sft_alpaca.json").read_text(encoding="utf-8")
    assert re.search("[\u4e00-\u9fff]", (folder / "sft_messages.jsonl").read_text(encoding="utf-8"))


def _is_message_list(value):
    return isinstance(value, list) and value and all(
        isinstance(m, dict) and set(m) == {"role", "content"} and isinstance(m["content"], str) for m in value)


def test_files_have_the_shapes_trl_documents(exported):
    folder, _ = exported
    for name, (kind, form, keys) in TRL_TYPES.items():
        for row in _lines(folder / name):
            assert keys <= set(row), (name, kind)
            for key in keys:
                if form == "standard":
                    assert isinstance(row[key], str) and row[key], (name, key)
                else:
                    assert _is_message_list(row[key]), (name, key)
            if kind == "preference" and form == "conversational":
                assert row["prompt"][-1]["role"] == "user"
                assert [m["role"] for m in row["chosen"] + row["rejected"]] == ["assistant", "assistant"]
            if kind == "prompt-only" and form == "conversational":
                assert row["prompt"][-1]["role"] == "user"


def test_history_survives_in_both_preference_forms(exported):
    folder, _ = exported
    standard = _lines(folder / "rm_pairs.jsonl")
    conversational = _lines(folder / "rm_pairs_conversational.jsonl")
    assert any(row["history"] for row in standard)
    for flat, chat in zip(standard, conversational):
        assert len(chat["prompt"]) == 2 * len(flat["history"]) + 1
        assert chat["prompt"][-1]["content"] == flat["prompt"] and chat["chosen"][0]["content"] == flat["chosen"]


def test_dataset_info_uses_only_keys_llama_factory_reads(exported):
    folder, _ = exported
    info = json.loads((folder / DATASET_INFO).read_text(encoding="utf-8"))
    assert set(info) == {"sft_alpaca", "sft_messages", "rm_pairs", "ppo_prompts", "ppo_ptx"}
    for name, entry in info.items():
        assert set(entry) <= LF_ENTRY_KEYS, name
        formatting = entry.get("formatting", "alpaca")
        assert set(entry.get("columns", {})) <= LF_COLUMNS[formatting], name
        assert set(entry.get("tags", {})) <= LF_TAGS and (formatting == "sharegpt" or "tags" not in entry)
        rows = _lines(folder / entry["file_name"])
        for row in rows:  # what LLaMA-Factory's converters index: every mapped column, with its type
            assert all(column in row for column in entry.get("columns", {}).values()), name
        columns = entry["columns"]
        if formatting == "alpaca":
            history = columns.get("history")
            assert all(all(len(turn) == 2 for turn in row[history]) for row in rows)
            if entry.get("ranking"):
                assert all(isinstance(row[columns["chosen"]], str) for row in rows)
        else:
            tags = entry["tags"]
            for row in rows:
                roles = [m[tags["role_tag"]] for m in row[columns["messages"]]]
                assert roles == [tags["user_tag"], tags["assistant_tag"]] * (len(roles) // 2) and len(roles) % 2 == 0
    assert info["rm_pairs"]["ranking"] is True


def test_hf_datasets_loads_every_file_and_every_card_config(exported, tmp_path):
    datasets = pytest.importorskip("datasets")
    folder, _ = exported
    for spec in EXPORT_FILES:
        expected = len(_lines(folder / spec.name))
        plain = datasets.load_dataset("json", data_files=str(folder / spec.name), split="train",
                                      cache_dir=str(tmp_path / "plain"))
        assert plain.num_rows == expected
        by_card = datasets.load_dataset(str(folder), spec.config, split="train", cache_dir=str(tmp_path / "card"))
        assert by_card.num_rows == expected and by_card.column_names == plain.column_names
    pairs = datasets.load_dataset(str(folder), "rm_pairs", split="train", cache_dir=str(tmp_path / "card"))
    assert {pairs.features[k].dtype for k in ("prompt", "chosen", "rejected")} == {"string"}


def test_card_front_matter_counts_and_plots(exported, tables):
    folder, _ = exported
    text = (folder / CARD).read_text(encoding="utf-8")
    meta = yaml.safe_load(text.split("---\n")[1])
    assert meta["license"] == "other" and "inherits the licenses of the source corpora" in text
    assert {c["config_name"] for c in meta["configs"]} == {f.config for f in EXPORT_FILES}
    assert [c["config_name"] for c in meta["configs"] if c.get("default")] == ["sft_messages"]
    assert set(meta["language"]) == {"en", "zh"}
    for corpus in tables["decisions"]["corpus"].unique():
        assert f"| {corpus} |" in text
    for category in tables["decisions"]["category"].drop_nulls().unique():
        assert f"| {category} |" in text
    assert "category_cap" in text and "| uncertainty_keep_fraction | 0.8 |" in text
    for image in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text):
        assert (folder / image).read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


def test_empty_tables_are_written_but_not_registered(tables, tmp_path):
    _write(tmp_path, tables, rm=tables["rm"].clear())
    assert (tmp_path / "rm_pairs.jsonl").read_text() == ""
    info = json.loads((tmp_path / DATASET_INFO).read_text())
    assert "rm_pairs" not in info and "sft_alpaca" in info
    assert validate_exports(tmp_path) == []


def _planted(exported, tmp_path, change):
    folder = tmp_path / "planted"
    shutil.copytree(exported[0], folder)
    change(folder)
    return validate_exports(folder)


def _edit(path, function):
    path.write_text(function(path.read_text(encoding="utf-8")), encoding="utf-8")


def _edit_json(path, function):
    value = json.loads(path.read_text(encoding="utf-8"))
    function(value)
    path.write_text(json.dumps(value), encoding="utf-8")


def test_validate_passes_a_clean_export(exported):
    assert validate_exports(exported[0]) == []


@pytest.mark.parametrize("change, expected", [
    (lambda f: _edit(f / "rm_pairs.jsonl", lambda t: t.replace("\n", "\n{not json\n", 1)),
     r"rm_pairs.jsonl line 2: invalid JSON"),
    (lambda f: (f / "ppo_ptx.jsonl").unlink(), r"ppo_ptx.jsonl: missing"),
    (lambda f: (f / "ppo_ptx.jsonl").unlink(),
     r"dataset_info.json\[ppo_ptx\]: file_name 'ppo_ptx.jsonl' does not exist"),
    (lambda f: _edit(f / "rm_pairs.jsonl", lambda t: t.replace('"rejected": ', '"rejected_": ', 1)),
     r"rm_pairs.jsonl line 1: missing key 'rejected'"),
    (lambda f: _edit(f / "rm_pairs.jsonl", lambda t: t.replace('"rejected": ', '"rejected_": ', 1)),
     r"rm_pairs.jsonl line 1: lacks column 'rejected' that dataset_info.json\[rm_pairs\] maps"),
    (lambda f: _edit(f / "sft_messages.jsonl", lambda t: t.replace('"role": "user"', '"role": "human"', 1)),
     r"sft_messages.jsonl line 1: messages: roles"),
    (lambda f: _edit_json(f / "sft_alpaca.json", lambda rows: rows[0].update(history="none")),
     r"sft_alpaca.json record 0: history: not a list"),
    (lambda f: _edit_json(f / "sft_alpaca.json", lambda rows: rows.__setitem__(0, "text")),
     r"sft_alpaca.json record 0: not a JSON object"),
    (lambda f: _edit(f / "sft_alpaca.json", lambda t: t[:-3]), r"sft_alpaca.json line \d+: invalid JSON"),
    (lambda f: _edit_json(f / "dataset_info.json", lambda info: info["rm_pairs"].update(ranked=True)),
     r"dataset_info.json\[rm_pairs\]: unknown key 'ranked'"),
    (lambda f: _edit_json(f / "dataset_info.json", lambda info: info["sft_alpaca"]["columns"].update(messages="m")),
     r"dataset_info.json\[sft_alpaca\]: unknown column key 'messages' for alpaca"),
    (lambda f: (f / "reasons.png").unlink(), r"README.md: image 'reasons.png' does not exist"),
    (lambda f: _edit(f / "README.md", lambda t: t.replace("license: other\n", "")), r"README.md: no license"),
])
def test_validate_finds_planted_faults(exported, tmp_path, change, expected):
    problems = _planted(exported, tmp_path, change)
    assert any(re.search(expected, p) for p in problems), problems


def test_validate_flags_chosen_equal_to_rejected(exported, tmp_path):
    def same(folder):
        path = folder / "rm_pairs.jsonl"
        rows = _lines(path)
        rows[4]["rejected"] = rows[4]["chosen"]
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")

    assert _planted(exported, tmp_path, same) == ["rm_pairs.jsonl line 5: chosen equals rejected"]


def test_validate_caps_problems_per_file(exported, tmp_path):
    problems = _planted(exported, tmp_path, lambda f: _edit(f / "ppo_prompts.jsonl", lambda t: t.replace("{", "[")))
    assert len([p for p in problems if p.startswith("ppo_prompts.jsonl")]) == 21
    assert problems[20].endswith("more")


def _snapshot(folder):
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir())}


def _publish(folder, tables, **replace):
    t = {**tables, **replace}
    return publish_exports(folder, t["sft"], t["rm"], t["ppo_prompts"], t["ptx"], t["decisions"], POLICY)


def test_publishing_swaps_the_new_set_in_and_keeps_the_previous(tables, exported, tmp_path):
    folder = tmp_path / "exports"
    written, problems = _publish(folder, tables)
    assert problems == [] and _snapshot(folder) == _snapshot(exported[0])
    assert set(written) == set(exported[1]) and all(path.parent == folder for path in written.values())
    first = _snapshot(folder)
    written, problems = _publish(folder, tables, rm=tables["rm"].clear())
    assert problems == [] and (folder / "rm_pairs.jsonl").read_text() == ""
    assert _snapshot(tmp_path / "exports.previous") == first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exports", "exports.previous"]


def test_a_set_that_fails_its_checks_leaves_the_published_one_in_place(tables, tmp_path):
    folder = tmp_path / "exports"
    assert _publish(folder, tables)[1] == []
    good = _snapshot(folder)
    first = tables["sft"]["record_id"].sort()[0]
    broken = tables["sft"].with_columns(
        instruction=pl.when(pl.col("record_id") == first).then(pl.lit(" ")).otherwise(pl.col("instruction")))
    written, problems = _publish(folder, tables, sft=broken)
    assert written == {} and any("sft_alpaca.json record 0: instruction: not a non-empty string" in p
                                 for p in problems), problems
    assert _snapshot(folder) == good  # not a byte of the refused set reached the published folder
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exports", "exports.rejected"]
    assert validate_exports(tmp_path / "exports.rejected") == problems
    assert _publish(folder, tables)[1] == [] and _snapshot(tmp_path / "exports.previous") == good


def test_card_shows_the_rows_at_the_quality_cut(tables, tmp_path, read_corpus):
    """10 kept and 10 dropped rows closest to the cut, with their text, on each side of the threshold."""
    records = real_records(read_corpus)
    write_exports(tmp_path, tables["sft"], tables["rm"], tables["ppo_prompts"], tables["ptx"], tables["decisions"],
                  POLICY, texts=records)
    card = (tmp_path / CARD).read_text(encoding="utf-8")
    section = card.split("## At the quality cut", 1)[1]
    rows = [line for line in section.split("\n") if line.startswith("| kept") or line.startswith("| dropped")]
    kept = [float(r.split(" | ")[3]) for r in rows if r.startswith("| kept")]
    dropped = [float(r.split(" | ")[3]) for r in rows if r.startswith("| dropped")]
    assert len(kept) == len(dropped) == 10
    assert kept == sorted(kept) and dropped == sorted(dropped, reverse=True)
    assert min(kept) >= POLICY.quality_threshold > max(dropped)
    judged = tables["decisions"].filter((pl.col("kind") == "sft") & (pl.col("quality_reasons").list.len() == 0)
                                        & pl.col("exact_duplicate_of").is_null()
                                        & pl.col("near_duplicate_of").is_null())["quality_score"]
    assert max(dropped) == round(judged.filter(judged < POLICY.quality_threshold).max(), 3)
    first = records.filter(pl.col("record_id") == rows[0].split(" | ")[1])["instruction"][0]
    assert first.replace("\n", " ")[:40] in rows[0]

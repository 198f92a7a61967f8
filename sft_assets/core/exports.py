"""Exports: the final datasets as the files trainers read, a LLaMA-Factory
``dataset_info.json`` and a Hugging Face dataset card, plus a validator.

Deterministic: the same tables give byte-identical files, whatever their row
order (rows sorted by record_id, sorted keys, ensure_ascii=False, "\\n" line
ends, no timestamps, PNGs without a Software tag), so a re-run that changes
nothing changes no file and a diff shows what did change.

Files (formats as TRL and LLaMA-Factory document them):

- ``sft_alpaca.json``: JSON array of {instruction, input, output, history: [[q, a], ...]}
  (LLaMA-Factory alpaca).
- ``sft_messages.jsonl``: {"messages": [{"role", "content"}, ...]}, history turns
  first (TRL conversational language modeling; LLaMA-Factory sharegpt with
  OpenAI role tags).
- ``rm_pairs.jsonl``: TRL standard preference {prompt, chosen, rejected} strings,
  plus history [[q, a], ...] that LLaMA-Factory (ranking) puts before the prompt.
- ``rm_pairs_conversational.jsonl``: TRL conversational preference; the history
  is in the prompt messages, so TRL keeps a multi-turn pair's context.
- ``ppo_prompts.jsonl`` / ``ppo_prompts_conversational.jsonl``: TRL prompt-only,
  standard (plus history) and conversational.
- ``ppo_ptx.jsonl``: alpaca rows for the PPO ptx loss.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Callable

import polars as pl

from sft_assets.core.datasets import user_prompt
from sft_assets.core.plots import plot_fonts
from sft_assets.core.selection import UNCATEGORIZED, SelectionPolicy, quality_margin, reason_counts
from sft_assets.core.storage import atomic_write

DATASET_INFO = "dataset_info.json"
CARD = "README.md"
REASONS_PLOT = "reasons.png"
CATEGORIES_PLOT = "categories.png"

# Keys LLaMA-Factory's dataset_info.json loader reads (data/README.md, data/parser.py).
LLAMA_FACTORY_KEYS = frozenset({
    "hf_hub_url", "ms_hub_url", "script_url", "file_name", "file_sha1", "formatting",
    "ranking", "subset", "split", "folder", "num_samples", "columns", "tags",
})
LLAMA_FACTORY_COLUMNS = {
    "alpaca": frozenset({"prompt", "query", "response", "history", "system", "tools", "images",
                         "videos", "audios", "chosen", "rejected", "kto_tag"}),
    "sharegpt": frozenset({"messages", "system", "tools", "images", "videos", "audios",
                           "chosen", "rejected", "kto_tag"}),
}
LLAMA_FACTORY_TAGS = frozenset({"role_tag", "content_tag", "user_tag", "assistant_tag",
                                "observation_tag", "function_tag", "system_tag"})

MAX_PROBLEMS_PER_FILE = 20
PLOT_ROWS = 30

# ---------------------------------------------------------------- rows


def _pairs(history: list[dict] | None) -> list[list[str]]:
    return [[turn["prompt"], turn["response"]] for turn in history or []]


def _conversation(history: list[dict] | None, user: str, assistant: str | None = None) -> list[dict]:
    messages = []
    for q, a in _pairs(history):
        messages += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
    messages.append({"role": "user", "content": user})
    if assistant is not None:
        messages.append({"role": "assistant", "content": assistant})
    return messages


def _reply(text: str) -> list[dict]:
    return [{"role": "assistant", "content": text}]


def _alpaca_row(row: dict) -> dict:
    return {"instruction": row["instruction"], "input": row["input"] or "", "output": row["output"],
            "history": _pairs(row["history"])}


def _messages_row(row: dict) -> dict:
    return {"messages": _conversation(row["history"], row["user"], row["output"])}


def _pair_row(row: dict) -> dict:
    return {"prompt": row["prompt"], "chosen": row["chosen"], "rejected": row["rejected"],
            "history": _pairs(row["history"])}


def _pair_conversational_row(row: dict) -> dict:
    return {"prompt": _conversation(row["history"], row["prompt"]),
            "chosen": _reply(row["chosen"]), "rejected": _reply(row["rejected"])}


def _prompt_row(row: dict) -> dict:
    return {"prompt": row["prompt"], "history": _pairs(row["history"])}


def _prompt_conversational_row(row: dict) -> dict:
    return {"prompt": _conversation(row["history"], row["prompt"])}


# ---------------------------------------------------------------- shapes (validation)


def _text(value: Any) -> list[str]:
    return [] if isinstance(value, str) and value.strip() else ["not a non-empty string"]


def _string(value: Any) -> list[str]:
    return [] if isinstance(value, str) else ["not a string"]


def _history(value: Any) -> list[str]:
    ok = isinstance(value, list) and all(
        isinstance(t, list) and len(t) == 2 and all(isinstance(s, str) for s in t) for t in value
    )
    return [] if ok else ["not a list of [prompt, response] string pairs"]


def _turns(value: Any, last: str) -> list[str]:
    """Messages alternating user/assistant from a user turn, ending with ``last``."""
    if not isinstance(value, list) or not value:
        return ["not a non-empty list of messages"]
    if not all(isinstance(m, dict) and isinstance(m.get("content"), str) for m in value):
        return ["a message lacks a string content"]
    roles = [m.get("role") for m in value]
    expected = ["user" if i % 2 == 0 else "assistant" for i in range(len(roles))]
    if roles != expected or roles[-1] != last:
        return [f"roles {roles[:6]} do not alternate user/assistant ending with {last}"]
    return []


def _one_reply(value: Any) -> list[str]:
    ok = isinstance(value, list) and len(value) == 1 and isinstance(value[0], dict) \
        and value[0].get("role") == "assistant" and not _text(value[0].get("content"))
    return [] if ok else ["not one non-empty assistant message"]


_ALPACA_SHAPE = {"instruction": _text, "input": _string, "output": _string, "history": _history}


@dataclass(frozen=True)
class ExportFile:
    """One exported file: the table it comes from, how a row is written and checked,
    and its LLaMA-Factory entry (None when LLaMA-Factory cannot read the shape)."""

    name: str
    table: str
    row: Callable[[dict], dict]
    shape: dict[str, Callable[[Any], list[str]]]
    llama_factory: dict | None

    @property
    def config(self) -> str:
        return self.name.split(".")[0]


_ALPACA_ENTRY = {"formatting": "alpaca",
                 "columns": {"prompt": "instruction", "query": "input", "response": "output", "history": "history"}}

EXPORT_FILES = (
    ExportFile("sft_alpaca.json", "sft", _alpaca_row, _ALPACA_SHAPE, _ALPACA_ENTRY),
    ExportFile("sft_messages.jsonl", "sft", _messages_row, {"messages": partial(_turns, last="assistant")}, {
        "formatting": "sharegpt",
        "columns": {"messages": "messages"},
        "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant"},
    }),
    ExportFile("rm_pairs.jsonl", "rm", _pair_row,
               {"prompt": _text, "chosen": _text, "rejected": _text, "history": _history}, {
        "formatting": "alpaca",
        "ranking": True,
        "columns": {"prompt": "prompt", "chosen": "chosen", "rejected": "rejected", "history": "history"},
    }),
    ExportFile("rm_pairs_conversational.jsonl", "rm", _pair_conversational_row,
               {"prompt": partial(_turns, last="user"), "chosen": _one_reply, "rejected": _one_reply}, None),
    ExportFile("ppo_prompts.jsonl", "ppo_prompts", _prompt_row, {"prompt": _text, "history": _history}, {
        "formatting": "alpaca",
        "columns": {"prompt": "prompt", "history": "history"},
    }),
    ExportFile("ppo_prompts_conversational.jsonl", "ppo_prompts", _prompt_conversational_row,
               {"prompt": partial(_turns, last="user")}, None),
    ExportFile("ppo_ptx.jsonl", "ptx", _alpaca_row, _ALPACA_SHAPE, _ALPACA_ENTRY),
)
DEFAULT_CONFIG = "sft_messages"

# ---------------------------------------------------------------- writing


def _dumps(value: Any, indent: int | None = None) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True, indent=indent)


def _write_text(path: Path, text: str) -> Path:
    """Atomic: a trainer reading the folder during a rebuild sees the old file or the new one, never half."""
    atomic_write(path, lambda fh: fh.write(text.encode("utf-8")))
    return path


def _serialize(name: str, objects: list[dict]) -> str:
    """JSON lines, or for ``.json`` a JSON array with one record per line (diffable)."""
    lines = [_dumps(obj) for obj in objects]
    if name.endswith(".jsonl"):
        return "".join(line + "\n" for line in lines)
    return "[\n" + ",\n".join(lines) + "\n]\n" if lines else "[]\n"


def write_exports(
    folder, sft: pl.DataFrame, rm: pl.DataFrame, ppo_prompts: pl.DataFrame, ptx: pl.DataFrame,
    decisions: pl.DataFrame, policy: SelectionPolicy, texts: pl.DataFrame | None = None,
) -> dict[str, Path]:
    """Write every export file, dataset_info.json, the card and its plots; {file name: path}.

    ``texts`` (record_id, instruction, output) of candidates lets the card quote the rows at the quality cut."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    user = user_prompt(pl.col("instruction"), pl.col("input"))
    tables = {
        "sft": sft.with_columns(user=user).sort("record_id", "corpus"),
        "rm": rm.sort("record_id", "corpus"),
        "ppo_prompts": ppo_prompts.sort(pl.col("record_ids").list.first()),
        "ptx": ptx.sort("record_id", "corpus"),
    }
    written, rows = {}, {}
    for spec in EXPORT_FILES:
        objects = [spec.row(row) for row in tables[spec.table].iter_rows(named=True)]
        written[spec.name] = _write_text(folder / spec.name, _serialize(spec.name, objects))
        rows[spec.name] = len(objects)
    info = {spec.config: {"file_name": spec.name, **spec.llama_factory}
            for spec in EXPORT_FILES if spec.llama_factory and rows[spec.name]}
    written[DATASET_INFO] = _write_text(folder / DATASET_INFO, _dumps(info, indent=2) + "\n")
    reasons = reason_counts(decisions)
    written[REASONS_PLOT] = _reasons_plot(folder / REASONS_PLOT, reasons, decisions)
    written[CATEGORIES_PLOT] = _categories_plot(folder / CATEGORIES_PLOT, decisions)
    written[CARD] = _write_text(folder / CARD, _card(rows, sft, rm, decisions, reasons, policy, texts)
                                + selection_value_section(folder))
    return written


def publish_exports(
    folder, sft: pl.DataFrame, rm: pl.DataFrame, ppo_prompts: pl.DataFrame, ptx: pl.DataFrame,
    decisions: pl.DataFrame, policy: SelectionPolicy, texts: pl.DataFrame | None = None,
) -> tuple[dict[str, Path], list[str]]:
    """Write the set into ``<folder>.staging``, validate it there, and only when it passes move it in with
    one rename; the set it replaces becomes ``<folder>.previous``. Returns ({file name: published path},
    problems). A set with problems is never published: ``folder`` keeps the last good set and the refused
    one is left in ``<folder>.rejected`` to look at.

    A trainer reading ``folder`` during a rebuild sees the old set or the new one, never files of both
    (between the two renames the folder is briefly absent)."""
    folder = Path(folder)
    staging, previous, rejected = (folder.with_name(f"{folder.name}.{suffix}")
                                   for suffix in ("staging", "previous", "rejected"))
    shutil.rmtree(staging, ignore_errors=True)  # left by a run that died while writing
    written = write_exports(staging, sft, rm, ppo_prompts, ptx, decisions, policy, texts)
    problems = validate_exports(staging)
    if problems:
        _move_over(staging, rejected)
        return {}, problems
    if folder.exists():
        _move_over(folder, previous)
    os.rename(staging, folder)
    return {name: folder / path.name for name, path in written.items()}, []


def _move_over(source: Path, target: Path) -> None:
    """Rename a folder onto ``target``, replacing whatever was there."""
    if target.is_dir() and not target.is_symlink():
        shutil.rmtree(target)
    elif target.exists() or target.is_symlink():
        target.unlink()
    os.rename(source, target)


# ---------------------------------------------------------------- card


def _size_category(n: int) -> str:
    for limit, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"),
                         (1_000_000, "100K<n<1M"), (10_000_000, "1M<n<10M")):
        if n < limit:
            return label
    return "n>10M"


def _front_matter(rows: dict[str, int], languages: list[str]) -> str:
    """YAML the Hub reads; every scalar written as JSON, which is valid YAML."""
    q = _dumps
    lines = ["---", f"pretty_name: {q('Curated SFT, reward-model and PPO data')}",
             "license: other", "license_name: inherits-source-licenses", f"license_link: {q(CARD)}"]
    if languages:
        lines += ["language:"] + [f"- {q(lang)}" for lang in languages]
    lines += ["task_categories:", "- text-generation", "tags:", "- sft", "- rlhf", "- reward-modeling", "- ppo",
              "size_categories:", f"- {q(_size_category(max(rows.values(), default=0)))}", "configs:"]
    for spec in EXPORT_FILES:
        if rows[spec.name]:
            lines += [f"- config_name: {q(spec.config)}", "  data_files:", "  - split: train",
                      f"    path: {q(spec.name)}"]
            if spec.config == DEFAULT_CONFIG:
                lines.append("  default: true")
    return "\n".join(lines + ["---"])


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return "" if value is None else str(value).replace("\n", " ").replace("|", "\\|")


def _md_table(frame: pl.DataFrame) -> str:
    if frame.height == 0:
        return "_none_"
    lines = ["| " + " | ".join(frame.columns) + " |", "|" + "---|" * frame.width]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in frame.iter_rows()]
    return "\n".join(lines)


def _kept_by(decisions: pl.DataFrame, column: str) -> pl.DataFrame:
    """Candidates and kept rows per value of ``column``, largest first (null category: UNCATEGORIZED)."""
    return (
        decisions.with_columns(pl.col("category").fill_null(UNCATEGORIZED))
        .group_by(column)
        .agg(candidates=pl.len(), kept=pl.col("kept").sum())
        .sort("candidates", column, descending=[True, False])
    )


def _card(rows: dict[str, int], sft: pl.DataFrame, rm: pl.DataFrame, decisions: pl.DataFrame,
          reasons: pl.DataFrame, policy: SelectionPolicy, texts: pl.DataFrame | None = None) -> str:
    languages = sorted((set(sft["lang"].drop_nulls()) | set(rm["lang"].drop_nulls())) - {"other"})
    corpora = _kept_by(decisions, "corpus").join(
        rm.group_by("corpus").agg(rm_pairs=pl.len()), on="corpus", how="full", coalesce=True,
    ).with_columns(pl.col("candidates", "kept", "rm_pairs").fill_null(0)).sort("corpus")
    files = pl.DataFrame({"file": list(rows), "rows": list(rows.values())})
    settings = policy.to_dict()
    policy_table = pl.DataFrame({"setting": list(settings),
                                 "value": ["off" if v is None else _cell(v) for v in settings.values()]})
    kept = int(decisions["kept"].sum())
    sections = [
        _front_matter(rows, [str(lang) for lang in languages]),
        "# Curated SFT, reward-model and PPO data",
        f"Selected {kept} of {decisions.height} candidates for SFT; {rm.height} reward-model pairs; "
        f"{rows['ppo_prompts.jsonl']} PPO prompts. Every row traces back to its source file and row "
        "through the `record_id` of the warehouse tables.",
        "## Files",
        _md_table(files),
        "`dataset_info.json` registers the non-empty files for LLaMA-Factory. The `rm_pairs` and "
        "`ppo_prompts` files are TRL's standard preference and prompt-only formats (plus a `history` "
        "column); their `_conversational` twins carry the history inside the prompt messages.",
        "## License",
        "This dataset inherits the licenses of the source corpora: each row is under the license of the "
        "corpus it came from. Check each source's terms (some are non-commercial) before use.",
        _md_table(corpora),
        "## Selection policy",
        _md_table(policy_table),
        "## Why rows were dropped",
        "`rows`: candidates with this reason; `first`: candidates for which it was the first reason "
        "in the cascade (these sum to the dropped rows).",
        f"![Reasons]({REASONS_PLOT})",
        _md_table(reasons),
        "## Categories",
        f"![Categories]({CATEGORIES_PLOT})",
        _md_table(_kept_by(decisions, "category")),
        "## At the quality cut",
        f"The 10 SFT rows just above the cut (P(acceptable answer) >= {policy.quality_threshold:g}: kept by the "
        "quality stage) and the 10 just below it (dropped), closest first, so a curator can judge the judge.",
        _md_table(_margin_rows(decisions, policy, texts)),
    ]
    return "\n\n".join(sections) + "\n"


def _margin_rows(decisions: pl.DataFrame, policy: SelectionPolicy, texts: pl.DataFrame | None) -> pl.DataFrame:
    margin = quality_margin(decisions, policy).with_columns(pl.col("quality_score").round(3))
    if texts is None:
        return margin
    return margin.join(texts.select("record_id", "instruction", "output").unique("record_id", keep="first"),
                       on="record_id", how="left", maintain_order="left").with_columns(
        pl.col("instruction", "output").str.slice(0, 120))


SELECTION_REPORT = "selection_value.json"


def selection_value_section(folder) -> str:
    """The card's "Does the selection help?" section, from the latest ``selection_report`` in the folder
    (empty when none was run)."""
    from sft_assets.core.selection_value import card_section

    path = Path(folder) / SELECTION_REPORT
    return "\n" + card_section(json.loads(path.read_text(encoding="utf-8"))) + "\n" if path.is_file() else ""


def refresh_selection_value_section(folder) -> Path:
    """Replace the card's selection section with the one from the folder's report (a card written before the
    report gets it without rewriting the exports)."""
    from sft_assets.core.selection_value import CARD_MARK

    path = Path(folder) / CARD
    card = path.read_text(encoding="utf-8").split("\n" + CARD_MARK)[0].rstrip("\n") + "\n"
    return _write_text(path, card + selection_value_section(folder))


# ---------------------------------------------------------------- plots


def _stacked_bars(path: Path, labels: list[str], stacks: dict[str, list[int]], title: str) -> Path:
    """Horizontal stacked bars, first label on top; fixed size and no metadata, so the bytes repeat."""
    from matplotlib import rc_context
    from matplotlib.figure import Figure

    with rc_context({"font.family": plot_fonts()}):  # Chinese category names need the CJK font
        fig = Figure(figsize=(9, 1.6 + 0.28 * max(len(labels), 1)), dpi=100)
        ax = fig.subplots()
        left = [0] * len(labels)
        for name, values in stacks.items():
            ax.barh(range(len(labels)), values, left=left, label=name)
            left = [a + b for a, b in zip(left, values)]
        ax.set_yticks(range(len(labels)), labels, fontsize=8)
        ax.invert_yaxis()
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("rows")
        if labels:
            ax.legend(loc="lower right", fontsize=8)
        fig.tight_layout()
        atomic_write(path, lambda fh: fig.savefig(fh, format="png", metadata={"Software": None}))
    return path


def _top(frame: pl.DataFrame, what: str) -> tuple[pl.DataFrame, str]:
    shown = frame.head(PLOT_ROWS)
    return shown, (f"{what} (top {PLOT_ROWS} of {frame.height})" if frame.height > PLOT_ROWS else what)


def _reasons_plot(path: Path, reasons: pl.DataFrame, decisions: pl.DataFrame) -> Path:
    dropped = int((~decisions["kept"]).sum())
    shown, title = _top(reasons, f"Why candidates were dropped ({dropped} of {decisions.height})")
    return _stacked_bars(path, shown["reason"].to_list(), {
        "first reason": shown["first"].to_list(),
        "also applies": (shown["rows"] - shown["first"]).to_list(),
    }, title)


def _categories_plot(path: Path, decisions: pl.DataFrame) -> Path:
    shown, title = _top(_kept_by(decisions, "category"), "Candidates per category")
    return _stacked_bars(path, shown["category"].to_list(), {
        "kept": shown["kept"].to_list(),
        "dropped": (shown["candidates"] - shown["kept"]).to_list(),
    }, title)


# ---------------------------------------------------------------- validation


def _capped(name: str, problems: list[str]) -> list[str]:
    if len(problems) <= MAX_PROBLEMS_PER_FILE:
        return problems
    return problems[:MAX_PROBLEMS_PER_FILE] + [f"{name}: ... and {len(problems) - MAX_PROBLEMS_PER_FILE} more"]


def _parse(path: Path) -> tuple[list[tuple[str, Any]], list[str]]:
    """(where, object) for each record, and the parse problems; JSON lines split on "\\n" only."""
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            return [], [f"{path.name} line {exc.lineno}: invalid JSON ({exc.msg})"]
        if not isinstance(value, list):
            return [], [f"{path.name}: not a JSON array"]
        return [(f"record {i}", obj) for i, obj in enumerate(value)], []
    parsed, problems = [], []
    for line_no, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            parsed.append((f"line {line_no}", json.loads(line)))
        except json.JSONDecodeError as exc:
            problems.append(f"{path.name} line {line_no}: invalid JSON ({exc.msg})")
    return parsed, problems


def _row_problems(obj: Any, shape: dict[str, Callable[[Any], list[str]]]) -> list[str]:
    if not isinstance(obj, dict):
        return ["not a JSON object"]
    problems = [f"missing key {key!r}" for key in shape if key not in obj]
    problems += [f"{key}: {p}" for key, check in shape.items() if key in obj for p in check(obj[key])]
    if "chosen" in obj and obj.get("chosen") == obj.get("rejected"):
        problems.append("chosen equals rejected")
    return problems


def _dataset_info_problems(folder: Path, parsed: dict[str, list[tuple[str, Any]]]) -> list[str]:
    path = folder / DATASET_INFO
    if not path.is_file():
        return [f"{DATASET_INFO}: missing"]
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        return [f"{DATASET_INFO}: invalid JSON ({exc.msg})"]
    if not isinstance(info, dict):
        return [f"{DATASET_INFO}: not a JSON object"]
    problems = []
    for name, entry in info.items():
        where = f"{DATASET_INFO}[{name}]"
        if not isinstance(entry, dict):
            problems.append(f"{where}: not an object")
            continue
        formatting = entry.get("formatting", "alpaca")
        problems += [f"{where}: unknown key {key!r}" for key in sorted(set(entry) - LLAMA_FACTORY_KEYS)]
        if formatting not in LLAMA_FACTORY_COLUMNS:
            problems.append(f"{where}: formatting {formatting!r} is not alpaca or sharegpt")
            continue
        if not isinstance(entry.get("ranking", False), bool):
            problems.append(f"{where}: ranking is not a boolean")
        columns, tags = entry.get("columns", {}), entry.get("tags", {})
        problems += [f"{where}: unknown column key {k!r} for {formatting}"
                     for k in sorted(set(columns) - LLAMA_FACTORY_COLUMNS[formatting])]
        if tags and formatting != "sharegpt":
            problems.append(f"{where}: tags are read only for sharegpt")
        problems += [f"{where}: unknown tag {k!r}" for k in sorted(set(tags) - LLAMA_FACTORY_TAGS)]
        file_name = entry.get("file_name")
        if not isinstance(file_name, str) or not (folder / file_name).is_file():
            problems.append(f"{where}: file_name {file_name!r} does not exist")
            continue
        lacking = next(((loc, col) for loc, obj in parsed.get(file_name, [])
                        for col in columns.values() if not isinstance(obj, dict) or col not in obj), None)
        if lacking:
            problems.append(f"{file_name} {lacking[0]}: lacks column {lacking[1]!r} that {where} maps")
    return problems


def _card_problems(folder: Path) -> list[str]:
    import yaml

    path = folder / CARD
    if not path.is_file():
        return [f"{CARD}: missing"]
    text = path.read_text(encoding="utf-8")
    match = re.match(r"---\n(.*?)\n---\n", text, re.DOTALL)
    if not match:
        return [f"{CARD}: no YAML front matter"]
    try:
        meta = yaml.safe_load(match.group(1))
    except yaml.YAMLError as exc:
        return [f"{CARD}: front matter is not YAML ({exc})"]
    problems = [] if isinstance(meta, dict) and meta.get("license") else [f"{CARD}: no license in front matter"]
    configs = meta.get("configs", []) if isinstance(meta, dict) else []
    for config in configs:
        for split in config.get("data_files", []):
            if not (folder / str(split.get("path"))).is_file():
                problems.append(f"{CARD}: config {config.get('config_name')!r} names missing {split.get('path')!r}")
    for image in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text):
        if not (folder / image).is_file():
            problems.append(f"{CARD}: image {image!r} does not exist")
    return problems


def validate_exports(folder) -> list[str]:
    """Problems found in an export folder; empty means every file parses, every
    row has its keys with the right types, and dataset_info.json and the card
    point at files that exist."""
    folder = Path(folder)
    problems, parsed = [], {}
    for spec in EXPORT_FILES:
        path = folder / spec.name
        if not path.is_file():
            problems.append(f"{spec.name}: missing")
            continue
        rows, file_problems = _parse(path)
        file_problems += [f"{spec.name} {loc}: {p}" for loc, obj in rows for p in _row_problems(obj, spec.shape)]
        problems += _capped(spec.name, file_problems)
        parsed[spec.name] = rows
    return problems + _dataset_info_problems(folder, parsed) + _card_problems(folder)

"""What every materialization shows in the UI: row count, schema with a description per column, a preview."""


import dagster as dg
import polars as pl

PREVIEW_ROWS = 5
PREVIEW_CELL_CHARS = 80

# One line per column name, shown in the Columns table of every asset that has the column. A column name
# means the same in every table; a branch adding a column adds its line here
# (sft_assets_tests/defs/test_pipeline.py checks every column of every asset on the sample).
COLUMN_DESCRIPTIONS: dict[str, str] = {
    # lineage and the normalized record (core/records.py)
    "record_id": "Content hash of the normalized record: the same text in two files gets the same id.",
    "corpus": "Partition key: the raw file's path under the raw root.",
    "dataset": "The corpus family the file belongs to (its top folder), e.g. alpaca_en or cmmlu.",
    "source": "Path of the raw file the row was read from, relative to the raw root.",
    "source_row": "0-based index of the record in its file.",
    "source_line": "1-based line where the record starts, when the format has lines.",
    "kind": "Record type: sft, preference or multiple_choice.",
    "lang": "Detected language of the record's text (en, zh, ...).",
    "category": "Category used for balancing: exam subject, file name or the record's own field; null if none.",
    "instruction": "SFT: the instruction (user request).",
    "input": "SFT: optional extra input shown after the instruction; empty if none.",
    "output": "SFT: the reference answer.",
    "history": "Earlier conversation turns as (prompt, response) pairs; empty for single-turn rows.",
    "prompt": "Preference/PPO: the prompt the answers respond to.",
    "chosen": "Preference: the answer people preferred.",
    "rejected": "Preference: the answer people rejected.",
    "question": "Multiple choice: the question text.",
    "options": "Multiple choice: the option texts, in letter order (A, B, ...).",
    "answer": "Multiple choice: the correct option letter.",
    # quarantine
    "byte_offset": "Byte offset in the file where the bad record or the damage starts.",
    "reason": "Why the row was set aside (quarantine reason or drop reason).",
    "detail": "More about the reason: the parser's message, the offending field or value.",
    "duplicate_of": "For duplicate_in_file: the source_row of the first copy in the same file.",
    "raw": "Excerpt of the raw text that could not be normalized (first 2,000 characters).",
    # embeddings and diversity
    "embedding": "MiniLM unit vector (384 floats) of what the record asks.",
    "embedding_model": "The sentence-embedding model that produced the vector.",
    "model_id": "The model that produced the row (embedding or generation model).",
    "also_in": "Other files holding the same record (same record_id).",
    "text": "The text that was embedded or compared.",
    "exact_duplicate_of": "record_id of the identical row kept (after case/punctuation normalization); null for the kept copy.",
    "near_duplicate_of": "record_id of the near-duplicate cluster's leader (cosine >= threshold); null for a leader.",
    "similarity": "Cosine similarity to the cluster leader.",
    "leader_id": "record_id of the cluster leader this row was compared with.",
    "clustered_by": "How the row's near-duplicate cluster was found: method, threshold, code version, digest of the texts.",
    "topic": "Topic used for balancing: the known category, else a k-means topic id.",
    "topic_label": "Top TF-IDF terms of the row's k-means topic.",
    "cluster_id": "k-means cluster index; -1 where a known category is used instead.",
    "fitted_on_rows": "Uncategorized pool rows the k-means topics were fitted on (kept while the pool grows a little).",
    "known_category": "The row's own category, when it has one.",
    "diverse_rank": "Position in the K-Center-Greedy order; null when outside the diverse subset.",
    "radius": "Covering radius of the subset after this pick (cosine distance).",
    # novelty
    "novelty_prob": "Novelty p-value: share of old curated rows at most as like the curated set; null when gated.",
    "novelty_score": "How much the row looks like the curated set (in the view named in the asset's metadata); higher = more alike.",
    "novelty_cut": "The false-novel rate the diverse subset and the selection cut novelty_prob at (novelty config).",
    "novelty_keep": "Which side of the novelty cut the datasets want: novel, like_reference, or all (no filtering).",
    # quality
    "quality_score": "The judge's calibrated P(an acceptable answer); null outside the diverse subset or for non-SFT rows.",
    "harmlessness_score": "The separate harmlessness model's score (HH pairs): higher = more like the answers raters "
    "chose as less harmful; a ranking, not a probability, not used by selection; null where its gate refused it.",
    "quality_model_sha": "SHA-256 of the quality model file that scored the row; null where no model scored it.",
    "quality_reasons": "Quality rules the answer fails (empty output, refusal, wrong language, ...); empty: none.",
    "chosen_score": "Quality model's score of the chosen answer.",
    "rejected_score": "Quality model's score of the rejected answer.",
    "quality_margin": "chosen_score - rejected_score: how clearly the model agrees with the preference.",
    "path": "Where the model file is stored.",
    "sha256": "SHA-256 of the model file, checked before it is loaded.",
    "n_pairs": "Preference pairs available for training.",
    "n_skipped_identical": "Pairs skipped because chosen and rejected are the same text.",
    "n_train_pairs": "Pairs the classifier was trained on.",
    "n_test_pairs": "Held-out pairs it was measured on.",
    "pairwise_accuracy": "Held-out share of pairs where the chosen answer scores higher.",
    "roc_auc": "Held-out ROC AUC of chosen vs rejected answers.",
    "length_baseline_accuracy": "Held-out pairwise accuracy of 'the longer answer is better', the baseline to beat.",
    "C": "Inverse regularization strength of the logistic regression.",
    "refit_on_all_pairs": "Whether the stored model was refitted on every pair after measuring.",
    "quality_gate": "Why the judge is not used (its gate refused it on held-out data): quality by the rules alone; null: used.",
    "novelty_gate": "Why the novelty signal is not used (no candidates stand out from old curated rows); null: used.",
    "option_gate": "Why the option probabilities are not used for this row (the model is at chance); null: used.",
    # uncertainty
    "ppl": "Perplexity of the answer given its prompt (SmolLM2, answer tokens only).",
    "ppl_unconditioned": "Perplexity of the same answer tokens after an empty prompt.",
    "ifd": "Instruction-following difficulty: ppl / ppl_unconditioned (high: the prompt hardly helps).",
    "answer_tokens": "Answer tokens scored.",
    "truncated": "True when the text was cut to fit the model's window.",
    "status": "ok, or why no value was computed (empty_answer).",
    "option_probs": "Probability of each option letter as the model's next token.",
    "option_mass": "Sum of the option letters' probabilities: low means the model is unsure the answer is an option.",
    "choice": "The option letter the model finds most probable.",
    "correct": "Whether the model's choice is the correct answer.",
    # selection and datasets
    "kept": "Whether the row is in the final dataset.",
    "reasons": "Every reason that applies to the row, in cascade order; empty for a kept row.",
    "first_reason": "The first reason in cascade order: the one that decided the drop.",
    "missing_signals": "Signals selection could not use for this row (not computed or gated off), with why.",
    "record_ids": "record_ids of every pool row with this prompt.",
    "origins": "Which datasets the prompt came from (sft, preference, ...), one per record_id.",
    "origin": "Where the row came from: pool, seed, or an earlier round.",
    # self-instruct rounds
    "candidate": "Index of the generated candidate in its round.",
    "similar_to": "The existing instruction this candidate was too similar to, if any.",
    "instruction_prompt": "Prompt the model continued to write the instruction.",
    "input_prompt": "Prompt the model continued to write the input.",
    "output_prompt": "Prompt the model answered to write the output.",
    "few_shot_tasks": "Seed instructions shown as examples for the instruction step.",
    "few_shot_examples": "Seed tasks shown as Task/Input/Output examples for the input step.",
    "instruction_generation": "The model's raw text for the instruction step.",
    "input_generation": "The model's raw text for the input step.",
    "output_generation": "The model's raw text for the output step.",
    "tokens": "Tokens the model generated for this candidate.",
    "seed": "Random seed of the round.",
}


def _cell(value) -> str:
    text = "" if value is None else str(value)
    text = text.replace("\n", " ").replace("|", "\\|")
    return text if len(text) <= PREVIEW_CELL_CHARS else text[: PREVIEW_CELL_CHARS - 1] + "…"


def markdown_table(frame: pl.DataFrame, rows: int = PREVIEW_ROWS) -> str:
    head = frame.head(rows)
    lines = ["| " + " | ".join(head.columns) + " |", "|" + "---|" * len(head.columns)]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in head.iter_rows()]
    return "\n".join(lines)


def table_metadata(frame: pl.DataFrame, preview_columns: list[str] | None = None) -> dict:
    """Standard metadata for a table asset."""
    schema = dg.TableSchema(
        columns=[dg.TableColumn(name, str(dtype), description=COLUMN_DESCRIPTIONS.get(name))
                 for name, dtype in frame.schema.items()]
    )
    shown = frame.select(preview_columns) if preview_columns else frame
    return {
        "dagster/row_count": frame.height,
        "dagster/column_schema": schema,
        "preview": dg.MetadataValue.md(markdown_table(shown)),
    }

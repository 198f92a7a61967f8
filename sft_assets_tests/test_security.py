"""Security: the UI binds to loopback only, the package never runs code it reads
(no shell, pickle or eval), and paths from config stay inside the raw root.
Model files load only with their recorded SHA-256: core/test_quality.py."""

import json
import re
import shlex

import dagster as dg
import polars as pl
import pytest

from sft_assets.defs.models import EmbeddingModel
from sft_assets.defs.quality import ModelStore, QualityModelConfig, extra_preference_records, quality_model
from sft_assets.defs.resources import RawRoot
from sft_assets_tests.conftest import REPO

WEBSERVER = re.compile(r"\bdagster(?:-webserver|\s+dev)\b")


def _recipe_lines(makefile: str) -> list[tuple[str, str]]:
    """(target, command) for every recipe line, with ``$(VENV)``-style variables left as written."""
    lines, target = [], None
    for line in makefile.splitlines():
        if line.startswith("\t") and target:
            lines.append((target, line.strip()))
        elif match := re.match(r"^([\w.-]+):", line):
            target = match.group(1)
    return lines


def _host(command: str) -> str | None:
    args = shlex.split(command)
    for flag, value in zip(args, args[1:]):
        if flag in ("-h", "--host"):
            return value
    return next((a.split("=", 1)[1] for a in args if a.startswith("--host=")), None)


def test_the_ui_binds_to_loopback_only():
    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    servers = [(target, cmd) for target, cmd in _recipe_lines(makefile) if WEBSERVER.search(cmd)]
    assert [target for target, _ in servers] == ["ui"]
    assert all(_host(cmd) == "127.0.0.1" for _, cmd in servers), servers
    assert "0.0.0.0" not in makefile and "0.0.0.0" not in (REPO / "workspace.yaml").read_text(encoding="utf-8")


def test_host_parsing_sees_every_spelling():
    assert _host("dagster dev -h 127.0.0.1 -p 3000") == "127.0.0.1"
    assert _host("dagster dev --host 0.0.0.0") == "0.0.0.0"
    assert _host("dagster-webserver --host=0.0.0.0") == "0.0.0.0"
    assert _host("dagster dev -p 3000") is None  # no explicit host fails the test above


# Calls that run code or commands from data: none may appear in the package.
FORBIDDEN = {
    "shell=True": re.compile(r"shell\s*=\s*True"),
    "pickle.load": re.compile(r"\b(?:c?pickle|dill|cloudpickle)\.loads?\("),
    "joblib.load": re.compile(r"\bjoblib\.load\("),
    "torch.load": re.compile(r"\btorch\.load\("),
    "eval(": re.compile(r"(?<![\w.])eval\("),  # the builtin, not model.eval() or pl.Expr.list.eval
    "exec(": re.compile(r"(?<![\w.])exec\("),
    "os.system": re.compile(r"\bos\.(?:system|popen)\("),
}


def _forbidden_calls(source: str) -> list[str]:
    return [name for name, pattern in FORBIDDEN.items() if pattern.search(source)]


def test_package_has_no_shell_pickle_or_eval():
    files = sorted((REPO / "sft_assets").rglob("*.py"))
    assert len(files) > 20
    found = {str(f.relative_to(REPO)): hits for f in files if (hits := _forbidden_calls(f.read_text(encoding="utf-8")))}
    assert found == {}


def test_forbidden_patterns_match_what_they_mean():
    planted = ["subprocess.run(cmd, shell=True)", "pickle.load(fh)", "x = pickle.loads(b)", "joblib.load(p)",
               "torch.load(p)", "eval(text)", "exec(code)", "os.system(cmd)"]
    assert [bool(_forbidden_calls(line)) for line in planted] == [True] * len(planted)
    harmless = ["model.eval()", "pl.col('x').list.eval(pl.element())", "literal_eval(s)", "shell=False"]
    assert [_forbidden_calls(line) for line in harmless] == [[]] * len(harmless)


PAIR = {"chosen": "\n\nHuman: Say hi.\n\nAssistant: Hi!", "rejected": "\n\nHuman: Say hi.\n\nAssistant: Go away."}


@pytest.fixture
def raw_root(tmp_path):
    raw = tmp_path / "raw"
    (raw / "prefs").mkdir(parents=True)
    (raw / "prefs" / "extra.jsonl").write_text(json.dumps(PAIR) + "\n", encoding="utf-8")
    (tmp_path / "secret.jsonl").write_text(json.dumps(PAIR) + "\n", encoding="utf-8")
    (raw / "prefs" / "link.jsonl").symlink_to(tmp_path / "secret.jsonl")
    return RawRoot(root=str(raw))


def test_extra_preference_files_are_read_inside_the_raw_root(raw_root):
    inside = [str(raw_root.confine("prefs/extra.jsonl")[0]), "prefs/extra.jsonl", "prefs/../prefs/extra.jsonl"]
    for frame in extra_preference_records(inside, raw_root):
        assert frame["kind"].to_list() == ["preference"] and frame["source"].to_list() == ["prefs/extra.jsonl"]


@pytest.mark.parametrize("path", ["../secret.jsonl", "prefs/link.jsonl", "/etc/passwd", "prefs/../../secret.jsonl"])
def test_extra_preference_files_outside_the_raw_root_fail_the_asset(raw_root, tmp_path, path):
    """The check runs before any model work: the asset fails with the reason, whatever else it was given."""
    with pytest.raises(dg.Failure, match="outside the raw root"):
        quality_model(dg.build_asset_context(), config=QualityModelConfig(extra_preference_files=[path]),
                      raw_records=pl.DataFrame(), embedding_model=EmbeddingModel(cache_uri=str(tmp_path / "cache")),
                      model_store=ModelStore(path=str(tmp_path / "models")), raw_root=raw_root)


def test_a_missing_extra_preference_file_is_a_clear_failure(raw_root):
    with pytest.raises(dg.Failure, match="cannot read"):
        extra_preference_records(["prefs/gone.jsonl"], raw_root)

"""Security: the UI binds to loopback only, the package never runs code it reads
(no shell, pickle or eval), and paths from config stay inside the raw root.
Model files load only with their recorded SHA-256: core/test_quality.py."""

import json
import re
import shlex

import dagster as dg
import polars as pl
import pytest
import yaml

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


def test_seed_folder_outside_the_raw_root_fails_before_any_model_loads(raw_root, tmp_path):
    from sft_assets.defs.models import LanguageModel
    from sft_assets.defs.self_instruct import SelfInstructConfig, generated_instructions

    (tmp_path / "seeds").mkdir()
    (tmp_path / "seeds" / "seed_tasks.jsonl").write_text(
        json.dumps({"instruction": "Say hi.", "instances": [{"input": "", "output": "Hi!"}]}) + "\n", encoding="utf-8")
    for folder in ("../seeds", str(tmp_path / "seeds"), "prefs/../../seeds"):
        with pytest.raises(dg.Failure, match="seed_folder: .* outside the raw root"):
            generated_instructions(
                dg.build_asset_context(partition_key="1"), config=SelfInstructConfig(seed_folder=folder),
                raw_records=pl.DataFrame(), raw_root=raw_root, curated_root=RawRoot(root=str(tmp_path / "none")),
                language_model=LanguageModel(cache_uri=str(tmp_path / "cache")),
                embedding_model=EmbeddingModel(cache_uri=str(tmp_path / "cache")))


def test_a_seed_folder_inside_the_raw_root_is_read(raw_root, tmp_path):
    from sft_assets.defs.self_instruct import _seed_root

    root = _seed_root("prefs", raw_root, RawRoot(root=str(tmp_path / "curated")))
    assert root.root == str(raw_root.confine("prefs")[0])
    assert _seed_root("", raw_root, curated := RawRoot(root=str(tmp_path / "curated"))) is curated


# Calls that load a model or tokenizer: each must pass local_files_only=True, so no name reaches the network.
MODEL_LOADERS = ("from_pretrained", "SentenceTransformer", "CrossEncoder", "pipeline")


def _loads_without_local_only(source: str) -> list[int]:
    """Line numbers of model-loading calls that do not pass ``local_files_only=True``."""
    import ast

    lines = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call):
            continue
        name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", None)
        local = any(k.arg == "local_files_only" and isinstance(k.value, ast.Constant) and k.value.value is True
                    for k in node.keywords)
        if name in MODEL_LOADERS and not local:
            lines.append(node.lineno)
    return lines


def test_every_model_load_is_local_files_only():
    files = sorted((REPO / "sft_assets").rglob("*.py"))
    found = {str(f.relative_to(REPO)): hits for f in files
             if (hits := _loads_without_local_only(f.read_text(encoding="utf-8")))}
    assert found == {}
    loads = sum("from_pretrained(" in f.read_text(encoding="utf-8") for f in files)
    assert loads >= 2  # the causal LM and the sequence classifier


def test_the_local_only_scan_sees_a_download():
    planted = ["AutoTokenizer.from_pretrained(path)", "M.from_pretrained(p, local_files_only=False)",
               "SentenceTransformer(name, device='cpu')", "x = pipeline('text-generation', model=m)"]
    assert [bool(_loads_without_local_only(line)) for line in planted] == [True] * len(planted)
    assert _loads_without_local_only("AutoModel.from_pretrained(p, local_files_only=True)") == []


def _dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of deploy/k8s/Dockerfile, continuation lines joined, comments dropped."""
    text = (REPO / "deploy" / "k8s" / "Dockerfile").read_text(encoding="utf-8")
    lines = [line for line in text.replace("\\\n", " ").splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1].strip() if " " in line.strip() else "")
            for line in lines]


def test_the_image_runs_as_a_non_root_user():
    instructions = _dockerfile_instructions()
    users = [args for name, args in instructions if name == "USER"]
    assert users, "no USER instruction: the container would run as root"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0")
    created = [args for name, args in instructions if name == "RUN" and "useradd" in args]
    assert created and re.search(rf"--uid {user}\b", created[-1])
    values = yaml.safe_load((REPO / "deploy" / "k8s" / "values.yaml").read_text(encoding="utf-8"))
    (deployment,) = values["dagster-user-deployments"]["deployments"]
    pod = values["runLauncher"]["config"]["k8sRunLauncher"]["runK8sConfig"]["podSpecConfig"]["securityContext"]
    for context in (deployment["podSecurityContext"], pod):
        assert context["runAsNonRoot"] and str(context["runAsUser"]) == user and str(context["fsGroup"]) == user

"""What every benchmark sets up before its imports: models offline, the package importable from the
checkout without installing it, and where the shared corpora are."""

import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))
CORPORA = Path(os.environ.get("SFT_ASSETS_CORPORA", REPO.parent / "shared" / "corpora"))

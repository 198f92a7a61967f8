"""Where the project reads and writes, from the environment, with local defaults.

``SFT_ASSETS_DATA`` moves everything (default ``./data``); the other
variables move one piece, e.g. ``SFT_ASSETS_RAW_ROOT=../shared/corpora`` to
ingest the real corpora, or ``SFT_ASSETS_WAREHOUSE=s3://bucket/warehouse``.
``SFT_ASSETS_SENSOR_SECONDS`` sets how often the sensors look for work (default 15).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Settings:
    raw_root: str
    curated_root: str
    warehouse: str
    catalog: str
    exports: str
    cache: str
    sensor_seconds: int = 15

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> "Settings":
        env = os.environ if environ is None else environ
        data = Path(env.get("SFT_ASSETS_DATA", "data")).absolute()
        return cls(
            raw_root=env.get("SFT_ASSETS_RAW_ROOT", str(data / "raw")),
            curated_root=env.get("SFT_ASSETS_CURATED_ROOT", str(data / "curated")),
            warehouse=env.get("SFT_ASSETS_WAREHOUSE", str(data / "warehouse")),
            catalog=env.get("SFT_ASSETS_CATALOG", str(data / "catalog.duckdb")),
            exports=env.get("SFT_ASSETS_EXPORTS", str(data / "exports")),
            cache=env.get("SFT_ASSETS_CACHE", str(data / "cache")),
            sensor_seconds=int(env.get("SFT_ASSETS_SENSOR_SECONDS", "15")),
        )

    @classmethod
    def under(cls, data: Path, raw_root: Path | None = None) -> "Settings":
        """Everything under one folder (tests build real resources on tmp paths)."""
        return cls.from_env({"SFT_ASSETS_DATA": str(data), **({"SFT_ASSETS_RAW_ROOT": str(raw_root)} if raw_root else {})})

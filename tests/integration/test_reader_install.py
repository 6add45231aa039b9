"""The app contract's light install: ``pip install '.[reader]'`` in a fresh virtualenv reads the lists.

A fresh ``python -m venv`` gets the package with only its ``reader`` extra (uv from the project's venv,
offline from the warm uv cache, pinned by requirements.txt), then reads a recommendations table that the
pipeline's publish code wrote, through ``recsys.serving.get_recommendations``; TensorFlow, Keras, MLflow
and Airflow are not installed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[2]
UV = ROOT / ".venv" / "bin" / "uv"
pytestmark = pytest.mark.slow

READ = """
import json, sys
from recsys.serving import get_recommendations
from recsys.privacy.pseudonymize import user_key
known, unknown = get_recommendations("u042000001", n=3), get_recommendations("nobody", n=2)
heavy = sorted(m for m in ("tensorflow", "keras", "mlflow", "airflow", "pyarrow") if m in sys.modules)
print(json.dumps({"known": known["video_id"].tolist(), "unknown": unknown["video_id"].tolist(),
                  "key": user_key("u042000001"), "heavy": heavy}))
"""


def test_reader_extra_reads_a_table_in_a_fresh_venv(tmp_path):
    from recsys.serving.publish import FALLBACK_KEY, engine_for, publish

    key = "recsys-example-key-0123456789abcdef"
    me = "7ca3cc5b17580f682430e4545b124d32"  # user_key of u042000001 under that key (README test vector)
    db = tmp_path / "recs.db"
    recs = pd.DataFrame(
        {
            "user_key": [me] * 3 + [FALLBACK_KEY] * 2,
            "rank": [1, 2, 3, 1, 2],
            "video_id": [1003, 1001, 1002, 1010, 1011],
            "score": [0.9, 0.8, 0.7, 5.0, 4.0],
        }
    )
    publish(
        engine_for(f"sqlite:///{db}"), recs, ds="2026-01-03", model_version="7", active_users={me}, top_n=3
    )

    src = tmp_path / "src"  # a clean copy: building the wheel leaves nothing in the worktree
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "recsys", src / "recsys", ignore=shutil.ignore_patterns("__pycache__"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RECSYS_", "VIRTUAL_ENV", "UV_"))}
    install = subprocess.run(
        # the tested pins as constraints (what the warm cache holds); --offline: no index needed
        [str(UV), "pip", "install", "--offline", "--python", str(py), "-c", str(ROOT / "requirements.txt")]
        + [f"{src}[reader]"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert install.returncode == 0, install.stderr[-3000:]
    freeze = subprocess.run([str(UV), "pip", "freeze", "--python", str(py)], capture_output=True, text=True)
    installed = {re.split(r"==| @ ", line)[0].strip().lower() for line in freeze.stdout.splitlines()}
    assert not installed & {"tensorflow", "tensorflow-cpu", "keras", "mlflow", "apache-airflow", "pyarrow"}
    assert {"recsys", "pandas", "sqlalchemy", "psycopg2-binary"} <= installed

    env |= {"RECSYS_DB_URL": f"sqlite:///{db}", "RECSYS_PRIVACY__PSEUDONYM_KEY": key}
    out = subprocess.run([str(py), "-c", READ], env=env, cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got == {"known": [1003, 1001, 1002], "unknown": [1010, 1011], "key": me, "heavy": []}

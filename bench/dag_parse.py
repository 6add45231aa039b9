"""DAG parse cost: for each file in dags/, in a fresh interpreter that has already imported airflow.sdk,
the seconds to import the file and the heavy modules it pulled in.

Writes bench/results/dag_parse.json: {"files": [{"file", "seconds", "heavy_modules"}], ...}. "seconds" is
measured with Airflow's authoring API (dag, task, Asset) already loaded, as in a DAG processor;
"seconds_incl_sdk_members" also counts Airflow loading those on first use.
Run: make bench  (or .venv/bin/python bench/dag_parse.py)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from meta import run_info

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ["tensorflow", "keras", "mlflow", "pandas", "numpy", "great_expectations", "dask", "sklearn"]
PROBE = """
import sys, time, json, runpy, os
sys.path.insert(0, os.path.dirname(sys.argv[1]))  # as Airflow does: the DAG bundle's folder is importable
import airflow.sdk
if sys.argv[3] == "warm":  # what a DAG processor already has loaded: the authoring API itself
    from airflow.sdk import Asset, dag, task, task_group  # noqa: F401
before = set(sys.modules)
t0 = time.perf_counter()
runpy.run_path(sys.argv[1])
dt = time.perf_counter() - t0
new = {m.split('.')[0] for m in set(sys.modules) - before}
print(json.dumps({"seconds": dt, "heavy_modules": sorted(new & set(json.loads(sys.argv[2])))}))
"""


def dag_files() -> list[Path]:
    """The files Airflow parses as DAG files: dags/*.py minus the modules named in dags/.airflowignore."""
    ignore = ROOT / "dags" / ".airflowignore"
    ignored = {ln.strip() for ln in ignore.read_text().splitlines() if ln.strip() and not ln.startswith("#")}
    return [p for p in sorted((ROOT / "dags").glob("*.py")) if p.name not in ignored]


def main(repeats: int = 3) -> dict:
    files = []
    for path in dag_files():
        runs = {"warm": [], "cold": []}
        for mode in runs:
            for _ in range(repeats):
                out = subprocess.run(
                    [sys.executable, "-c", PROBE, str(path), json.dumps(HEAVY), mode],
                    capture_output=True,
                    text=True,
                    check=True,
                    env=os.environ.copy(),
                )
                runs[mode].append(json.loads(out.stdout.strip().splitlines()[-1]))
        files.append(
            {
                "file": f"dags/{path.name}",
                "seconds": round(min(r["seconds"] for r in runs["warm"]), 4),
                # includes Airflow loading its own authoring API (dag, task, Asset) on first use
                "seconds_incl_sdk_members": round(min(r["seconds"] for r in runs["cold"]), 4),
                "heavy_modules": sorted(
                    set(runs["warm"][0]["heavy_modules"]) | set(runs["cold"][0]["heavy_modules"])
                ),
            }
        )
    result = {"files": files, "repeats": repeats, **run_info()}
    out = ROOT / "bench" / "results" / "dag_parse.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()

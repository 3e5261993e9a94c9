"""Wall time of building the Airflow image here with its base image cached: the whole install of
Airflow and the DAGs' requirements (uv, pinned by the constraints file), every layer after the
base rebuilt. With BuildKit uv's download cache (a cache mount) is warm after the first build on a
machine, as it is for a user's later builds; `DOCKER_BUILDKIT=0` measures the legacy builder.

Each run builds a copy of app_src/airflow whose constraints/ folder holds one extra file, so the
local build cache cannot skip the install layers (the image the project uses is not touched);
the image built is removed afterwards. Bar: median <= 20 s.

    .venv/bin/python bench/airflow_image.py [--runs 3] [--json]
"""
from __future__ import annotations

import argparse
import json
import secrets
import shutil
import statistics
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from provision.airflow_image import build  # noqa: E402
from provision.inventory import load_inventory  # noqa: E402
from provision.providers.docker_engine import docker  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="print one JSON object at the end")
    args = parser.parse_args()
    env = load_inventory(ROOT / "inventory.yaml")["local"]
    af = env.settings.airflow
    build(env)                                              # the base image (and the project's image) first
    times = []
    for i in range(1, args.runs + 1):
        with tempfile.TemporaryDirectory(prefix="dropship-bench-airflow-") as tmp:
            context = Path(tmp) / "airflow"
            shutil.copytree(af.build.context, context, ignore=shutil.ignore_patterns("dags", "__pycache__"))
            (context / "constraints" / f"bench-{secrets.token_hex(4)}.txt").write_text("# bench\n")
            bench_env = replace(env, settings=replace(env.settings, airflow=replace(
                af, build=replace(af.build, context=context))))
            done = build(bench_env)
            docker("rmi", done.tag, check=False)
        if not done.built:
            raise SystemExit("nothing was built")
        times.append(done.seconds)
        print(f"build {i}: {done.seconds:.1f} s", flush=True)
    med = statistics.median(times)
    print(f"Airflow image build, base cached: median {med:.1f} s over {len(times)} runs (min {min(times):.1f}, "
          f"max {max(times):.1f})  bar <= 20 s: {'PASS' if med <= 20 else 'FAIL'}")
    if args.json:
        print(json.dumps({"runs": len(times), "median_s": round(med, 2), "min_s": round(min(times), 2),
                          "max_s": round(max(times), 2)}))


if __name__ == "__main__":
    main()

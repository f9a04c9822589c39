"""Time the default report end to end (run stage per stage, then render); prints JSON.

    python benchmarks/build.py [--work DIR] [--no-render]

Runs in DIR (default: a fresh temporary folder) so nothing is reused unless DIR already holds
artifacts: pass the same DIR twice to time a cached rebuild.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))


def main() -> None:
    args = sys.argv[1:]
    work = (Path(args[args.index("--work") + 1]) if "--work" in args
            else Path(tempfile.mkdtemp(prefix="modelcard-bench-")))
    work.mkdir(parents=True, exist_ok=True)
    os.chdir(work)  # the default report writes relative to the working directory
    from generator.config import load_config
    from generator.pipeline.run import run_report

    config = load_config()
    summary = run_report(config, show_progress=False)
    out = {"benchmark": "default_report", "device": summary.device, "run_seconds": round(summary.seconds, 1),
           "stages": {k: round(v, 1) for k, v in summary.stage_seconds.items()},
           # the slowest units: where a budget is won or lost
           "slowest_units": {k: round(v, 1) for k, v in sorted(summary.unit_seconds.items(),
                                                              key=lambda kv: -kv[1])[:30]},
           "computed": len(summary.computed), "reused": len(summary.reused),
           "failures": [f"{w}: {y}" for w, y in summary.failed]}
    if "--no-render" not in args:
        from generator.render.site import render_site

        started = time.perf_counter()
        site = render_site(config)
        out["render_seconds"] = round(time.perf_counter() - started, 1)
        files = [p for p in site.rglob("*") if p.is_file()]
        out["site_bytes"] = sum(p.stat().st_size for p in files)
        out["site_files"] = len(files)
        out["site_pages"] = sum(p.suffix == ".html" for p in files)
    print(json.dumps(out))


if __name__ == "__main__":
    main()

"""Command line: ``modelcard build | run | render | check | serve | diff | list``."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any, List, Optional


def _load(path: Optional[str]):
    """The config at ``path``, fully validated (names, method parameters, ids) before any
    model loads; every command that reads a config goes through here."""
    from generator.validation import check_config

    return check_config(path)


def _partial(args: argparse.Namespace, failed: int) -> int:
    """Exit status of a run with ``failed`` failed units: 1 unless partial results are allowed,
    so CI never publishes a site that silently lacks whole models or methods."""
    if not failed:
        return 0
    if args.allow_partial:
        print(f"{failed} unit(s) failed; --allow-partial: exit status 0", file=sys.stderr)
        return 0
    print(f"error: {failed} unit(s) failed (listed above); their results are missing from the report. "
          "Fix them, or pass --allow-partial to accept a partial report", file=sys.stderr)
    return 1


def _check_outputs(config) -> None:
    """Everything rendering will refuse, found before the run spends minutes."""
    from generator.preflight import check_config_paths
    from generator.render.site import check_site_dir

    check_config_paths(config, inputs=False)
    check_site_dir(config)


def cmd_run(args: argparse.Namespace) -> int:
    from generator.pipeline.run import run_report

    config = _load(args.config)
    summary = run_report(config, show_progress=not args.quiet)
    print(summary.text())
    return _partial(args, len(summary.failed))


def cmd_render(args: argparse.Namespace) -> int:
    from generator.artifacts.lock import report_lock
    from generator.render.site import render_site

    config = _load(args.config)
    _check_outputs(config)
    started = time.perf_counter()
    with report_lock(config.work_dir, "modelcard render"):
        site = render_site(config, build=not args.no_build)
    print(f"rendered in {time.perf_counter() - started:.1f} s: {site / 'index.html'}")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    """Validate only (no torch, no files written): exit 0 with ``ok: <file>``, or 2 with every
    problem as ``file:line: field: message`` (printed by :func:`main`)."""
    from generator.config import DEFAULT_CONFIG
    from generator.preflight import check_config_paths

    check_config_paths(_load(args.config))  # missing files and folders, unwritable outputs
    print(f"ok: {args.config or DEFAULT_CONFIG}")
    return 0


def cmd_build(args: argparse.Namespace) -> int:
    from generator.artifacts.lock import report_lock
    from generator.pipeline.run import run_report
    from generator.render.site import render_site

    config = _load(args.config)
    _check_outputs(config)
    if os.environ.get("RANK", "0") != "0" and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        # A torchrun job: every rank computes its units, rank 0 (holding the lock) renders.
        summary = run_report(config, show_progress=False)
        print(summary.text())
        return 0
    with report_lock(config.work_dir, "modelcard build"):
        summary = run_report(config, show_progress=not args.quiet)
        started = time.perf_counter()
        # A partial report is still rendered, so its run page shows what failed and why.
        site = render_site(config)
    summary.site = str(site / "index.html")
    print(summary.text())
    print(f"render: {time.perf_counter() - started:.1f} s")
    return _partial(args, len(summary.failed))


def cmd_serve(args: argparse.Namespace) -> int:
    import subprocess

    config = _load(args.config)
    mkdocs_file = config.work_dir / "mkdocs.yml"
    if not mkdocs_file.exists():
        print(f"{mkdocs_file} does not exist: run `modelcard build` first", file=sys.stderr)
        return 2
    return subprocess.call([sys.executable, "-m", "mkdocs", "serve", "-f", str(mkdocs_file), "-a", args.address])


def cmd_diff(args: argparse.Namespace) -> int:
    """Compare two reports. Exit status: 0 compared (and every ``--fail-on`` rule held); 1 a
    ``--fail-on`` rule was exceeded, or ``--exit-code`` and something changed; 2 a malformed
    rule (argparse); an error reading the reports is 1 too, with an ``error:`` line and no summary."""
    from generator.diff import check_rules, default_output, diff_reports, summary_markdown, write_diff

    diff = diff_reports(Path(args.base), Path(args.head), allow_missing_base=args.allow_missing_base,
                        site_url=args.site_url)
    if args.fail_on:
        check_rules(diff, args.fail_on)
    out = Path(args.output) if args.output else default_output(Path(args.head))
    md, js = write_diff(diff, Path(args.head), out)
    print(summary_markdown(diff))
    if out.resolve() == default_output(Path(args.head)).resolve():
        print(f"written: {md} and {js}; `modelcard render` of HEAD adds a Review page", file=sys.stderr)
    else:
        print(f"written: {md} and {js}; note: `modelcard render` of HEAD reads the diff from "
              f"{default_output(Path(args.head))}, so its site gets no Review page from this one", file=sys.stderr)
    if diff.failed:
        failed = [r["rule"] for r in (diff.gate or {}).get("rules", []) if not r["passed"]]
        print(f"error: --fail-on {', '.join(failed)} exceeded (listed in the summary above)", file=sys.stderr)
        return 1
    return 1 if (args.exit_code and diff.changed) else 0


def _fail_rule(text: str) -> Any:
    from generator.diff import parse_fail_rule

    try:
        return parse_fail_rule(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _capability_table(found: List[Any]) -> str:
    """Method rows x model columns of :func:`generator.capabilities.probe_capabilities`; each reason
    once, as a numbered note under the table."""
    from generator import catalogue
    from generator.capabilities import RUNS

    notes: List[str] = []

    def cell(cap: Any) -> str:
        if cap.status == RUNS or not cap.reason:
            return cap.short()
        if cap.reason not in notes:
            notes.append(cap.reason)
        return f"{cap.short()} [{notes.index(cap.reason) + 1}]"

    methods = [e.name for e in catalogue.entries("attribution")]
    columns: List[List[str]] = [["method", *methods]]
    for m in found:
        if m.error:
            notes.append(f"{m.model} did not load: {m.error}")
            column = [m.model] + [f"✗ model did not load [{len(notes)}]"] * len(methods)
        else:
            by_method = {c.method: c for c in m.cells}
            column = [m.model] + [cell(by_method[name]) if name in by_method else "–" for name in methods]
        columns.append(column)
    widths = [max(len(v) for v in col) for col in columns]
    lines = ["  ".join(col[row].ljust(w) for col, w in zip(columns, widths)).rstrip()
             for row in range(len(methods) + 1)]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.append("")
    lines += [f"input of {m.model}: {m.input}" for m in found if not m.error]
    lines.append("figures from that one input at probe settings (steps <= 8, n_samples <= 4, occlusion windows "
                 "without overlap); the run's pages show those of the configured settings")
    lines += [f"[{i}] {note}" for i, note in enumerate(notes, 1)]
    return "\n".join(lines)


def cmd_list_capabilities(args: argparse.Namespace) -> int:
    """``list methods --model report.yaml``: probe every attribution method on every model of the
    report with one input. Exit 0 even where methods are not applicable or fail (that is the
    answer); 1 when a model did not load (its column says why)."""
    from generator.capabilities import probe_capabilities
    from generator.preflight import check_config_paths

    config = _load(args.model)
    check_config_paths(config)  # as `modelcard check`: every name and path before a model loads
    found = probe_capabilities(config)
    print(_capability_table(found))
    return 1 if any(m.error for m in found) else 0


def cmd_list(args: argparse.Namespace) -> int:
    what = args.what
    if args.model is not None:
        if what != "methods":
            print("error: --model works with `modelcard list methods` only", file=sys.stderr)
            return 2
        return cmd_list_capabilities(args)
    if what == "models":
        from generator.models.sources import EMBEDDED_MODELS, MODEL_SOURCES

        for name in MODEL_SOURCES:
            print(f"{name + ':':<14} {MODEL_SOURCES.describe(name)}")
        print("\nembedded models: " + ", ".join(f"embedded:{m}" for m in EMBEDDED_MODELS))
    elif what == "datasets":
        from generator.data.sources import DATASET_SOURCES, SAMPLE_PHOTOS

        for name in DATASET_SOURCES:
            print(f"{name:<14} {DATASET_SOURCES.describe(name)}")
        print("\nsample photos: " + ", ".join(p[0] for p in SAMPLE_PHOTOS))
    elif what == "methods":
        # from the catalogue, so listing needs no torch
        from generator import catalogue

        for family, (answers, where) in catalogue.FAMILIES.items():
            print(f"{family}: {answers} (configured in {where})")
            for entry in catalogue.entries(family):
                where = f" [{entry.section}]" if entry.section and entry.section != family else ""
                print(f"  {entry.name:<24} {entry.title}: {entry.summary}{where}")
            print()
        print("parameters of each attribution method: modelcard list params")
    elif what == "params":
        from generator import catalogue

        for entry in catalogue.entries("attribution"):
            print(f"{entry.name} (version {entry.version}; {entry.citation})")
            for name, param in sorted(entry.all_params.items()):
                print(f"  {name:<14} {param.default!r:<12} {param.type_text()}: {param.help}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="modelcard", description="Explain image classifiers and publish a "
                                     "static model-card site.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log details")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, fn, text in (("build", cmd_build, "run then render (default report without a config)"),
                           ("run", cmd_run, "compute artifacts only (needs torch; GPU when available)"),
                           ("render", cmd_render, "artifacts -> site (no torch)")):
        p = sub.add_parser(name, help=text)
        p.add_argument("config", nargs="?", help="YAML config (default: the embedded default report)")
        p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
        if name == "render":
            p.add_argument("--no-build", action="store_true", help="write the pages but do not run mkdocs")
        else:
            p.add_argument("--allow-partial", action="store_true",
                           help="exit 0 even when some units failed (the default is exit status 1)")
        p.set_defaults(fn=fn)
    p = sub.add_parser("check", help="validate a config only (no torch, nothing written); exit 2 on errors")
    p.add_argument("config", nargs="?", help="YAML config (default: the embedded default report)")
    p.set_defaults(fn=cmd_check)
    p = sub.add_parser("serve", help="mkdocs serve of the built site")
    p.add_argument("config", nargs="?")
    p.add_argument("--address", default="127.0.0.1:8000")
    p.set_defaults(fn=cmd_serve)
    p = sub.add_parser("diff", help="compare two report outputs (folders with manifest.json, or configs)")
    p.add_argument("base")
    p.add_argument("head")
    p.add_argument("-o", "--output", help="folder for summary.md, diff.json and the Review page's images (default: "
                   "HEAD's report folder/diff, where `modelcard render` of HEAD reads them)")
    p.add_argument("--fail-on", action="append", type=_fail_rule, default=[], metavar="RULE=THRESHOLD",
                   help="exit with 1 when a rule is exceeded (repeatable): accuracy_drop=0.01 (accuracy fell by more "
                        "than 1 point), map_change=0.3 (a method's maps: 1 - mean Spearman above 0.3), "
                        "prediction_change=0.05 (share of changed top-1), cka_drop=0.1 (a layer's CKA below 0.9)")
    p.add_argument("--exit-code", action="store_true", help="exit with 1 when anything changed")
    p.add_argument("--allow-missing-base", action="store_true",
                   help="no base report (the change that adds the first one): say so and exit 0")
    p.add_argument("--site-url", metavar="URL",
                   help="where HEAD's site is published: the summary links its Review page")
    p.set_defaults(fn=cmd_diff)
    p = sub.add_parser("list", help="list registered names")
    p.add_argument("what", choices=["models", "datasets", "methods", "params"])
    p.add_argument("--model", metavar="REPORT_YAML",
                   help="with `methods`: load each model of this report and try every attribution method on one "
                        "input (needs torch): runs with its axiom figure, or not applicable / failed with why")
    p.set_defaults(fn=cmd_list)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    from generator.artifacts.lock import LockedError
    from generator.config import ConfigError
    from generator.render.site import RenderError

    args = build_parser().parse_args(argv)
    # In a torchrun job every rank loads the same inputs: their warnings are said once, by rank 0.
    quiet_rank = os.environ.get("RANK", "0") != "0"
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.ERROR if quiet_rank else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.fn(args)
    except ConfigError as exc:
        print(f"config error:\n{exc}", file=sys.stderr)
        return 2
    except LockedError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    except RenderError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: finished artifacts are kept; run the same command again to resume", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the CLI shows one clear line, -v shows the trace
        if args.verbose:
            raise
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

"""Run one fuzz target under atheris (libFuzzer), coverage-guided, from the repo's corpus.

    python -m fuzz.run TARGET [--seconds N | --runs N] [-- extra libFuzzer flags]
    python -m fuzz.run --list

Inputs libFuzzer finds interesting go to .fuzz-work/TARGET/corpus (not committed); the
committed seeds in fuzz/corpus/TARGET/ are only read. A crash is written to
.fuzz-work/TARGET/crash-<sha1>; re-run it with ``python -m fuzz.run TARGET -- <file>``.
libFuzzer's final statistics (``stat::number_of_executed_units``) give the executions.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import atheris

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / ".fuzz-work"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fuzz.run", description=__doc__.split("\n")[0])
    parser.add_argument("target", nargs="?")
    parser.add_argument("--list", action="store_true", help="list the targets and exit")
    parser.add_argument("--seconds", type=int, default=60, help="time budget (default 60)")
    parser.add_argument("--runs", type=int, help="stop after this many executions")
    parser.add_argument("libfuzzer", nargs="*", help="after --: flags or files for libFuzzer")
    args = parser.parse_args(argv)

    # Instrument onionmsg (and the targets) for coverage, nothing else: Twisted and the
    # standard library would only slow every execution down.
    with atheris.instrument_imports(include=["onionmsg", "fuzz"]):
        from fuzz.targets import CORPUS, TARGETS

    if args.list or args.target is None:
        for target in TARGETS.values():
            print(f"{target.name:10} {target.doc}")
        return 0
    if args.target not in TARGETS:
        parser.error(f"no target {args.target!r}: {', '.join(TARGETS)}")
    target = TARGETS[args.target]

    work = WORK / target.name
    (work / "corpus").mkdir(parents=True, exist_ok=True)
    seeds = CORPUS / target.name
    flags = [
        f"-max_len={target.max_len}",
        f"-artifact_prefix={work}/",
        "-print_final_stats=1",
        # A Python exception is the finding; a leak report from the interpreter is noise.
        "-detect_leaks=0",
    ]
    flags.append(f"-runs={args.runs}" if args.runs is not None else "")
    flags.append(f"-max_total_time={args.seconds}")
    files = [a for a in args.libfuzzer if not a.startswith("-")]
    extra = [a for a in args.libfuzzer if a.startswith("-")]
    inputs = files or [str(work / "corpus"), str(seeds)]

    atheris.Setup([sys.argv[0], *[f for f in flags if f], *extra, *inputs], target.run)
    atheris.Fuzz()
    return 0


if __name__ == "__main__":
    sys.exit(main())

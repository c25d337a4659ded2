"""Runs benchmarks on two commits in one run and prints each figure's ratio (new / base).

    python -m bench.compare --base HEAD~5 -- bench.poll --nodes 500 --pods 15000
    python -m bench.compare --base v0.1.0 --rounds 2 -- bench.storage --series 2000 --polls 60

The base commit is checked out in a temporary ``git worktree`` and runs with its own ``bench/``
and ``recorder/`` (the same virtual environment); the two alternate, ``--rounds`` times each,
so drift of the machine falls on both. Figures are paired by their line of output (the line
with its numbers blanked); each pair's best (smallest) value of the rounds is compared. For
times and memory, a ratio above 1 means the new commit is slower or bigger.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")
ROOT = Path(__file__).resolve().parent.parent


def figures(output: str) -> dict[tuple[str, int], float]:
    """Every number of the output keyed by its line's template and its position there."""
    found: dict[tuple[str, int], float] = {}
    for line in output.splitlines():
        numbers = _NUMBER.findall(line)
        if not numbers:
            continue
        template = " ".join(_NUMBER.sub("#", line).split())
        for position, text in enumerate(numbers):
            found[(template, position)] = float(text.replace(",", ""))
    return found


def run(tree: Path, command: list[str], timeout: float) -> str:
    done = subprocess.run(
        [sys.executable, "-m", *command],
        cwd=tree,
        env={**os.environ, "PYTHONPATH": str(tree)},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed in {tree}:\n{done.stderr[-2000:]}")
    return done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="the commit to compare with")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per benchmark run")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- bench.MODULE [ARGS]")
    args = parser.parse_args()
    command = [part for part in args.command if part != "--"]
    if not command:
        parser.error("name the benchmark after --, e.g. -- bench.poll --pods 15000")
    with tempfile.TemporaryDirectory() as scratch:
        base = Path(scratch) / "base"
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(base), args.base],
            check=True,
            capture_output=True,
        )
        # An editable install maps recorder._migrations to this checkout's migrations/: give
        # the base its own, found first through its package.
        (base / "recorder" / "_migrations").symlink_to(base / "migrations")
        try:
            best: dict[str, dict[tuple[str, int], float]] = {"base": {}, "new": {}}
            for round_number in range(1, args.rounds + 1):
                for name, tree in (("base", base), ("new", ROOT)):
                    output = run(tree, command, args.timeout)
                    print(
                        f"--- {name} ({args.base if name == 'base' else 'working tree'}), "
                        f"round {round_number}\n{output}",
                        flush=True,
                    )
                    for key, value in figures(output).items():
                        held = best[name].get(key)
                        best[name][key] = value if held is None else min(held, value)
        finally:
            subprocess.run(
                ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(base)],
                check=False,
                capture_output=True,
            )
    print(f"{'figure':<64}{'base':>12}{'new':>12}{'new/base':>10}")
    for key in best["new"]:
        if key not in best["base"]:
            continue
        old, new = best["base"][key], best["new"][key]
        ratio = f"{new / old:.2f}" if old else "-"
        label = f"{key[0][:58]} [{key[1]}]"
        print(f"{label:<64}{old:>12g}{new:>12g}{ratio:>10}")


if __name__ == "__main__":
    main()

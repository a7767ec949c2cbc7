"""How well does `llmos sh` understand what it is told? The evaluation set
(tests/shell_eval.jsonl: sentences with their expected plans) against a real
kernel on the embedded SmolLM2-135M, planning only (nothing is executed):

1. the deterministic parser on its subset (the common commands);
2. the model path on the phrasing the parser does not cover (the "model" subset);
3. the model path alone on every sentence (what the parser saves us);
4. the whole shell (parser first, the model for the rest) on every sentence.

Accuracy: the plan's syscalls and key args are the expected ones (see
bench/_shelleval.py); "syscall accuracy" counts the syscalls alone.

    python bench/shell_eval.py                  # starts `llmos up` on 127.0.0.1
    python bench/shell_eval.py --url URL --token T   # an already running kernel
    python bench/shell_eval.py --misses         # also print every wrong plan

The last line is `RESULT {json}`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _shelleval import Score, load, score
from _upproc import llmos_up
from llmos.sdk import Client
from llmos.shell import planner
from llmos.shell.model_planner import ModelPlanner, sdk_complete
from llmos.shell.plan import Plan, check
from llmos.shell.session import Shell

TOKEN = "bench-shell-token"


@contextlib.contextmanager
def kernel(home: Path, threads: int) -> Iterator[str]:
    """`llmos up` (embedded SmolLM2, 2 slots) in a subprocess; always stopped."""
    with llmos_up(home, ["--slots", "2", "--threads", str(threads)], TOKEN, "kernel.log") as (
        url,
        _,
    ):
        yield url


def evaluate(client: Client, show_misses: bool) -> dict[str, object]:
    cases = load()
    shell = Shell(client)
    table = shell.table()
    docs = {s["name"]: s["doc"] for s in table if s["allowed"]}
    allowed = {s["name"]: bool(s["allowed"]) for s in table}
    model = ModelPlanner(sdk_complete(client))

    def model_only(sentence: str) -> Plan:
        plan, _ = model.propose(sentence, docs)
        check(plan, allowed)
        return plan

    subsets = {p: [c for c in cases if c.path == p] for p in ("parser", "model")}
    scores: dict[str, Score] = {
        "parser_on_parser_subset": score(subsets["parser"], planner.parse),
        "model_on_model_subset": score(subsets["model"], model_only),
        "model_on_all": score(cases, model_only),
        "shell_on_all": score(cases, shell.plan),
    }
    for name, result in scores.items():
        print(f"{name:26} {json.dumps(result.summary())}")
        if show_misses:
            for miss in result.misses():
                print("   miss:", miss)
    missing = sorted({c.expect[0]["syscall"] for c in cases} - set(allowed))
    return {
        "cases": len(cases),
        "parser_cases": len(subsets["parser"]),
        "model_cases": len(subsets["model"]),
        "syscalls_missing_from_kernel": missing,
        **{name: result.summary() for name, result in scores.items()},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", help="an already running kernel (default: start one)")
    ap.add_argument("--token", help="its token (with --url)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--misses", action="store_true", help="print every wrong plan")
    args = ap.parse_args()
    if args.url:
        with Client(args.url, args.token) as client:
            result = evaluate(client, args.misses)
    else:
        with (
            tempfile.TemporaryDirectory() as tmp,
            kernel(Path(tmp), args.threads) as url,
            Client(url, TOKEN) as client,
        ):
            result = evaluate(client, args.misses)
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()

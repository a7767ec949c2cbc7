"""`llmos sh`: the natural-language shell. A sentence becomes a plan of syscalls
(the parser for common commands, the model for the rest), shown, confirmed if any
step is irreversible, then run. Without a sentence: a REPL with history."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.text import Text

from llmos.cli._shared import EXIT_ERROR, EXIT_USAGE, TokenOption, UrlOption, connect, console
from llmos.cli.audio import read_media
from llmos.sdk import ApiError
from llmos.shell.plan import Plan, ShellError
from llmos.shell.render import plan_view, result_view, step_line
from llmos.shell.session import Shell

HISTORY_LINES = 1000
PROMPT = "llmos> "
HELP = """Say what to do, e.g.:
  list processes            kill process 12           suspend process 7
  search memory for rent    remember that rent is due on the 1st
  list files under notes/   read file notes/todo.md   delete file old.txt
  show devices              switch policy to round robin
  calculate (2+3)*4         what time is it           list jobs
Irreversible steps are confirmed first. `exit` or Ctrl-D leaves."""


def sh(
    words: Annotated[
        list[str] | None,
        typer.Argument(
            metavar="SENTENCE",
            help="What to do, in words. Without one: an interactive shell.",
            show_default=False,
        ),
    ] = None,
    yes: Annotated[
        bool,
        typer.Option(
            "--yes",
            "-y",
            help="Run irreversible steps without asking (those the parser planned; the "
            "model's are always confirmed).",
        ),
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", "-n", help="Show the plan; run nothing.")
    ] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the plan and the results as JSON.")
    ] = False,
    no_model: Annotated[
        bool, typer.Option("--no-model", help="Only the deterministic parser; never the model.")
    ] = False,
    model: Annotated[
        str | None,
        typer.Option(help="Model that plans. Default: the kernel's first.", show_default=False),
    ] = None,
    audio: Annotated[
        Path | None, typer.Option(help="A spoken command: transcribed, then run as if typed.")
    ] = None,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Tell llmos what to do in plain words: `llmos sh --yes "list processes"`."""
    opts = Options(yes=yes, dry_run=dry_run, as_json=as_json)
    sentence = None if words is None else " ".join(words)
    if sentence is not None and not sentence.strip():
        _fail(opts, 'say what to do, e.g. llmos sh "list processes"', EXIT_USAGE)
    if audio is not None and sentence is not None:
        _fail(opts, "give a sentence or --audio FILE, not both", EXIT_USAGE)
    with connect(url, token) as client:
        shell = Shell(client, use_model=not no_model, model=model)
        if audio is not None:  # speech to text, then the sentence as if it were typed
            read_media(audio, "audio")
            sentence = client.transcribe(audio)["text"].strip()
            if not sentence:
                _fail(opts, f"heard no words in {audio}", EXIT_ERROR)
            if not as_json:
                console().print(Text(f"heard: {sentence}", style="dim"))
        if sentence is not None:
            code = run_sentence(shell, sentence, opts)
            if code:
                raise typer.Exit(code)
            return
        repl(shell, opts, _history_path())


@dataclass(frozen=True)
class Options:
    """How `run_sentence` behaves: the command's flags."""

    yes: bool = False
    dry_run: bool = False
    as_json: bool = False


def run_sentence(shell: Shell, sentence: str, opts: Options) -> int:
    """Plan, show, confirm, run one sentence; the exit status (0 when all went well)."""
    report: dict[str, Any] = {"sentence": sentence, "plan": None, "ran": False, "results": []}
    try:
        plan = shell.plan(sentence)
    except (ShellError, ApiError) as exc:
        return _refuse(opts, report, exc.message)
    report["plan"] = plan.to_dict()
    out = console()
    if not opts.as_json:
        out.print(plan_view(plan))
    if opts.dry_run:
        return _done(opts, report, 0)
    # --yes answers for the parser's plans only: the model misreads often enough
    # ("put process 7 to sleep" -> kill) that what it proposes is asked every time.
    if plan.irreversible and (plan.source == "model" or not opts.yes) and not _confirmed(plan):
        why = " (--yes does not cover the model's plans)" if opts.yes else ""
        return _refuse(opts, report, f"not confirmed: nothing was run{why}")
    report["ran"] = True
    for done in shell.run(plan):
        report["results"].append(done.to_dict())
        if not done.ok:
            where = f"step {done.index} ({step_line(done.step)})"
            return _refuse(opts, report, f"{where}: {done.error}")
        if not opts.as_json:
            if len(plan.steps) > 1:
                out.print(Text(f"{done.index}. {step_line(done.step)}", style="bold dim"))
            out.print(result_view(done))
    return _done(opts, report, 0)


def repl(shell: Shell, opts: Options, history: Path | None) -> None:
    """Read sentences until `exit` or end of input; a failed one does not end it."""
    lines = _History(history)
    out = console()
    if sys.stdin.isatty():
        out.print(Text("llmos shell: say what to do; `help` for examples, `exit` to leave."))
    while True:
        try:
            line = input(PROMPT).strip()
        except EOFError:
            typer.echo()
            return
        except KeyboardInterrupt:
            typer.echo()
            continue
        if not line:
            continue
        if line in ("exit", "quit", "logout"):
            return
        lines.add(line)
        if line in ("help", "?"):
            out.print(Text(HELP))
            continue
        try:
            run_sentence(shell, line, opts)
        except KeyboardInterrupt:
            typer.echo("\ninterrupted", err=True)


class _History:
    """The REPL's history: loaded into readline (arrow keys, Ctrl-R) when there is
    one, and each line appended to the file (mode 0600: sentences can hold secrets)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._readline: Any = None
        with contextlib.suppress(ImportError):
            import readline

            self._readline = readline
        if path is None:
            return
        with contextlib.suppress(OSError):
            kept = path.read_text(encoding="utf-8").splitlines()[-HISTORY_LINES:]
            path.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
            path.chmod(0o600)
            if self._readline is not None:
                for line in kept:
                    self._readline.add_history(line)

    def add(self, line: str) -> None:
        if self._readline is not None and not sys.stdin.isatty():
            self._readline.add_history(line)  # a tty's input() has added it already
        if self.path is None:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            with os.fdopen(fd, "a", encoding="utf-8") as f:
                f.write(line.replace("\n", " ") + "\n")
        except OSError:
            self.path = None  # an unwritable history is not worth failing for


def _history_path() -> Path:
    home = os.environ.get("LLMOS_HOME")
    return Path(home) / "sh_history" if home else Path.home() / ".llmos_history"


def _confirmed(plan: Plan) -> bool:
    count = len(plan.irreversible)
    question = f"Run it? {count} step{'s' if count > 1 else ''} cannot be undone"
    try:
        return typer.confirm(question, default=False, err=True)
    except typer.Abort:  # end of input: no answer is no
        typer.echo(err=True)
        return False


def _refuse(opts: Options, report: dict[str, Any], message: str) -> int:
    report["error"] = message
    if opts.as_json:
        return _done(opts, report, EXIT_ERROR)
    typer.echo(f"error: {message}", err=True)
    return EXIT_ERROR


def _done(opts: Options, report: dict[str, Any], code: int) -> int:
    if opts.as_json:
        report.setdefault("error", None)
        typer.echo(json.dumps(report, indent=2, default=str, ensure_ascii=False))
    return code


def _fail(opts: Options, message: str, code: int) -> NoReturn:
    _refuse(opts, {"sentence": "", "plan": None, "ran": False, "results": []}, message)
    raise typer.Exit(code)

"""The natural-language shell without a model: the deterministic parser on the
evaluation set (tests/shell_eval.jsonl), plan checking, the model path's output
handling with a stand-in model, and `llmos sh` against a live kernel on the mock
device. The real model's accuracy is measured in test_shell_real.py."""

from __future__ import annotations

import io
import json
import stat
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from typer.testing import CliRunner, Result

from llmos.cli.main import build_app
from llmos.cli.sh import Options, run_sentence
from llmos.sdk import Client
from llmos.shell import planner
from llmos.shell.examples import EXAMPLES, ExampleIndex
from llmos.shell.model_planner import ModelPlanner, prompt, read_plan
from llmos.shell.plan import MAX_STEPS, VOCABULARY, Plan, ShellError, Step, check, plan_schema
from llmos.shell.session import Shell
from tests._live_server import LiveServer, closed_port_url

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

from _shelleval import judge, load, score

CASES = load()
ALL_ALLOWED = {name: True for name in VOCABULARY}


# -- the evaluation set, deterministic path ---------------------------------------
def test_the_evaluation_set_is_big_and_mixed() -> None:
    paths = [c.path for c in CASES]
    assert len(CASES) >= 40 and set(paths) == {"parser", "model"}
    assert paths.count("parser") >= 25 and paths.count("model") >= 15
    assert len({c.sentence for c in CASES}) == len(CASES)
    for case in CASES:
        for step in case.expect:
            assert step["syscall"] in VOCABULARY, case.sentence


def test_the_parser_plans_every_common_command_exactly(capsys: pytest.CaptureFixture[str]) -> None:
    cases = [c for c in CASES if c.path == "parser"]
    result = score(cases, planner.parse)
    with capsys.disabled():
        print(f"\nshell eval, parser on its {result.n} cases: {json.dumps(result.summary())}")
    assert result.misses() == []
    assert result.accuracy == 1.0


def test_the_parser_leaves_other_phrasing_to_the_model() -> None:
    known = [c.sentence for c in CASES if c.path == "model" if planner.parse(c.sentence)]
    assert known == []  # else the "model" subset would not measure the model


def test_parser_plans_pass_the_check_and_fit_the_model_schema() -> None:
    schema = plan_schema()
    for case in CASES:
        plan = planner.parse(case.sentence)
        if plan is None:
            continue
        check(plan, ALL_ALLOWED)
        data = {"steps": [s.to_dict() for s in plan.steps], "explanation": plan.explanation}
        jsonschema.validate(data, schema)
        assert plan.source == "parser" and plan.explanation


def test_worked_examples_cover_the_vocabulary_and_stay_out_of_the_evaluation_set() -> None:
    sentences = {c.sentence.casefold() for c in CASES}
    assert [e for e, _ in EXAMPLES if e.casefold() in sentences] == []
    shown = {s.syscall for _, steps in EXAMPLES for s in steps}
    assert set(VOCABULARY) - shown == set()
    for _, steps in EXAMPLES:
        check(Plan(steps), ALL_ALLOWED)


# -- the parser's details ----------------------------------------------------------
def _steps(sentence: str) -> list[tuple[str, dict[str, Any]]]:
    plan = planner.parse(sentence)
    assert plan is not None, sentence
    return [(s.syscall, s.args) for s in plan.steps]


def test_parser_several_pids_clauses_politeness_and_case() -> None:
    assert _steps("Please KILL processes 3, 4 and 5!") == [
        ("proc.kill", {"pid": 3}),
        ("proc.kill", {"pid": 4}),
        ("proc.kill", {"pid": 5}),
    ]
    assert _steps("pause 8; list files under Notes/ then ps") == [
        ("proc.signal", {"pid": 8, "signal": "suspend"}),
        ("fs.list", {"prefix": "Notes/"}),
        ("proc.list", {}),
    ]
    assert _steps("remember that Alice's number is 555-0101") == [
        ("mem.add", {"text": "Alice's number is 555-0101"})
    ]
    assert _steps("use shortest job first scheduling") == [("sched.set", {"policy": "sjf"})]
    assert _steps("what's 2^10 + 1") == [
        ("tool.call", {"name": "calculator", "arguments": {"expression": "2**10 + 1"}})
    ]
    assert _steps("what time is it in Europe/Paris") == [
        ("tool.call", {"name": "time", "arguments": {"timezone": "Europe/Paris"}})
    ]


def test_parser_says_nothing_rather_than_guess() -> None:
    for sentence in (
        "",
        "   ",
        "delete everything",  # a path needs the word "file", a dot or a slash
        "kill",
        "list processes then frobnicate",  # one unknown clause: the whole sentence
        "what is the meaning of life",
        "switch policy to lottery",
    ):
        assert planner.parse(sentence) is None, sentence


# -- plans: irreversibility and the check ------------------------------------------
def test_irreversible_steps() -> None:
    assert Step("proc.kill", {"pid": 1}).irreversible
    assert Step("fs.delete", {"path": "a"}).irreversible
    assert Step("fs.rollback", {"path": "a", "version": 1}).irreversible
    assert Step("mem.delete", {"id": 1}).irreversible
    assert Step("proc.signal", {"pid": 1, "signal": "kill"}).irreversible
    assert Step("proc.signal", {"pid": 1, "signal": "term"}).irreversible
    assert not Step("proc.signal", {"pid": 1, "signal": "suspend"}).irreversible
    assert not Step("proc.list").irreversible and not Step("mem.add", {"text": "x"}).irreversible
    plan = Plan((Step("proc.list"), Step("proc.kill", {"pid": 2})))
    assert plan.irreversible == (Step("proc.kill", {"pid": 2}),)


@pytest.mark.parametrize(
    ("steps", "table", "message"),
    [
        ((), ALL_ALLOWED, "the plan has no steps"),
        ((Step("proc.list"),) * (MAX_STEPS + 1), ALL_ALLOWED, f"at most {MAX_STEPS}"),
        ((Step("proc.nuke"),), ALL_ALLOWED, "step 1 (proc.nuke): the kernel has no such syscall"),
        (
            (Step("proc.list"), Step("key.rotate")),
            {**ALL_ALLOWED, "key.rotate": True},
            "step 2 (key.rotate): the shell does not run this syscall",
        ),
        (
            (Step("proc.kill", {"pid": 3}),),
            {**ALL_ALLOWED, "proc.kill": False},
            "step 1 (proc.kill): your token may not make this syscall",
        ),
        (
            (Step("proc.kill", {"pid": "3"}),),
            ALL_ALLOWED,
            "step 1 (proc.kill): bad arguments at pid: '3' is not of type 'integer'",
        ),
        (
            (Step("proc.kill", {}),),
            ALL_ALLOWED,
            "step 1 (proc.kill): bad arguments: 'pid' is a required property",
        ),
        (
            (Step("fs.delete", {"path": "a", "recursive": True}),),
            ALL_ALLOWED,
            "step 1 (fs.delete): bad arguments: Additional properties are not allowed",
        ),
    ],
)
def test_check_refuses_with_the_reason(
    steps: tuple[Step, ...], table: dict[str, bool], message: str
) -> None:
    with pytest.raises(ShellError) as caught:
        check(Plan(steps), table)
    assert message in caught.value.message


def test_plan_from_json_names_what_is_wrong() -> None:
    for data, message in (
        ([], "a plan is an object with a list of steps"),
        ({"steps": [{"args": {}}]}, "step 1 has no syscall name"),
        ({"steps": [{"syscall": "proc.get", "args": [1]}]}, "args must be an object"),
    ):
        with pytest.raises(ShellError, match=message):
            Plan.from_dict(data, "model")


# -- the model path, with a stand-in model ----------------------------------------
class FakeModel:
    """Answers with canned text and records what it was asked."""

    def __init__(self, answer: str) -> None:
        self.answer = answer
        self.asked: list[tuple[list[dict[str, Any]], dict[str, Any]]] = []

    def __call__(self, messages: list[dict[str, Any]], schema: dict[str, Any]) -> str:
        self.asked.append((messages, schema))
        return self.answer


DOCS = {"proc.list": "processes", "proc.kill": "kill one", "mem.search": "search memories"}


def test_model_prompt_holds_the_catalogue_and_the_nearest_examples() -> None:
    messages = prompt("terminate agent 9 at once", DOCS, ExampleIndex())
    system = messages[0]["content"]
    assert "- proc.kill(pid): kill one" in system and "mem.search(query, k?)" in system
    assert "fs.list" not in system  # only what this token may make
    assert messages[-1] == {"role": "user", "content": "terminate agent 9 at once"}
    shown = [json.loads(m["content"]) for m in messages if m["role"] == "assistant"]
    assert shown and all(s["syscall"] in DOCS for plan in shown for s in plan["steps"])
    assert shown[-1]["steps"][0]["syscall"] == "proc.kill"  # the most alike is last


def test_model_plan_is_constrained_to_the_callers_syscalls() -> None:
    model = FakeModel(
        '{"steps": [{"syscall": "proc.kill", "args": {"pid": 9}}], "explanation": ""}'
    )
    plan, raw = ModelPlanner(model).propose("terminate agent 9 at once", DOCS)
    assert plan == Plan((Step("proc.kill", {"pid": 9}),), "", "model")
    assert raw == model.answer
    schema = model.asked[0][1]
    alternatives = schema["properties"]["steps"]["items"]["anyOf"]
    assert sorted(a["properties"]["syscall"]["const"] for a in alternatives) == sorted(DOCS)


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        ("kill it", "the model did not write a JSON plan"),
        ('{"steps": [{"syscall": "proc.kill", "args": {"pid": 1', "did not write a JSON plan"),
        ('{"steps": [], "explanation": ""}', "does not fit the syscall schema"),
        (
            '{"steps": [{"syscall": "key.rotate", "args": {}}], "explanation": ""}',
            "does not fit the syscall schema",
        ),
    ],
)
def test_model_output_that_is_not_a_plan_is_refused(answer: str, message: str) -> None:
    with pytest.raises(ShellError, match=message):
        ModelPlanner(FakeModel(answer)).propose("do the thing", DOCS)


def test_model_repeating_a_step_means_it_once() -> None:
    step = {"syscall": "proc.list", "args": {}}
    plan = read_plan(json.dumps({"steps": [step, step], "explanation": ""}), plan_schema())
    assert plan.steps == (Step("proc.list"),)


def test_judging_a_plan() -> None:
    case = next(c for c in CASES if c.sentence == "search memory for dentist appointment")
    good = Plan((Step("mem.search", {"query": "Dentist appointment.", "k": 3}),))
    assert judge(case, good) == (True, True)
    assert judge(case, Plan((Step("mem.search", {"query": "teeth"}),))) == (True, False)
    assert judge(case, Plan((Step("mem.list"),))) == (False, False)


# -- `llmos sh` against a live kernel ----------------------------------------------
def sh(
    server: LiveServer, *args: str, input: str | None = None, token: str | None = None
) -> Result:
    argv = ["sh", *args, "--url", server.url, "--token", token or server.token]
    return CliRunner().invoke(build_app(), argv, input=input)


def assert_clean_failure(result: Result, code: int, message: str) -> None:
    assert result.exit_code == code, result.output
    assert isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    assert message in result.stderr, result.stderr


def test_sh_yes_list_processes(server: LiveServer, client: Client) -> None:
    proc = client.spawn("sh-listed")
    result = sh(server, "--yes", "list processes")
    assert result.exit_code == 0, result.output
    assert "plan (parser): List the processes you can see." in result.stdout
    assert "1. proc.list" in result.stdout
    row = next(line for line in result.stdout.splitlines() if "sh-listed" in line)
    assert row.split()[:4] == [str(proc["pid"]), "sh-listed", "admin", "ready"]


def test_sh_words_need_no_quotes(server: LiveServer) -> None:
    result = sh(server, "show", "devices")
    assert result.exit_code == 0, result.output
    assert "sys.devices" in result.stdout and "mock0" in result.stdout


def test_refusing_the_confirmation_runs_nothing(server: LiveServer, client: Client) -> None:
    pid = client.spawn("sh-spared")["pid"]
    result = sh(server, f"list processes then kill process {pid}", input="n\n")
    assert_clean_failure(result, 1, "not confirmed: nothing was run")
    assert "[irreversible]" in result.stdout and "cannot be undone" in result.stderr
    assert "sh-spared" not in result.stdout  # not even the harmless first step ran
    assert client.process(pid)["state"] == "ready"
    no_answer = sh(server, f"kill process {pid}", input="")  # end of input is no
    assert_clean_failure(no_answer, 1, "nothing was run")
    assert client.process(pid)["state"] == "ready"


def test_confirming_runs_the_kill(server: LiveServer, client: Client) -> None:
    pid = client.spawn("sh-doomed")["pid"]
    result = sh(server, f"kill process {pid}", input="y\n")
    assert result.exit_code == 0, result.output
    assert client.process(pid)["state"] == "killed"


def test_dry_run_executes_nothing(server: LiveServer, client: Client) -> None:
    pid = client.spawn("sh-dry")["pid"]
    result = sh(server, "--dry-run", f"kill process {pid}; remember that dry runs are dry")
    assert result.exit_code == 0, result.output
    assert f"proc.kill pid={pid}" in result.stdout and "mem.add" in result.stdout
    assert client.process(pid)["state"] == "ready"
    assert not client.mem_search("dry runs are dry")


def test_suspend_and_resume_through_proc_signal(server: LiveServer, client: Client) -> None:
    pid = client.spawn("sh-sleeper")["pid"]
    assert sh(server, f"suspend process {pid}").exit_code == 0
    assert client.process(pid)["state"] == "suspended"
    assert sh(server, f"resume process {pid}").exit_code == 0
    assert client.process(pid)["state"] == "ready"


def test_json_output_holds_plan_and_results(server: LiveServer, client: Client) -> None:
    client.fs_write("sh/notes.md", "shell notes")
    result = sh(server, "--json", "list files under sh/ then read file sh/notes.md")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["ran"] is True and report["error"] is None
    assert [s["syscall"] for s in report["plan"]["steps"]] == ["fs.list", "fs.read"]
    listing, read = report["results"]
    assert [f["path"] for f in listing["result"]] == ["sh/notes.md"]
    assert read["result"]["content"] == "shell notes"


def test_a_failing_step_stops_the_plan(server: LiveServer, client: Client) -> None:
    before = len(client.mem_list(limit=1000))
    result = sh(server, "--yes", "kill process 987654 then remember that this never runs")
    assert_clean_failure(result, 1, "step 1 (proc.kill pid=987654): no process with pid 987654")
    assert len(client.mem_list(limit=1000)) == before
    as_json = sh(server, "--yes", "--json", "kill process 987654")
    assert as_json.exit_code == 1
    report = json.loads(as_json.stdout)
    assert report["error"] == "step 1 (proc.kill pid=987654): no process with pid 987654"
    assert report["results"] == [
        {
            "step": 1,
            "syscall": "proc.kill",
            "args": {"pid": 987654},
            "error": "no process with pid 987654",
        }
    ]


def test_unknown_sentences_are_refused_clearly(server: LiveServer) -> None:
    result = sh(server, "--no-model", "frobnicate the widgets")
    assert_clean_failure(result, 1, "the parser does not know 'frobnicate the widgets'")
    # the mock device writes letters, not JSON: the model path refuses, cleanly
    result = sh(server, "frobnicate the widgets")
    assert_clean_failure(result, 1, "error: the model did not write a JSON plan")


def test_yes_does_not_cover_an_irreversible_step_the_model_proposed(
    server: LiveServer, client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    pid = client.spawn("sh-misread")["pid"]
    answer = {"steps": [{"syscall": "proc.kill", "args": {"pid": pid}}], "explanation": ""}
    shell = Shell(client, complete=FakeModel(json.dumps(answer)))
    opts = Options(yes=True, dry_run=False, as_json=False)
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))  # a script: nobody to answer
    assert run_sentence(shell, f"put process {pid} to sleep", opts) == 1
    assert client.process(pid)["state"] == "ready"
    monkeypatch.setattr(sys, "stdin", io.StringIO("y\n"))  # a person who said yes
    assert run_sentence(shell, f"put process {pid} to sleep", opts) == 0
    assert client.process(pid)["state"] == "killed"


def test_a_plan_the_token_may_not_make_is_refused(server: LiveServer, client: Client) -> None:
    viewer = client.add_user("sh-viewer", role="viewer")["token"]
    pid = client.spawn("sh-protected")["pid"]
    result = sh(server, "--yes", f"kill process {pid}", token=viewer)
    assert_clean_failure(result, 1, "step 1 (proc.kill): your token may not make this syscall")
    assert client.process(pid)["state"] == "ready"


def test_empty_sentence_is_a_usage_error(server: LiveServer) -> None:
    for words in ([""], ["  ", " "]):
        result = sh(server, *words)
        assert_clean_failure(result, 2, 'error: say what to do, e.g. llmos sh "list processes"')


def test_unreachable_kernel() -> None:
    argv = ["sh", "list processes", "--url", closed_port_url(), "--token", "x"]
    result = CliRunner().invoke(build_app(), argv)
    assert_clean_failure(result, 1, "cannot reach the llmos kernel")


def test_repl_runs_each_line_and_keeps_history(
    server: LiveServer, client: Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LLMOS_HOME", str(tmp_path))
    history = tmp_path / "sh_history"
    history.write_text("an older line\n")
    history.chmod(0o644)
    pid = client.spawn("sh-repl")["pid"]
    lines = f"list processes\n\nhelp\nfrobnicate\nkill process {pid}\nn\nexit\nlist files\n"
    result = sh(server, "--no-model", input=lines)
    assert result.exit_code == 0, result.output
    assert result.stdout.count("llmos> ") == 6  # stops reading at `exit`
    assert "sh-repl" in result.stdout and "Say what to do" in result.stdout
    assert "the parser does not know 'frobnicate'" in result.stderr  # and carried on
    assert "nothing was run" in result.stderr
    assert client.process(pid)["state"] == "ready"
    assert history.read_text().splitlines() == [
        "an older line",
        "list processes",
        "help",
        "frobnicate",
        f"kill process {pid}",
    ]  # blank lines, the confirmation's answer and `exit` are not kept
    assert stat.S_IMODE(history.stat().st_mode) == 0o600  # sentences can hold secrets


def test_repl_ends_at_end_of_input(
    server: LiveServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LLMOS_HOME", str(tmp_path))
    result = sh(server, "--no-model", input="show devices\n")
    assert result.exit_code == 0, result.output
    assert "mock0" in result.stdout
    assert (tmp_path / "sh_history").read_text() == "show devices\n"

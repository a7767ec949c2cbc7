"""The deterministic parser: the shell's common commands, as a table of patterns,
so they work exactly whatever the model. A sentence it does not recognise gives
None (and the model gets to try).

Clauses joined by "then" or ";" become one plan; a command about several pids
("kill 3, 4 and 5") becomes one step per pid. Arguments keep the user's case."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from llmos.params import POLICY_NAMES
from llmos.shell.plan import Plan, Step

Build = Callable[[re.Match[str]], list[Step]]

_POLITE = re.compile(
    r"^(?:please\s+|(?:can|could|would|will) you\s+|kindly\s+|(?:now|ok|okay),?\s+)+", re.I
)
_TAIL = re.compile(r"(?:\s*,?\s*please)?[\s.!?]*$", re.I)
_CLAUSES = re.compile(r"\s*;\s*|\s*,?\s+(?:and\s+)?then\s+", re.I)
_PIDS = r"#?(?P<pids>\d+(?:(?:\s*,\s*|\s+and\s+|\s+)#?\d+)*)"
_PROCS = r"(?:\s+(?:the\s+)?(?:process(?:es)?|procs?|pids?|agents?))?"
_ALL = r"(?:\s+(?:all|my|the|every|of|me))*"
# arithmetic a calculator can take: digits, operators, brackets, a few function names
_ARITH = r"(?P<expr>[\d\s.+\-*/^%()]*\d[\d\s.+\-*/^%()]*|(?:sqrt|abs|round|min|max)\s*\(.+\))"

POLICY_ALIASES = {
    **{name: name for name in POLICY_NAMES},
    "round robin": "rr",
    "round-robin": "rr",
    "fair share": "fair",
    "fair-share": "fair",
    "first come first served": "fifo",
    "fcfs": "fifo",
    "shortest job first": "sjf",
    "shortest-job-first": "sjf",
    "multi-level feedback queue": "mlfq",
    "multilevel feedback queue": "mlfq",
    "priorities": "priority",
}


@dataclass(frozen=True)
class Rule:
    patterns: tuple[re.Pattern[str], ...]  # any of them, matching the whole clause
    build: Build
    explanation: str  # formatted with the match's named groups


def _pids(m: re.Match[str]) -> list[int]:
    return [int(p) for p in re.findall(r"\d+", m["pids"])]


def _one(syscall: str, ints: tuple[str, ...] = (), **fixed: object) -> Build:
    """A step whose args are the pattern's named groups that matched (those named in
    `ints` as integers), plus `fixed`."""

    def build(m: re.Match[str]) -> list[Step]:
        args: dict[str, object] = {k: v for k, v in m.groupdict().items() if v is not None}
        args.update({k: int(m[k]) for k in ints if m[k] is not None})
        return [Step(syscall, {**args, **fixed})]

    return build


def _per_pid(syscall: str, **fixed: object) -> Build:
    return lambda m: [Step(syscall, {"pid": pid, **fixed}) for pid in _pids(m)]


def _policy(m: re.Match[str]) -> list[Step]:
    return [Step("sched.set", {"policy": POLICY_ALIASES[m["policy"].lower()]})]


def _tool(name: str, group: str, arg: str) -> Build:
    """A call of tool `name` whose `arg` is the `group` matched (if it did)."""

    def build(m: re.Match[str]) -> list[Step]:
        value = m[group]
        if value and name == "calculator":
            value = value.replace("^", "**")  # what people type for a power
        arguments = {arg: value.strip()} if value else {}
        return [Step("tool.call", {"name": name, "arguments": arguments})]

    return build


def _rule(patterns: str | tuple[str, ...], build: Build, explanation: str) -> Rule:
    alternatives = (patterns,) if isinstance(patterns, str) else patterns
    return Rule(tuple(re.compile(p, re.I) for p in alternatives), build, explanation)


_POLICY = "|".join(sorted((re.escape(a) for a in POLICY_ALIASES), key=len, reverse=True))
_LIST = r"(?:list|show|display|view|get|print|ls)"
_PATH = r"(?P<path>[\w./-]+)"
_FILE = r"(?P<path>[\w-]*[./][\w./-]*)"  # without the word "file": a path with a dot or slash

RULES: tuple[Rule, ...] = (
    # -- processes ------------------------------------------------------------------
    _rule(
        rf"{_LIST}{_ALL}\s+(?:processes|procs|process list|running processes)"
        r"|(?:my\s+)?processes|ps|top|what(?:'s| is) running(?: now| right now)?"
        r"|(?:which|what) processes are (?:running|alive|there)",
        _one("proc.list"),
        "List the processes you can see.",
    ),
    _rule(
        rf"(?:kill|terminate|stop|end){_PROCS}\s+{_PIDS}",
        _per_pid("proc.kill"),
        "Kill process {pids}.",
    ),
    _rule(
        rf"(?:suspend|pause|freeze){_PROCS}\s+{_PIDS}",
        _per_pid("proc.signal", signal="suspend"),
        "Suspend process {pids}: its requests wait in the queue.",
    ),
    _rule(
        rf"(?:resume|unpause|continue|unfreeze){_PROCS}\s+{_PIDS}",
        _per_pid("proc.signal", signal="resume"),
        "Resume process {pids}.",
    ),
    _rule(
        r"(?:show|get|describe|inspect|info(?:rmation)? (?:on|about)|status of|details (?:of|for))"
        r"(?: the)? (?:process|proc|pid) #?(?P<pid>\d+)",
        _one("proc.get", ints=("pid",)),
        "Show process {pid}.",
    ),
    _rule(
        r"(?:show|get|print)(?: the)? (?:conversation|history|messages) (?:of|for)"
        r"(?: the)?(?: process)? #?(?P<pid>\d+)",
        _one("conv.history", ints=("pid",)),
        "Show process {pid}'s conversation.",
    ),
    _rule(
        r"(?:(?:show|get|print|tail)(?: me)?(?: the)? )?(?:logs?|output) (?:of|for|from)"
        r"(?: the)?(?: process| agent)? #?(?P<pid>\d+)",
        _one("proc.logs", ints=("pid",)),
        "Show what process {pid}'s program printed.",
    ),
    _rule(
        r"(?:spawn|start|create|launch)(?: a)?(?: new)? process(?: (?:named|called))? "
        r"(?P<name>[\w.-]+)(?: with priority (?P<priority>\d+))?",
        _one("proc.spawn", ints=("priority",)),
        "Start a process named {name}.",
    ),
    # -- memory ---------------------------------------------------------------------
    _rule(
        r"(?:search|query|look up|lookup|grep)(?: in)?(?: my| the)? memor(?:y|ies)"
        r"(?: for| about)? (?P<query>.+)",
        _one("mem.search"),
        "Search your memories for {query}.",
    ),
    _rule(
        r"(?:what do (?:i|you|we) (?:remember|know) about|recall) (?P<query>.+)",
        _one("mem.search"),
        "Search your memories for {query}.",
    ),
    _rule(
        r"(?:remember|memori[sz]e|note)(?: that)? (?P<text>.+)",
        _one("mem.add"),
        "Remember: {text}",
    ),
    _rule(
        rf"{_LIST}{_ALL}\s+memories|what do (?:i|you) remember",
        _one("mem.list"),
        "List your memories, newest first.",
    ),
    _rule(
        r"(?:show|get|read|display|open)(?: the)? memory #?(?P<id>\d+)",
        _one("mem.get", ints=("id",)),
        "Show memory {id}.",
    ),
    _rule(
        r"(?:forget|delete|remove) memory #?(?P<id>\d+)",
        _one("mem.delete", ints=("id",)),
        "Forget memory {id}.",
    ),
    # -- files ----------------------------------------------------------------------
    _rule(
        rf"(?:{_LIST}{_ALL}\s+files|what files do i have|ls)"
        r"(?:\s+(?:(?:under|in|inside|within|at)\s+)?(?P<prefix>[\w./-]+))?",
        _one("fs.list"),
        "List your files.",
    ),
    _rule(
        rf"{_LIST}(?: the)? versions of(?: the)?(?: file)? {_PATH}",
        _one("fs.versions"),
        "List the versions of {path}.",
    ),
    _rule(
        (
            rf"(?:(?:read|show|open|print|display)(?: the)? file|cat) {_PATH}",
            rf"(?:read|show|open|print|display|cat) {_FILE}",
        ),
        _one("fs.read"),
        "Show the file {path}.",
    ),
    _rule(
        (
            rf"(?:(?:delete|remove|erase)(?: the)? file|rm) {_PATH}",
            rf"(?:delete|remove|erase) {_FILE}",
        ),
        _one("fs.delete"),
        "Delete the file {path} (its history stays).",
    ),
    _rule(
        r"(?:search|grep)(?: in)?(?: my| the)? files (?:for|containing|about|with|mentioning) "
        r"(?P<query>.+)",
        _one("fs.search"),
        "Search your files for {query}.",
    ),
    _rule(
        r"find files (?:containing|with|about|mentioning) (?P<query>.+)",
        _one("fs.search"),
        "Search your files for {query}.",
    ),
    _rule(
        rf"(?:roll ?back|restore|revert)(?: the)?(?: file)? {_PATH} to version (?P<version>\d+)",
        _one("fs.rollback", ints=("version",)),
        "Restore version {version} of {path}.",
    ),
    # -- system ---------------------------------------------------------------------
    _rule(
        rf"(?:{_LIST}{_ALL}\s+)?devices|what devices are there",
        _one("sys.devices"),
        "Show the devices and their slots.",
    ),
    _rule(
        r"(?:(?:show|display|get)(?: the)? )?(?:system|sys|kernel) (?:info|information|status)"
        r"|uptime",
        _one("sys.info"),
        "Show the kernel's state.",
    ),
    _rule(
        rf"(?:{_LIST}|what is|what's)(?: the)? (?:scheduler|scheduling policy|policy)"
        r"(?: status)?|which (?:scheduling )?policy(?: is (?:in use|active))?",
        _one("sched.get"),
        "Show the scheduling policy and its counters.",
    ),
    _rule(
        r"(?:switch|change|set)(?: the)?(?: scheduling)? (?:policy|scheduler)(?: to)? "
        rf"(?P<policy>{_POLICY})(?: scheduling| policy)?",
        _policy,
        "Switch the scheduling policy to {policy}.",
    ),
    _rule(
        rf"use(?: the)? (?P<policy>{_POLICY}) (?:scheduling|policy|scheduler)",
        _policy,
        "Switch the scheduling policy to {policy}.",
    ),
    _rule(
        rf"(?:{_LIST}|which|what)(?: the)? models(?: are)?(?: (?:served|loaded|available))?",
        _one("sys.models"),
        "List the models served.",
    ),
    _rule(r"who ?am ?i|whoami", _one("auth.whoami"), "Show who your token says you are."),
    _rule(rf"{_LIST}{_ALL}\s+users", _one("user.list"), "List the users."),
    _rule(rf"{_LIST}{_ALL}\s+tokens", _one("token.list"), "List the API tokens."),
    # -- tools ----------------------------------------------------------------------
    _rule(
        rf"(?:{_LIST}|what)(?: are)?{_ALL}(?: available)? tools"
        r"(?: (?:are )?(?:there|available|do i have))?",
        _one("tool.list"),
        "List the tools.",
    ),
    _rule(
        r"(?:calculate|compute|evaluate|calc) (?P<expr>.+)",
        _tool("calculator", "expr", "expression"),
        "Calculate {expr}.",
    ),
    _rule(
        rf"(?:what is|what's|how much is) {_ARITH}",
        _tool("calculator", "expr", "expression"),
        "Calculate {expr}.",
    ),
    _rule(
        r"(?:what(?:'s| is)? the (?:current )?time(?: now)?|what time is it|current time|time)"
        r"(?: (?:in|for) (?P<timezone>UTC|[A-Za-z]+/[A-Za-z_]+(?:/[A-Za-z_]+)?))?",
        _tool("time", "timezone", "timezone"),
        "Tell the current time.",
    ),
    # -- jobs -----------------------------------------------------------------------
    _rule(rf"{_LIST}{_ALL}\s+(?:batch )?jobs", _one("job.list"), "List your batch jobs."),
    _rule(r"cancel(?: the)? job (?P<id>[\w-]+)", _one("job.cancel"), "Cancel job {id}."),
    _rule(r"(?:show|get)(?: the)? job (?P<id>[\w-]+)", _one("job.get"), "Show job {id}."),
)


def _clean(clause: str) -> str:
    clause = " ".join(clause.split())
    clause = _POLITE.sub("", clause)
    return _TAIL.sub("", clause)


def _parse_clause(clause: str) -> tuple[list[Step], str] | None:
    text = _clean(clause)
    for rule in RULES:
        for pattern in rule.patterns:
            m = pattern.fullmatch(text)
            if m is not None:
                groups = {k: v or "" for k, v in m.groupdict().items()}
                return rule.build(m), rule.explanation.format(**groups)
    return None


def parse(sentence: str) -> Plan | None:
    """The plan for a sentence the parser recognises, every clause of it; else None."""
    steps: list[Step] = []
    explained: list[str] = []
    for clause in _CLAUSES.split(sentence.strip()):
        if not clause.strip():
            continue
        parsed = _parse_clause(clause)
        if parsed is None:
            return None
        steps += parsed[0]
        explained.append(parsed[1])
    if not steps:
        return None
    return Plan(tuple(steps), " ".join(explained), "parser")

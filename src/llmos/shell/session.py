"""A shell session: one SDK client, the syscall table as its token sees it, and
the path from a sentence to a checked plan — the parser first, the model for the
rest."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from llmos.sdk import Client
from llmos.shell import planner
from llmos.shell.executor import StepResult, execute
from llmos.shell.model_planner import Complete, ModelPlanner, sdk_complete
from llmos.shell.plan import Plan, ShellError, check

MAX_SENTENCE = 2000  # characters


class Shell:
    """`complete` stands in for the model (tests); `use_model=False` keeps to the
    parser. The syscall table is fetched once, on the first plan."""

    def __init__(
        self,
        client: Client,
        *,
        use_model: bool = True,
        model: str | None = None,
        complete: Complete | None = None,
    ) -> None:
        self.client = client
        self.use_model = use_model
        self._model = ModelPlanner(complete or sdk_complete(client, model))
        self._table: list[dict[str, Any]] | None = None

    def table(self) -> list[dict[str, Any]]:
        """The kernel's syscalls: name, doc, and whether this token may make each."""
        if self._table is None:
            self._table = self.client.syscalls()
        return self._table

    def plan(self, sentence: str) -> Plan:
        """The checked plan for `sentence`; ShellError says why there is none."""
        sentence = " ".join(sentence.split())
        if not sentence:
            raise ShellError('say what to do, e.g. "list processes"')
        if len(sentence) > MAX_SENTENCE:
            raise ShellError(f"the sentence is {len(sentence)} characters; at most {MAX_SENTENCE}")
        plan = planner.parse(sentence)
        if plan is None:
            if not self.use_model:
                raise ShellError(f"the parser does not know {sentence!r} (the model is off)")
            docs = {s["name"]: s["doc"] for s in self.table() if s["allowed"]}
            plan, _ = self._model.propose(sentence, docs)
        check(plan, {s["name"]: bool(s["allowed"]) for s in self.table()})
        return plan

    def run(self, plan: Plan) -> Iterator[StepResult]:
        return execute(self.client, plan)

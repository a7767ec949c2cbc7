"""The model path: a sentence the parser does not know becomes a plan written by
the LLM, as JSON constrained to the plan schema (`response_format` json_schema,
which llama.cpp turns into a grammar), prompted with the syscall catalogue and the
worked examples most like the sentence. Its output is checked like any plan."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

import jsonschema

from llmos.sdk import Client
from llmos.shell.examples import ExampleIndex
from llmos.shell.plan import VOCABULARY, Plan, ShellError, plan_schema, signature

# (messages, JSON schema) -> the model's text; the seam tests use to stand in a model
Complete = Callable[[list[dict[str, Any]], dict[str, Any]], str]

SHOTS = 8  # worked examples in the prompt (4 to 12 tried: 8 was among the best)
MAX_MODEL_STEPS = 3  # a small model repeats itself; longer plans are the parser's
MAX_PLAN_TOKENS = 256  # room for three steps with long strings

SYSTEM = (
    "You are the shell of llmos, an operating system for LLM agents. You turn the "
    "user's request into a plan of syscalls, written as JSON: "
    '{"steps": [{"syscall": NAME, "args": {...}}], "explanation": SHORT TEXT}. '
    "Use only these syscalls (? marks an optional argument):\n"
)


def prompt(sentence: str, docs: Mapping[str, str], index: ExampleIndex) -> list[dict[str, Any]]:
    """The chat messages asking for `sentence`'s plan: the catalogue of the syscalls
    in `docs` (name -> one-line doc), then worked examples as earlier turns."""
    names = [n for n in VOCABULARY if n in docs]
    catalogue = "\n".join(f"- {signature(n)}: {docs[n]}" for n in names)
    messages: list[dict[str, Any]] = [{"role": "system", "content": SYSTEM + catalogue}]
    for example, steps in index.nearest(sentence, set(names), SHOTS):
        shown = {"steps": [s.to_dict() for s in steps], "explanation": ""}
        messages.append({"role": "user", "content": example})
        messages.append({"role": "assistant", "content": json.dumps(shown)})
    messages.append({"role": "user", "content": sentence})
    return messages


def read_plan(text: str, schema: dict[str, Any]) -> Plan:
    """The model's text as a Plan, if it is JSON that fits the plan schema."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ShellError(f"the model did not write a JSON plan ({exc.msg})") from None
    error = jsonschema.exceptions.best_match(
        jsonschema.Draft202012Validator(schema).iter_errors(data)
    )
    if error is not None:
        raise ShellError(f"the model's plan does not fit the syscall schema: {error.message}")
    plan = Plan.from_dict(data, "model")
    # a small model may say the same step twice in a row: once is what it means
    steps = [s for i, s in enumerate(plan.steps) if i == 0 or s != plan.steps[i - 1]]
    return Plan(tuple(steps), plan.explanation, plan.source)


class ModelPlanner:
    def __init__(self, complete: Complete, index: ExampleIndex | None = None) -> None:
        self._complete = complete
        self._index = index or ExampleIndex()

    def propose(self, sentence: str, docs: Mapping[str, str]) -> tuple[Plan, str]:
        """A plan for `sentence` using the syscalls in `docs`, and the model's raw
        text. Raises ShellError if the model wrote no usable plan."""
        names = [n for n in VOCABULARY if n in docs]
        if not names:
            raise ShellError("this token may make none of the syscalls the shell plans with")
        schema = plan_schema(names, MAX_MODEL_STEPS)
        text = self._complete(prompt(sentence, docs, self._index), schema)
        return read_plan(text, schema), text


def sdk_complete(client: Client, model: str | None = None) -> Complete:
    """Ask the kernel's model through `/v1/chat/completions`: greedy, and constrained
    to the schema."""

    def complete(messages: list[dict[str, Any]], schema: dict[str, Any]) -> str:
        reply = client.chat(
            messages,
            model=model,
            max_tokens=MAX_PLAN_TOKENS,
            temperature=0,
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "plan", "schema": schema},
            },
        )
        return reply.text

    return complete

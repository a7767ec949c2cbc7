"""A ReAct agent (reason, act, observe; Yao et al. 2022) on llmos: it thinks, calls
one of the kernel's tools, reads the result, and repeats until it can answer.

    llmos run examples/react_agent.py -f -- "What is 17 * 23 + 4?"

Each step the model answers in JSON constrained to a schema (the engine's grammar
keeps even a 135M model to it): {"thought", "action": a tool's name or "finish",
"input"}. The first step must use a tool (act before answering); after that the
model may finish. A tool is called through the kernel (`tool.call`), so the
process's capability and the access rules apply. After MAX_STEPS the last
observation is the answer. The trace goes to stdout; the exit status is 0 when
there is an answer."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from llmos.sdk import ApiError, Client

MAX_STEPS = 4
PREFERRED = ("calculator", "time", "memory_search", "file_list", "file_read")
# One worked example per tool (task, thought, input, observation, answer): a small
# model follows examples better than instructions.
EXAMPLES = {
    "calculator": ("What is 6 * 7 - 5?", "I compute 6 * 7 - 5", "6 * 7 - 5", "37", "37"),
    "time": (
        "What time is it in Paris?",
        "I look up the time in Paris",
        "Europe/Paris",
        "2025-05-01T14:03:00+02:00",
        "It is 14:03 in Paris",
    ),
}
DEFAULT_TASK = "What is 17 * 23 + 4?"
OBSERVATION_CHARS = 400


def usable_tools(llm: Client, wanted: Sequence[str]) -> dict[str, tuple[str, str]]:
    """The `wanted` tools of the kernel's whose arguments can be one string: name ->
    (that argument's name, '' for a tool that takes none; the tool's description)."""
    listing = llm.syscall("tool.list")
    tools = listing.get("data", listing) if isinstance(listing, dict) else listing
    out: dict[str, tuple[str, str]] = {}
    for tool in tools:
        params = tool.get("parameters") or {}
        props, required = params.get("properties", {}), params.get("required", [])
        strings = [p for p, s in props.items() if s.get("type") == "string"]
        what = str(tool.get("description", "")).split(".")[0]
        if len(required) == 1 and required[0] in strings:
            out[tool["name"]] = (required[0], what)
        elif not required:
            out[tool["name"]] = (strings[0] if strings else "", what)
    return {n: out[n] for n in wanted if n in out}


def step_schema(actions: list[str]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "thought": {"type": "string", "maxLength": 120},
            "action": {"enum": actions},
            "input": {"type": "string", "minLength": 1, "maxLength": 120},
        },
        "required": ["thought", "action", "input"],
        "additionalProperties": False,
    }


def decide(llm: Client, messages: list[dict[str, str]], actions: list[str]) -> dict[str, str]:
    reply = llm.chat(
        messages,
        max_tokens=160,
        temperature=0,
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "step", "schema": step_schema(actions)},
        },
    )
    try:
        step = json.loads(reply.text)
    except json.JSONDecodeError:  # cut off by max_tokens: act on what is there
        step = {}
    return {
        "thought": str(step.get("thought", "")).strip(),
        "action": str(step.get("action", actions[0])),
        "input": str(step.get("input", "")).strip(),
    }


def act(llm: Client, tool: str, arg: str, value: str) -> str:
    try:
        result = llm.syscall("tool.call", {"name": tool, "arguments": {arg: value} if arg else {}})
    except ApiError as exc:
        return f"error: {exc.message}"
    if isinstance(result, dict) and "result" in result:  # {"expression", "result": 391}
        result = result["result"]
    text = result if isinstance(result, str) else json.dumps(result, ensure_ascii=False)
    return text[:OBSERVATION_CHARS]


def _example(task: str, thought: str, arg: str, seen: str, answer: str, tool: str) -> str:
    first = {"thought": thought, "action": tool, "input": arg}
    last = {"thought": f"The {tool} says {seen}", "action": "finish", "input": answer}
    return f"Example. Task: {task}\n{json.dumps(first)}\nObservation: {seen}\n{json.dumps(last)}\n"


def solve(llm: Client, task: str, wanted: Sequence[str]) -> str | None:
    tools = usable_tools(llm, wanted)
    if not tools:
        print("no tools are available to this process")
        return None
    catalogue = "".join(
        f"- {n}: {what}. input: {arg or 'nothing'}\n" for n, (arg, what) in tools.items()
    )
    examples = "".join(_example(*EXAMPLES[n], tool=n) for n in tools if n in EXAMPLES)
    system = (
        f"You solve the user's task with tools.\nTools:\n{catalogue}"
        'Reply in JSON: {"thought": why, "action": a tool name or "finish", "input": '
        "the tool's input, or the final answer when the action is finish}.\n" + examples
    )
    messages = [{"role": "system", "content": system}, {"role": "user", "content": task}]
    answer, done = None, set()
    for n in range(1, MAX_STEPS + 1):
        actions = list(tools) if n == 1 else [*tools, "finish"]
        step = decide(llm, messages, actions)
        print(f"Thought {n}: {step['thought']}")
        if step["action"] == "finish":
            return step["input"] or answer
        print(f"Action {n}: {step['action']}[{step['input']}]")
        if (step["action"], step["input"]) in done and answer is not None:
            print(f"Observation {n}: (the same call again: its answer stands)")
            return answer
        done.add((step["action"], step["input"]))
        observation = act(llm, step["action"], tools[step["action"]][0], step["input"])
        print(f"Observation {n}: {observation}", flush=True)
        if not observation.startswith("error:"):
            answer = observation
        messages.append({"role": "assistant", "content": json.dumps(step)})
        messages.append({"role": "user", "content": f"Observation: {observation}"})
    return answer


def main() -> int:
    parser = argparse.ArgumentParser(description="A ReAct agent on llmos's tools.")
    parser.add_argument("task", nargs="*", help=f"default: {DEFAULT_TASK!r}")
    parser.add_argument("--tools", default=",".join(PREFERRED), help="comma-separated")
    opts = parser.parse_args()
    task = " ".join(opts.task) or DEFAULT_TASK
    print(f"Task: {task}")
    with Client() as llm:
        answer = solve(llm, task, [t.strip() for t in opts.tools.split(",") if t.strip()])
    if answer is None:
        print("Final answer: (none)")
        return 1
    print(f"Final answer: {answer}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

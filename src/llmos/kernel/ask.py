"""Natural-language questions about the system (`llmos ask "why is it slow?"`,
POST /v1/ask): the kernel gathers the facts (facts.py) and has the model explain
them, quoting the figures.

The model's request goes the normal way (Kernel.submit: admission, the run queue,
accounting to the caller's process), greedy, one paragraph of at most
MAX_ASK_TOKENS, after one worked example. Its text is tidied (a small model
repeats itself) and checked, since it may still leave the figures out: every key
figure (queue depth, tokens/s, p95 latency, the slowest process, the alerts) the
model did not quote is appended on a "Figures:" line. Facts too long for the
model's context are cut to the key figures. When the model cannot answer — the
queue is full, the device failed or timed out, which is when people ask — the
answer is the figures, with the model's error beside them."""

from __future__ import annotations

import asyncio
import re
from typing import TYPE_CHECKING, Any

from llmos.errors import (
    ContextOverflow,
    DeviceError,
    InvalidRequest,
    Overloaded,
    Timeout,
    Unavailable,
)
from llmos.kernel.facts import Facts, Figure, gather
from llmos.kernel.request import Request
from llmos.kernel.sysdefs import ALL, Syscall
from llmos.kernel.tokens import Caller

if TYPE_CHECKING:
    from llmos.kernel.kernel import Kernel

MAX_QUESTION_CHARS = 2000
MAX_ASK_TOKENS = 200
DEFAULT_ASK_TOKENS = 160
SYSTEM = (
    "You explain an LLM server's state to its operator from the facts given. Quote the "
    "exact numbers you rely on, with their units. Two or three short sentences."
)
# One worked example: a small model copies its form (figures quoted) far more
# reliably than it follows an instruction to.
EXAMPLE = (
    "Facts:\n- Queue: 5 requests waiting now; 1 running on 1 slots.\n"
    "- Throughput: 40.0 tokens/s now.\n"
    "- Slowest processes: pid 4 'indexer' 6.10 s over 12 requests.\n\n"
    "Question: why is it slow?",
    "It is slow because 5 requests are waiting for 1 slot, at 40.0 tokens/s; "
    "pid 4 'indexer' takes 6.10 s per request.",
)
STOP = ["\n\n"]  # one paragraph
# The model could not answer for a reason that is the system's state, not the question's.
DEGRADED = (ContextOverflow, DeviceError, Overloaded, Timeout, Unavailable)
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def quoted(answer: str, figure: Figure) -> bool:
    """Does `answer` carry `figure` (as written, or rounded: 6.8 for 6.80)?"""
    tolerance = max(0.01, abs(figure.value) * 0.02)
    return any(abs(float(n) - figure.value) <= tolerance for n in _NUMBER.findall(answer))


def with_figures(text: str, key: list[Figure]) -> str:
    """The model's text, then the key figures it did not quote."""
    text = text.strip()
    missing = [f for f in key if not quoted(text, f)]
    if not missing:
        return text
    line = "Figures: " + "; ".join(f.text for f in missing) + "."
    return f"{text}\n{line}" if text else line


def prompt(question: str, facts: Facts) -> list[dict[str, str]]:
    body = "\n".join(f"- {s}" for s in facts.sentences)
    return [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": EXAMPLE[0]},
        {"role": "assistant", "content": EXAMPLE[1]},
        {"role": "user", "content": f"Facts:\n{body}\n\nQuestion: {question}"},
    ]


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def tidy(text: str) -> str:
    """A small model's greedy text, with repeated sentences and a last sentence cut
    off by max_tokens dropped."""
    parts = [p.strip() for p in _SENTENCE_END.split(text.strip()) if p.strip()]
    if len(parts) > 1 and not parts[-1].endswith((".", "!", "?")):
        parts.pop()
    seen: set[str] = set()
    kept = []
    for part in parts:
        if part.lower() not in seen:
            seen.add(part.lower())
            kept.append(part)
    return " ".join(kept)


def _question(a: dict[str, Any]) -> str:
    q = a.get("question")
    if not isinstance(q, str) or not q.strip() or len(q) > MAX_QUESTION_CHARS:
        raise InvalidRequest(
            f"question must be a string of 1..{MAX_QUESTION_CHARS} characters (not blank)",
            param="question",
        )
    return q.strip()


def _max_tokens(a: dict[str, Any]) -> int:
    n = a.get("max_tokens")
    if n is None:
        return DEFAULT_ASK_TOKENS
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_ASK_TOKENS:
        raise InvalidRequest(
            f"max_tokens must be an integer from 1 to {MAX_ASK_TOKENS}", param="max_tokens"
        )
    return n


async def _submit(
    k: Kernel, caller: Caller, model: str, question: str, facts: Facts, max_tokens: int
) -> Request:
    """The request, with every fact if they fit the model's context, else with the
    key figures only (ContextOverflow if even those do not fit)."""
    args = {"model": model, "max_tokens": max_tokens, "temperature": 0, "stop": STOP}
    try:
        return await k.submit(caller, "chat", {**args, "messages": prompt(question, facts)})
    except ContextOverflow:
        brief = Facts(sentences=[f"Key figures: {'; '.join(f.text for f in facts.key)}."])
        return await k.submit(caller, "chat", {**args, "messages": prompt(question, brief)})


async def ask(k: Kernel, caller: Caller, a: dict[str, Any]) -> dict[str, Any]:
    question = _question(a)
    max_tokens = _max_tokens(a)
    model = a.get("model") or k.devices[0].model
    k.device_for(model)  # an unknown model is the caller's error: 404 before anything
    facts = gather(k, caller)
    text, error, usage, pid = "", None, {"prompt_tokens": 0, "completion_tokens": 0}, None
    try:
        req = await _submit(k, caller, model, question, facts, max_tokens)
        pid = req.pid
        try:
            done = await req.outcome()
        except asyncio.CancelledError:
            k.cancel(req)
            raise
        usage = {"prompt_tokens": req.prompt_tokens, "completion_tokens": req.output_tokens}
        if done.error is not None:
            raise done.error
        text = req.text
    except DEGRADED as exc:
        error = exc.message
    answer = with_figures(tidy(text), facts.key)
    if error is not None:
        answer = f"(The model could not answer: {error})\n{answer}"
    usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
    return {
        "object": "answer",
        "question": question,
        "answer": answer,
        "model_text": text,
        "error": error,
        "facts": facts.sentences,
        "data": facts.data,
        "model": model,
        "usage": usage,
        "pid": pid,
    }


async def _sys_ask(k: Kernel, c: Caller, a: dict[str, Any]) -> Any:
    return await ask(k, c, a)


ASK_SYSCALLS = (
    Syscall(
        "sys.ask",
        _sys_ask,
        ALL,
        "ask a question about the system: the model explains the kernel's figures",
    ),
)

"""`customer_service`: answers a customer's question from a knowledge base kept in
storage, citing the entries it used.

The knowledge base is JSON lines at `apps/customer_service/kb.jsonl`, one entry a
line: `{"id", "title", "text", "tags"?: [...]}`. A demo shop's is seeded into the
shared `apps` namespace; a user replaces it for themselves by writing the same
path in their own namespace (`llmos fs put my-kb.jsonl apps/customer_service/kb.jsonl`).

An answer: the entries are ranked by BM25 against the question (title and tags
count twice); those holding enough of the question's information go to the model,
which answers from them (greedy, one paragraph), and are returned as citations. When no
entry is relevant the model is not asked at all: the answer says so and lists the
topics the knowledge base does cover (`grounded: false`). Input: the question as a
string, or `{"question", "k"?}`; none: a greeting with the topics."""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib.resources import files
from typing import Any, ClassVar, TypeGuard

from llmos.api.appkit import App, AppContext, DataError, DataFile
from llmos.apps.textrank import BM25, terms
from llmos.errors import ContextOverflow, InvalidRequest

KB_PATH = "apps/customer_service/kb.jsonl"
MAX_QUESTION_CHARS = 2000
DEFAULT_K = 3  # entries given to the model at most
MAX_K = 5
MIN_COVERAGE = 0.34  # share of the question's IDF mass an entry must hold to be cited
RELATIVE_CUTOFF = 0.5  # ... and a BM25 score at least this share of the best one
ANSWER_TOKENS = 80
MAX_ENTRY_CHARS = 4000  # of an entry's text in the prompt (more is cut) ...
MIN_ENTRY_CHARS = 200  # ... and as far as it is cut for a long question to fit
MAX_TOPICS = 20  # listed in a greeting
SYSTEM = "You are a customer service assistant."
# The entries come back as the assistant's own words, then the question is asked
# again: the small default model answers from them far more often than when they
# sit in a system prompt (tried on SmolLM2-135M: it then invents procedures).
RECALL = "Our FAQ says: {entries}"
ASK = "So what is the answer to my question, in one sentence?"


@dataclass(frozen=True)
class Entry:
    id: str
    title: str
    text: str
    tags: tuple[str, ...]

    def terms(self) -> list[str]:
        emphasised = f"{self.title} {' '.join(self.tags)}"
        return terms(emphasised) * 2 + terms(self.text)


def parse_kb(data: DataFile) -> list[Entry]:
    """Entries of a JSON-lines knowledge base; DataError naming the bad line."""
    entries, seen = [], set()
    where = f"{data.owner}'s {data.path}"
    for n, line in enumerate(data.text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as exc:
            raise DataError(f"{where} line {n} is not JSON: {exc}", data.path) from None
        if not isinstance(row, dict):
            raise DataError(f"{where} line {n}: an entry must be a JSON object", data.path)
        title, text, tags = row.get("title"), row.get("text"), row.get("tags", [])
        entry_id = row.get("id", f"entry-{n}")
        if not (_filled(title) and _filled(text) and _filled(entry_id)):
            raise DataError(
                f"{where} line {n}: id, title and text must be non-empty strings", data.path
            )
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            raise DataError(f"{where} line {n}: tags must be a list of strings", data.path)
        if entry_id in seen:
            raise DataError(f"{where} line {n}: the id {entry_id!r} is used twice", data.path)
        seen.add(entry_id)
        entries.append(Entry(entry_id, title.strip(), text.strip(), tuple(tags)))
    if not entries:
        raise DataError(f"{where} has no entries", data.path)
    return entries


def _filled(value: Any) -> TypeGuard[str]:
    return isinstance(value, str) and bool(value.strip())


class CustomerService(App):
    name = "customer_service"
    description = (
        "Answers customers' questions from a FAQ knowledge base in storage"
        f" ({KB_PATH}), citing the entries used; no input: a greeting and its topics."
    )
    input_schema: ClassVar[dict[str, Any]] = {
        "oneOf": [
            {"type": "string", "minLength": 1, "maxLength": MAX_QUESTION_CHARS},
            {
                "type": "object",
                "required": ["question"],
                "additionalProperties": False,
                "properties": {
                    "question": {"type": "string", "minLength": 1, "maxLength": MAX_QUESTION_CHARS},
                    "k": {"type": "integer", "minimum": 1, "maximum": MAX_K},
                },
            },
        ]
    }
    priority = 24  # interactive: above the default 20
    syscalls = ("llm.chat", "fs.read")
    token_budget = 4096

    def seed(self) -> dict[str, str]:
        return {KB_PATH: files("llmos.apps").joinpath("data/kb.jsonl").read_text("utf-8")}

    async def _kb(self, ctx: AppContext) -> tuple[DataFile, list[Entry]]:
        data = await ctx.read_data(KB_PATH)
        if data is None:
            raise DataError(
                f"no knowledge base: write {KB_PATH} (JSON lines of id, title, text)", KB_PATH
            )
        return data, parse_kb(data)

    async def default(self, ctx: AppContext) -> Any:
        data, entries = await self._kb(ctx)
        topics = [e.title for e in entries[:MAX_TOPICS]]
        return {
            "answer": "Hello! I can help you with: "
            + "; ".join(topics)
            + ". What would you like to know?",
            "topics": topics,
            "citations": [],
            "grounded": False,
            "knowledge_base": data.source(),
        }

    async def run(self, ctx: AppContext, input: Any) -> Any:
        question = input if isinstance(input, str) else input["question"]
        k = DEFAULT_K if isinstance(input, str) else int(input.get("k", DEFAULT_K))
        data, entries = await self._kb(ctx)
        cited = retrieve(entries, question, k)
        if not cited:
            topics = "; ".join(e.title for e in entries[:MAX_TOPICS])
            return {
                "answer": "Sorry, I do not know: nothing in my knowledge base answers that."
                f" I can help with: {topics}.",
                "citations": [],
                "grounded": False,
                "knowledge_base": data.source(),
            }
        answer, cited = await _answer(ctx, question, cited)
        answered_by = "model"
        if not _uses(answer, cited):  # a silent or wandering model: the best entry itself
            answer, answered_by = cited[0][0].text, "knowledge_base"
        return {
            "answer": answer,
            "answered_by": answered_by,
            "citations": [{"id": e.id, "title": e.title, "score": s} for e, s in cited],
            "grounded": True,
            "knowledge_base": data.source(),
        }


def _uses(answer: str, cited: list[tuple[Entry, float]], least: int = 2) -> bool:
    """Grounding check: the answer says at least `least` words of the cited entries."""
    given = set(terms(" ".join(f"{e.title} {e.text}" for e, _ in cited)))
    return len(set(terms(answer)) & given) >= least


async def _answer(
    ctx: AppContext, question: str, cited: list[tuple[Entry, float]]
) -> tuple[str, list[tuple[Entry, float]]]:
    """The model's answer from the cited entries, and the entries it was given. While
    the prompt does not fit the model's context the weakest entry is dropped; the
    last one left is cut (its beginning kept) down to MIN_ENTRY_CHARS."""
    cut = MAX_ENTRY_CHARS
    while True:
        context = "\n\n".join(f"{e.title}: {e.text[:cut]}" for e, _ in cited)
        messages = [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": question},
            {"role": "assistant", "content": RECALL.format(entries=context)},
            {"role": "user", "content": ASK},
        ]
        try:
            answer = await ctx.chat(messages, max_tokens=ANSWER_TOKENS, stop=["\n\n"])
        except ContextOverflow:
            if len(cited) > 1:
                cited = cited[:-1]
                continue
            cut = min(cut, len(cited[0][0].text)) // 2
            if cut < MIN_ENTRY_CHARS:
                raise InvalidRequest(
                    f"the question does not fit the model's context of {ctx.context_length}"
                    " tokens with an entry: ask a shorter question",
                    param="input",
                ) from None
            continue
        return answer.strip(), cited


def retrieve(entries: list[Entry], question: str, k: int) -> list[tuple[Entry, float]]:
    """The entries relevant to `question`, best first, each with its BM25 score."""
    query = terms(question)
    if not query:
        return []
    index = BM25([e.terms() for e in entries])
    scored = [
        (round(index.score(query, i), 4), i)
        for i in range(len(entries))
        if index.coverage(query, i) >= MIN_COVERAGE
    ]
    scored.sort(key=lambda si: (-si[0], si[1]))
    if not scored or scored[0][0] <= 0:
        return []
    best = scored[0][0]
    return [(entries[i], s) for s, i in scored[:k] if s >= RELATIVE_CUTOFF * best]

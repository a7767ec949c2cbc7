"""`summarize`: the model's summary of a text; a long one is map-reduced.

Input: the text as a string, or `{"text", "max_words"?}`. The text is cut into
chunks that fit the model's window (at paragraph, then sentence, then word
boundaries); each chunk is summarized (map), the partial summaries are joined and
summarized again (reduce) until one is left. The chunk size starts as a guess from
the window (CHARS_PER_TOKEN) and is halved while the engine finds the first chunk
too long (ContextOverflow: its tokenizer counted more), so any tokenizer works; a
later chunk that still overflows is split in two.
The summary is cut to `max_words` words, so it is never longer than asked."""

from __future__ import annotations

import asyncio
import re
from typing import Any, ClassVar

from llmos.api.appkit import App, AppContext
from llmos.errors import ContextOverflow, InvalidRequest

MAX_TEXT_CHARS = 200_000
DEFAULT_WORDS = 60
MIN_WORDS, MAX_WORDS = 10, 400
CHARS_PER_TOKEN = 3  # a first guess for English; an overflow halves the chunk
PROMPT_TOKENS = 64  # the instruction and the chat template, reserved
MIN_CHUNK_CHARS = 64  # a chunk this short that still overflows is an error
MAX_ROUNDS = 4  # reduce rounds; then the partial summaries are cut to size
MAX_CHUNKS = 64  # pieces one round may have: more means the window is far too small
INSTRUCTION = "Summarize the following text in at most {words} words.\n\n{text}"
_BOUNDARIES = (re.compile(r"\n\s*\n"), re.compile(r"(?<=[.!?])\s+"), re.compile(r"\s+"))


class Summarize(App):
    name = "summarize"
    description = (
        "Summarizes a text with the model (long texts map-reduced in chunks that fit"
        " its context); input: the text, or {text, max_words}."
    )
    input_schema: ClassVar[dict[str, Any]] = {
        "oneOf": [
            {"type": "string", "minLength": 1, "maxLength": MAX_TEXT_CHARS},
            {
                "type": "object",
                "required": ["text"],
                "additionalProperties": False,
                "properties": {
                    "text": {"type": "string", "minLength": 1, "maxLength": MAX_TEXT_CHARS},
                    "max_words": {"type": "integer", "minimum": MIN_WORDS, "maximum": MAX_WORDS},
                },
            },
        ]
    }
    priority = 16  # throughput work: below interactive apps
    syscalls = ("llm.chat",)
    needs_input = True

    async def run(self, ctx: AppContext, input: Any) -> Any:
        text = input if isinstance(input, str) else input["text"]
        words = DEFAULT_WORDS if isinstance(input, str) else input.get("max_words", DEFAULT_WORDS)
        if not text.strip():
            raise InvalidRequest("input: the text is blank", param="input")
        answer_tokens = min(2 * words + 16, ctx.context_length // 2)
        room = ctx.context_length - answer_tokens - PROMPT_TOKENS
        size = max(MIN_CHUNK_CHARS, room * CHARS_PER_TOKEN)
        current, chunks, rounds = text, 0, 0
        while True:
            rounds += 1
            partial, size = await _map(ctx, current, size, words, answer_tokens)
            chunks += len(partial)
            current = "\n\n".join(s for s in partial if s)
            if len(partial) <= 1 or rounds == MAX_ROUNDS:
                break
        summary = " ".join(current.split()[:words])
        return {
            "summary": summary,
            "words_in": len(text.split()),
            "words_out": len(summary.split()),
            "chunks": chunks,
            "rounds": rounds,
        }


async def _map(
    ctx: AppContext, text: str, size: int, words: int, tokens: int
) -> tuple[list[str], int]:
    """A summary of each piece of `text`, and the piece size that fit: the first
    piece alone finds it (halving), then the others run at once."""
    while True:
        pieces = split(text, size)
        if len(pieces) > MAX_CHUNKS:
            raise InvalidRequest(
                f"the text is too long for the model's context of {ctx.context_length}"
                f" tokens: it would take {len(pieces)} chunks, at most {MAX_CHUNKS}",
                param="input",
            )
        try:
            first = await _summary(ctx, pieces[0], words, tokens)
            break
        except ContextOverflow:
            if size <= MIN_CHUNK_CHARS:
                raise InvalidRequest(
                    f"a summary of {words} words does not fit the model's context of"
                    f" {ctx.context_length} tokens: ask for fewer words",
                    param="input.max_words",
                ) from None
            size = max(MIN_CHUNK_CHARS, size // 2)
    rest = await asyncio.gather(*(_fitted(ctx, p, words, tokens) for p in pieces[1:]))
    return [first, *rest], size


async def _summary(ctx: AppContext, text: str, words: int, tokens: int) -> str:
    prompt = [{"role": "user", "content": INSTRUCTION.format(words=words, text=text)}]
    return (await ctx.chat(prompt, max_tokens=tokens)).strip()


async def _fitted(ctx: AppContext, text: str, words: int, tokens: int) -> str:
    """As `_summary`; a piece still too long (its tokenizer counted more) is halved."""
    try:
        return await _summary(ctx, text, words, tokens)
    except ContextOverflow:
        if len(text) <= MIN_CHUNK_CHARS:
            raise
    halves = split(text, (len(text) + 1) // 2)
    if len(halves) == 1:  # one unbreakable run of characters: cut it
        halves = [text[: len(text) // 2], text[len(text) // 2 :]]
    parts = await asyncio.gather(*(_fitted(ctx, h, words, tokens) for h in halves))
    return " ".join(p for p in parts if p)


def split(text: str, size: int) -> list[str]:
    """`text` in pieces of at most `size` characters, cut at the widest boundary
    that works: paragraphs, else sentences, else words, else anywhere."""
    text = text.strip()
    if len(text) <= size:
        return [text] if text else []
    for boundary in _BOUNDARIES:
        parts = [p for p in boundary.split(text) if p.strip()]
        if len(parts) > 1:
            joiner = "\n\n" if boundary is _BOUNDARIES[0] else " "
            return [c for part in _pack(parts, size, joiner) for c in split(part, size)]
    return [text[i : i + size] for i in range(0, len(text), size)]


def _pack(parts: list[str], size: int, joiner: str) -> list[str]:
    """Consecutive parts joined while they fit in `size`."""
    out: list[str] = []
    for part in parts:
        if out and len(out[-1]) + len(joiner) + len(part) <= size:
            out[-1] += joiner + part
        else:
            out.append(part)
    return out

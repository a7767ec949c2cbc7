"""The memory benchmark's workload and recall measurement (bench/_memwork.py), on a fake
whitespace tokenizer and BM25 alone: no model, no embedder, seconds."""

from __future__ import annotations

import asyncio
import random
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

from _memwork import (
    FACTS,
    Conversation,
    Planted,
    _values,
    content_words,
    make_conversation,
    make_conversations,
    recent_only,
    replay,
    share,
)
from llmos.kernel.conversation import Turn


class WordTokens:
    """A device as Conversations sees it: one token per whitespace-separated word."""

    def __init__(self, context_length: int = 256) -> None:
        self.context_length = context_length

    async def tokenize(self, text: str) -> list[int]:
        return list(range(len(text.split())))

    async def render_chat(self, messages: list[dict[str, Any]]) -> str:
        return "\n".join(f"<|{m['role']}|> {m['content']} <|end|>" for m in messages)


def test_conversations_are_long_plant_facts_and_are_reproducible() -> None:
    convs = make_conversations(6, seed=3, pairs=110)
    assert [c.users for c in convs] == [c.users for c in make_conversations(6, 3, 110)]
    assert [c.planted for c in convs] == [c.planted for c in make_conversations(6, 3, 110)]
    assert convs[0].users != make_conversation(0, seed=4).users
    assert len({u for c in convs for u in c.users}) > 0.95 * sum(len(c.users) for c in convs)
    for c in convs:
        assert c.turns >= 200 and len(c.replies) == len(c.users)
        assert 3 <= len(c.planted) <= 5
        assert len({p.fact_id for p in c.planted}) == len(c.planted)
        for p in c.planted:
            assert p.fact.lower() in c.users[p.user_index].lower()
            assert p.turn_text == c.users[p.user_index]
            assert p.user_index < 0.9 * len(c.users)  # never in the last stretch
        fillers = [u for i, u in enumerate(c.users) if i not in {p.user_index for p in c.planted}]
        assert all(15 <= len(u.split()) <= 82 for u in fillers)


def test_questions_are_paraphrases() -> None:
    planted = [p for c in make_conversations(40, seed=1) for p in c.planted]
    for p in planted:
        assert p.question.rstrip().endswith("?")
        assert p.fact.lower() not in p.question.lower()
    # most questions share no content word with their fact but the key entity ...
    assert share([{"x": not p.shared} for p in planted], "x") >= 0.5
    # ... and at least 40% share none at all
    assert share([{"x": not p.shared_any} for p in planted], "x") >= 0.4
    rng = random.Random(5)
    for tpl in FACTS:  # every paraphrase template is one, whatever fills it
        for q in tpl["questions"]:
            for _ in range(5):
                values = _values(rng)
                allowed = content_words(" ".join(a.format(**values) for a in tpl.get("allow", [])))
                common = content_words(tpl["fact"].format(**values)) & content_words(
                    q.format(**values)
                )
                assert common <= allowed, (tpl["id"], q, common)


def test_recent_only_takes_the_newest_turns_that_fit() -> None:
    turns = [Turn(i, "user", "x", 10, None) for i in range(10)]
    assert recent_only(turns, 48) == [9, 8, 7]  # 16 tokens each with the template
    assert recent_only(turns, 10) == []


def test_replay_scores_a_paged_out_fact_recalled_by_its_words() -> None:
    """A tiny conversation: the fact leaves the 120-token window and comes back."""
    chat = [f"Filler turn {i} about the weather and the garden and some tea." for i in range(30)]
    chat[3] = "The wifi password at the cabin is heron-42."
    facts = [
        Planted("wifi", chat[3], chat[3], "What is the wifi password at the cabin?", 3, [], []),
        Planted("nothing", "", "", "Who won the football match?", 3, [], []),
    ]
    conv = Conversation(0, chat, ["Okay."] * 30, facts)
    dev = WordTokens()
    rows = asyncio.run(replay(conv, dev, budget=120, embedder=None, max_tokens=8))
    assert dev.context_length == 128
    wifi, other = rows
    assert wifi["evidence_turn"] == 6 and wifi["turns_back"] == 60 - 6
    assert wifi["recalled"] and wifi["in_recalled"] and not wifi["in_window"]
    assert not wifi["recent_only"] and wifi["search_rank"] == 0
    assert other["turns_back"] == 62 - 6 and not other["recent_only"]
    assert other["search_rank"] is None and not other["recalled"]
    # a budget that holds everything: the fact is in the window, for both measures
    rows = asyncio.run(replay(conv, WordTokens(), budget=2000, embedder=None, max_tokens=8))
    assert all(r["in_window"] and r["recalled"] and r["recent_only"] for r in rows)


def test_the_tuned_copy_with_every_switch_off_is_the_original() -> None:
    import memory as bench

    chat = [f"Filler turn {i} about the weather and the garden and some tea." for i in range(30)]
    chat[3] = "The wifi password at the cabin is heron-42."
    question = "What is the wifi password at the cabin?"
    conv = Conversation(
        0, chat, ["Okay."] * 30, [Planted("wifi", chat[3], chat[3], question, 3, [], [])]
    )
    original = asyncio.run(replay(conv, WordTokens(), 120, None, 8))
    store, conv_cls = bench.variant(**bench.VARIANTS["copy"])
    copy = asyncio.run(replay(conv, WordTokens(), 120, None, 8, conv_cls, store))
    assert copy == original
    store, conv_cls = bench.variant(**bench.VARIANTS["tuned"])
    (tuned,) = asyncio.run(replay(conv, WordTokens(), 120, None, 8, conv_cls, store))
    assert tuned["recalled"] and tuned["search_rank"] == 0

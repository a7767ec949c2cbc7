"""Virtual context: kernel-kept conversations larger than the context window.

Each call assembles the prompt from (1) a core block — the process's system prompt
and pinned facts, (2) the most recent turns that fit, and (3) the long-term
memories most relevant to the new turn, within `context length - max_tokens`.
Turns that leave the window are paged out to long-term memory (never dropped) and
paged back in when a later turn is about them. The window start moves forward in
steps (down to `LOW_WATER` of its budget), so the prompt's prefix stays the same for
several turns and the engine's prefix cache keeps serving it.

`view(pid)` is exactly what the last prompt held: which turns, which memories, and
the token count of each part.

Turn texts, the core block and the saved view (it quotes recalled memories) are
sealed at rest with the memory store's key ring (crypto.py)."""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass
from typing import Any

from llmos.devices.base import Device
from llmos.errors import InvalidRequest
from llmos.kernel.crypto import Sealed
from llmos.kernel.memindex import Scope
from llmos.kernel.memory import MemoryStore

SCHEMA = """
CREATE TABLE IF NOT EXISTS conv_core (
    pid INTEGER PRIMARY KEY,
    system TEXT NOT NULL DEFAULT '',
    pinned TEXT NOT NULL DEFAULT '[]',
    window_start INTEGER NOT NULL DEFAULT 0,
    view TEXT
);
CREATE TABLE IF NOT EXISTS conv_turns (
    pid INTEGER NOT NULL,
    idx INTEGER NOT NULL,
    role TEXT NOT NULL,
    content TEXT NOT NULL,
    tokens INTEGER NOT NULL,
    memory_id INTEGER,
    created_at REAL NOT NULL,
    PRIMARY KEY (pid, idx)
);
"""

TURN = Sealed("conv_turns", "content", ("pid", "idx"))
SYSTEM = Sealed("conv_core", "system", ("pid",))
PINNED = Sealed("conv_core", "pinned", ("pid",))
VIEW = Sealed("conv_core", "view", ("pid",))

PER_MESSAGE = 6  # template tokens around each message (ChatML: <|im_start|>role\n … <|im_end|>\n)
RECALL_SHARE = 0.25  # of the budget kept for recalled memories
LOW_WATER = 0.6  # when the window overflows, shrink it to this share of its budget
MAX_PINNED = 32
RECALL_K = 16


@dataclass
class Turn:
    idx: int
    role: str
    content: str
    tokens: int
    memory_id: int | None


class Conversations:
    def __init__(self, db: sqlite3.Connection, memory: MemoryStore) -> None:
        self.db = db
        self.memory = memory
        self.keys = memory.keys
        db.executescript(SCHEMA)
        self.keys.adopt([TURN, SYSTEM, PINNED, VIEW], lambda: None)

    # -- the core block ------------------------------------------------------------
    def core(self, pid: int) -> dict[str, Any]:
        row = self.db.execute("SELECT * FROM conv_core WHERE pid = ?", (pid,)).fetchone()
        if row is None:
            return {"system": "", "pinned": [], "window_start": 0}
        return {
            "system": self.keys.open_text(SYSTEM, row["system"], pid),
            "pinned": json.loads(self.keys.open_text(PINNED, row["pinned"], pid)),
            "window_start": row["window_start"],
        }

    def set_core(self, pid: int, system: str | None, pinned: list[str] | None) -> dict[str, Any]:
        current = self.core(pid)
        if system is not None:
            if not isinstance(system, str) or len(system) > 8192:
                raise InvalidRequest(
                    "system must be a string of at most 8192 chars", param="system"
                )
            current["system"] = system
        if pinned is not None:
            if not isinstance(pinned, list) or not all(isinstance(p, str) for p in pinned):
                raise InvalidRequest("pinned must be a list of strings", param="pinned")
            if len(pinned) > MAX_PINNED:
                raise InvalidRequest(f"at most {MAX_PINNED} pinned facts", param="pinned")
            current["pinned"] = pinned
        self.db.execute(
            "INSERT INTO conv_core (pid, system, pinned, window_start) VALUES (?,?,?,?)"
            " ON CONFLICT(pid) DO UPDATE SET system = excluded.system, pinned = excluded.pinned",
            (
                pid,
                self.keys.seal_text(SYSTEM, current["system"], pid),
                self.keys.seal_text(PINNED, json.dumps(current["pinned"]), pid),
                current["window_start"],
            ),
        )
        return self.core(pid)

    def _ensure_core(self, pid: int) -> None:
        """A core row for `pid`, empty if new (sealed too: no value is left in clear)."""
        self.db.execute(
            "INSERT OR IGNORE INTO conv_core (pid, system, pinned) VALUES (?, ?, ?)",
            (pid, self.keys.seal_text(SYSTEM, "", pid), self.keys.seal_text(PINNED, "[]", pid)),
        )

    def _core_text(self, core: dict[str, Any]) -> str:
        parts = [core["system"]] if core["system"] else []
        if core["pinned"]:
            parts.append("Facts to keep in mind:\n" + "\n".join(f"- {p}" for p in core["pinned"]))
        return "\n\n".join(parts)

    # -- turns ---------------------------------------------------------------------
    def turns(self, pid: int, since: int = 0) -> list[Turn]:
        rows = self.db.execute(
            "SELECT idx, role, content, tokens, memory_id FROM conv_turns"
            " WHERE pid = ? AND idx >= ? ORDER BY idx",
            (pid, since),
        )
        return [
            Turn(r[0], r[1], self.keys.open_text(TURN, r[2], pid, r[0]), r[3], r[4]) for r in rows
        ]

    def history(self, pid: int) -> list[dict[str, Any]]:
        return [t.__dict__ for t in self.turns(pid)]

    def append(self, pid: int, role: str, content: str, tokens: int) -> Turn:
        row = self.db.execute("SELECT max(idx) FROM conv_turns WHERE pid = ?", (pid,)).fetchone()
        idx = (row[0] + 1) if row[0] is not None else 0
        self.db.execute(
            "INSERT INTO conv_turns (pid, idx, role, content, tokens, created_at)"
            " VALUES (?,?,?,?,?,?)",
            (pid, idx, role, self.keys.seal_text(TURN, content, pid, idx), tokens, time.time()),
        )
        return Turn(idx, role, content, tokens, None)

    def _page_out(self, owner: str, pid: int, turns: list[Turn]) -> None:
        """Write turns leaving the window to long-term memory (once each)."""
        for t in turns:
            if t.memory_id is not None:
                continue
            mem = self.memory.add(
                owner,
                pid,
                f"{t.role}: {t.content}",
                tags=["conversation"],
                meta={"turn": t.idx, "role": t.role},
            )
            t.memory_id = mem["id"]
            self.db.execute(
                "UPDATE conv_turns SET memory_id = ? WHERE pid = ? AND idx = ?",
                (t.memory_id, pid, t.idx),
            )

    # -- assembling a prompt ---------------------------------------------------------
    async def assemble(
        self, dev: Device, owner: str, pid: int, content: str, max_tokens: int
    ) -> tuple[list[int], dict[str, Any]]:
        """Store the new user turn; return the prompt's token ids and the view."""
        budget = dev.context_length - max_tokens
        core = self.core(pid)
        core_text = self._core_text(core)
        core_tokens = (len(await dev.tokenize(core_text)) if core_text else 0) + PER_MESSAGE
        new_tokens = len(await dev.tokenize(content)) + PER_MESSAGE
        if core_tokens + new_tokens + 16 > budget:
            raise InvalidRequest(
                f"the core block ({core_tokens} tokens) and this message ({new_tokens}) do not "
                f"fit in the {budget} tokens left after max_tokens",
                param="content",
            )
        new = self.append(pid, "user", content, new_tokens - PER_MESSAGE)
        recall_budget = int(budget * RECALL_SHARE)
        window_budget = budget - core_tokens - new_tokens - recall_budget
        start = self._slide(owner, pid, core["window_start"], new.idx, window_budget)
        recalled, recall_tokens = await self._recall(dev, owner, pid, content, start, recall_budget)
        while True:  # estimates were used above: check the real prompt, shrink if needed
            window = [t for t in self.turns(pid, start) if t.idx != new.idx]
            messages = self._messages(core_text, window, recalled, content)
            ids = await dev.tokenize(await dev.render_chat(messages))
            if len(ids) <= budget or not (window or recalled):
                break
            if not window:
                recalled.pop()
                continue
            self._page_out(owner, pid, window[:1])
            start = window[1].idx if len(window) > 1 else new.idx
            self._set_start(pid, start)
        view = {
            "pid": pid,
            "context_length": dev.context_length,
            "max_tokens": max_tokens,
            "budget": budget,
            "window_start": start,
            "parts": [
                {"part": "core", "tokens": core_tokens, "pinned": len(core["pinned"])},
                {
                    "part": "recent_turns",
                    "turns": [t.idx for t in window],
                    "tokens": sum(t.tokens + PER_MESSAGE for t in window),
                },
                {
                    "part": "recalled",
                    "memories": [
                        {"id": m["id"], "turn": m["meta"].get("turn"), "text": m["text"]}
                        for m in recalled
                    ],
                    "tokens": recall_tokens,
                },
                {"part": "new_turn", "turn": new.idx, "tokens": new_tokens},
            ],
            "paged_out_turns": start,
            "prompt_tokens": len(ids),
        }
        return ids, view

    @staticmethod
    def _messages(
        core_text: str, window: list[Turn], recalled: list[dict[str, Any]], content: str
    ) -> list[dict[str, str]]:
        messages = [{"role": "system", "content": core_text}] if core_text else []
        messages += [{"role": t.role, "content": t.content} for t in window]
        if recalled:
            lines = "\n".join(f"- {m['text']}" for m in recalled)
            messages.append(
                {"role": "system", "content": f"Relevant earlier conversation:\n{lines}"}
            )
        messages.append({"role": "user", "content": content})
        return messages

    def _set_start(self, pid: int, start: int) -> None:
        self._ensure_core(pid)
        self.db.execute("UPDATE conv_core SET window_start = ? WHERE pid = ?", (start, pid))

    def _slide(self, owner: str, pid: int, start: int, new_idx: int, budget: int) -> int:
        """Move the window start forward if the window overflows; page out what leaves."""
        window = [t for t in self.turns(pid, start) if t.idx != new_idx]
        used = sum(t.tokens + PER_MESSAGE for t in window)
        if used <= budget:
            return start
        target = budget * LOW_WATER
        leaving = []
        while window and used > target:
            t = window.pop(0)
            used -= t.tokens + PER_MESSAGE
            leaving.append(t)
        self._page_out(owner, pid, leaving)
        start = window[0].idx if window else new_idx
        self._set_start(pid, start)
        return start

    async def _recall(
        self, dev: Device, owner: str, pid: int, query: str, start: int, budget: int
    ) -> tuple[list[dict[str, Any]], int]:
        """Paged-out turns (and the process's memories) most relevant to `query`."""
        if start == 0 and not self.memory.listing(Scope(owner, pid, shared=False), limit=1):
            return [], 0
        chosen, used = [], 0
        for m in self.memory.search(Scope(owner, pid, shared=False), query, RECALL_K):
            turn = m["meta"].get("turn")
            if isinstance(turn, int) and turn >= start:
                continue  # still in the window
            cost = len(await dev.tokenize(m["text"])) + 2  # "- " and the newline
            if used + cost > budget:
                continue
            chosen.append(m)
            used += cost
        return chosen, used + (PER_MESSAGE + 6 if chosen else 0)  # the message and its header

    def save_view(self, pid: int, view: dict[str, Any]) -> None:
        self._ensure_core(pid)
        sealed = self.keys.seal_text(VIEW, json.dumps(view), pid)
        self.db.execute("UPDATE conv_core SET view = ? WHERE pid = ?", (sealed, pid))

    def view(self, pid: int) -> dict[str, Any] | None:
        row = self.db.execute("SELECT view FROM conv_core WHERE pid = ?", (pid,)).fetchone()
        if row is None or row[0] is None:
            return None
        view: dict[str, Any] = json.loads(self.keys.open_text(VIEW, row[0], pid))
        return view

    def record_reply(self, pid: int, text: str, tokens: int) -> None:
        self.append(pid, "assistant", text, tokens)

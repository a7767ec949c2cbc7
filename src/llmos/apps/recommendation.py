"""`recommendation_system` (alias `recommendation`): ranks catalogue items for a
user from what they liked, each with a reason.

The catalogue is JSON at `apps/recommendation/catalogue.json`: `{"items": [{"id",
"title", "tags": [...], "description"?, "author"?, "popularity"?: number}]}` (or
the list alone). A demo bookshop's is seeded into the shared `apps` namespace; a
user replaces it for themselves by writing the same path in their own namespace.

Input `{"user"?, "history"?: [...], "k"?}`. A history entry is an item's id or
title (an item they liked: it is never recommended back) or any other text, taken
as an interest ("space opera"). If `user` is given and the caller keeps a list of
that user's liked items at `apps/recommendation/users/<user>.json`, it joins the
history. Ranking, deterministic: TF-IDF cosine similarity to the best-matching
history entry (tags count three times), blended with the item's popularity, then
picked greedily with maximal marginal relevance so the list is not ten copies of
one book. No history (or no input): the most popular items."""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib.resources import files
from typing import Any, ClassVar

from llmos.api.appkit import App, AppContext, DataError, DataFile
from llmos.apps.textrank import cosine, normalize, terms, tfidf_vectors
from llmos.errors import NotFound

CATALOGUE_PATH = "apps/recommendation/catalogue.json"
PROFILE_PATH = "apps/recommendation/users/{user}.json"
DEFAULT_K = 5
MAX_K = 50
MAX_HISTORY = 200
TAG_WEIGHT = 2  # a tag counts as this many words of description ...
GENRE_WEIGHT = 4  # ... and the first tag (the genre) as this many
SIMILARITY_WEIGHT = 0.8  # score = this x similarity + the rest x popularity (0..1)
DIVERSITY = 0.3  # MMR: how much similarity to items already picked counts against one
MIN_SIMILARITY = 0.05  # below this an item is recommended for its popularity alone


@dataclass(frozen=True)
class Item:
    id: str
    title: str
    tags: tuple[str, ...]
    description: str
    popularity: float

    def terms(self) -> list[str]:
        tagged = [f"tag:{t.casefold()}" for t in self.tags]
        return (
            tagged[:1] * GENRE_WEIGHT
            + tagged[1:] * TAG_WEIGHT
            + terms(f"{self.title} {self.description}")
        )

    def public(self, score: float, reason: str) -> dict[str, Any]:
        return {
            "id": self.id,
            "title": self.title,
            "tags": list(self.tags),
            "score": round(score, 4),
            "reason": reason,
        }


def parse_catalogue(data: DataFile) -> list[Item]:
    where = f"{data.owner}'s {data.path}"
    try:
        doc = json.loads(data.text)
    except ValueError as exc:
        raise DataError(f"{where} is not JSON: {exc}", data.path) from None
    rows = doc.get("items") if isinstance(doc, dict) else doc
    if not isinstance(rows, list) or not rows:
        raise DataError(f'{where} must be {{"items": [...]}} with at least one item', data.path)
    items, seen = [], set()
    for n, row in enumerate(rows):
        bad = f"{where}: items[{n}]"
        if not isinstance(row, dict):
            raise DataError(f"{bad} must be an object", data.path)
        item_id, title = row.get("id"), row.get("title")
        tags, desc, pop = row.get("tags", []), row.get("description", ""), row.get("popularity", 0)
        if not (isinstance(item_id, str) and item_id and isinstance(title, str) and title):
            raise DataError(f"{bad}: id and title must be non-empty strings", data.path)
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            raise DataError(f"{bad}: tags must be a list of strings", data.path)
        if not isinstance(desc, str):
            raise DataError(f"{bad}: description must be a string", data.path)
        if isinstance(pop, bool) or not isinstance(pop, int | float):
            raise DataError(f"{bad}: popularity must be a number", data.path)
        if item_id in seen:
            raise DataError(f"{bad}: the id {item_id!r} is used twice", data.path)
        seen.add(item_id)
        items.append(Item(item_id, title, tuple(tags), desc, float(pop)))
    return items


class Recommendation(App):
    name = "recommendation_system"
    aliases = ("recommendation",)
    description = (
        "Ranks catalogue items (from storage, "
        f"{CATALOGUE_PATH}) for a user's history, each with a reason; no input: the"
        " most popular items."
    )
    input_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "user": {"type": "string", "pattern": "^[A-Za-z0-9_.@-]{1,64}$"},
            "history": {
                "type": "array",
                "maxItems": MAX_HISTORY,
                "items": {"type": "string", "minLength": 1, "maxLength": 200},
            },
            "k": {"type": "integer", "minimum": 1, "maximum": MAX_K},
        },
    }
    priority = 22
    syscalls = ("fs.read",)

    def seed(self) -> dict[str, str]:
        path = files("llmos.apps").joinpath("data/catalogue.json")
        return {CATALOGUE_PATH: path.read_text("utf-8")}

    async def default(self, ctx: AppContext) -> Any:
        return await self.run(ctx, {})

    async def run(self, ctx: AppContext, input: Any) -> Any:
        data = await ctx.read_data(CATALOGUE_PATH)
        if data is None:
            raise DataError(f"no catalogue: write {CATALOGUE_PATH}", CATALOGUE_PATH)
        items = parse_catalogue(data)
        history = list(input.get("history", []))
        user = input.get("user")
        if user is not None:
            history += await _profile(ctx, user)
        k = int(input.get("k", DEFAULT_K))
        ranked, strategy = rank(items, history, k)
        return {
            "user": user,
            "strategy": strategy,
            "items": ranked,
            "catalogue": data.source(),
        }


async def _profile(ctx: AppContext, user: str) -> list[str]:
    """The caller's record of what `user` liked, if they keep one (never shared)."""
    path = PROFILE_PATH.format(user=user)
    try:
        info = await ctx.call("fs.read", {"path": path})
    except NotFound:
        return []
    try:
        liked = json.loads(info.get("content") or "")
    except ValueError:
        liked = None
    if not isinstance(liked, list) or not all(isinstance(x, str) for x in liked):
        raise DataError(f"{ctx.owner}'s {path} must be a JSON list of item ids", path)
    return liked


Anchor = tuple[str, dict[str, float], Item | None]  # (reason, vector, the liked item)


def rank(items: list[Item], history: list[str], k: int) -> tuple[list[dict[str, Any]], str]:
    """The top `k` items for `history`, with reasons; and the strategy used."""
    by_key = {i.id.casefold(): i for i in items} | {i.title.casefold(): i for i in items}
    liked = [by_key[h.casefold()] for h in history if h.casefold() in by_key]
    interests = [h for h in history if h.casefold() not in by_key]
    seen = {i.id for i in liked}
    top = max((i.popularity for i in items), default=0.0) or 1.0
    pool = sorted((i for i in items if i.id not in seen), key=lambda i: (-i.popularity, i.id))
    if not liked and not interests:
        return [
            i.public(i.popularity / top, f"popular: #{n} in the catalogue")
            for n, i in enumerate(pool[:k], 1)
        ], "popularity"
    vectors = dict(
        zip((i.id for i in items), tfidf_vectors([i.terms() for i in items]), strict=True)
    )
    anchors: list[Anchor] = [
        (f"similar to {i.title!r}, which you liked", vectors[i.id], i) for i in liked
    ]
    for text in interests:
        words = [*terms(text), *[f"tag:{text.casefold()}"] * TAG_WEIGHT]
        anchors.append(
            (f"matches your interest {text!r}", normalize(dict.fromkeys(words, 1.0)), None)
        )
    scored = [_score(item, vectors[item.id], anchors, item.popularity / top) for item in pool]
    picked = _diverse(scored, vectors, k)
    return [item.public(score, why) for score, item, why in picked], "content+popularity"


def _score(
    item: Item, vector: dict[str, float], anchors: list[Anchor], popularity: float
) -> tuple[float, Item, str]:
    """An item's score and reason: its closest anchor, blended with popularity."""
    sims = [(cosine(vector, vec), why, src) for why, vec, src in anchors]
    best, why, source = max(sims, key=lambda s: s[0])
    sim = (best + sum(s for s, _, _ in sims) / len(sims)) / 2  # the closest, and all
    if best < MIN_SIMILARITY:
        why = "popular with readers (nothing in your history is close)"
    elif source is not None and set(source.tags) & set(item.tags):
        why += f"; shared tags: {', '.join(sorted(set(source.tags) & set(item.tags)))}"
    return SIMILARITY_WEIGHT * sim + (1 - SIMILARITY_WEIGHT) * popularity, item, why


def _diverse(
    scored: list[tuple[float, Item, str]], vectors: dict[str, dict[str, float]], k: int
) -> list[tuple[float, Item, str]]:
    """Pick `k` greedily by maximal marginal relevance (ties by id)."""
    left, picked = list(scored), list[tuple[float, Item, str]]()
    while left and len(picked) < k:

        def mmr(entry: tuple[float, Item, str]) -> tuple[float, str]:
            near = (cosine(vectors[entry[1].id], vectors[p.id]) for _, p, _ in picked)
            return (-(entry[0] - DIVERSITY * max(near, default=0.0)), entry[1].id)

        best = min(left, key=mmr)
        left.remove(best)
        picked.append(best)
    return picked

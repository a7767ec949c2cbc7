"""The memory manager on its own: does a fact said long ago come back when asked about?

No model generates anything; the real SmolLM2 tokenizer counts the tokens.

1. Evidence recall. Synthetic conversations of 220 turns (chit-chat of 20-80 words,
   short assistant replies) with 3-5 facts planted at random depths; after the last
   turn, one question per fact, most of them paraphrased (no content word shared with
   the fact except the key entity). Each (conversation, budget) is replayed through a
   fresh MemoryStore + Conversations (new SQLite DB); then the questions are asked in
   turn. A question scores if the fact's turn is in the assembled context (the recent
   window or the recalled memories). Budgets 512, 1,024, 2,048 tokens (context length
   minus max_tokens 64). Compared with (b) the most recent turns that fit the budget
   and (c) the same machinery with BM25 alone (no dense vectors). `tuned` is a copy of
   the retrieval in this file with the changes the findings point to (src/ untouched).
2. Search latency: `MemoryStore.search` p50/p95 over 200 question-like queries at 1k,
   10k and 100k memories in one owner's scope (bulk-inserted with add_many, 5,000 a
   batch), and insert throughput.

    python bench/memory.py            # 30 conversations, up to 100k memories (~6 min)
    python bench/memory.py --quick    # 8 conversations, up to 10k memories (~1.5 min)
    python bench/memory.py --variants tuned,no-cut,rare-bm25,query-terms,k16 \\
        --budgets 1024 --no-bm25 --no-latency      # what each change is worth

The last line is `RESULT {json}`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _memwork import (
    CachedTokens,
    corpus_query,
    corpus_sentence,
    make_conversations,
    open_db,
    replay,
    share,
)
from llmos.devices import LlamaCppDevice, default_model_path
from llmos.devices.embeddings import WordLlamaEmbedder
from llmos.kernel.conversation import PER_MESSAGE, RECALL_K, Conversations
from llmos.kernel.crypto import KeyRing
from llmos.kernel.memory import RRF_K, MemoryStore, Scope, fts_query, query_terms

GOALS = {"recall_1024": 0.90, "recall_2048": 0.95, "search_p95_ms_100000": 20.0}
MAX_TOKENS = 64


# -- a tuned copy of the retrieval (to measure the knobs; src/ is not changed) -------------
class TunedMemoryStore(MemoryStore):
    """`MemoryStore.search` with up to three changes, each switchable:

    rel_cut:     dense hits are cut below `REL_CUT` x the best cosine, not below the
                 absolute MIN_SIMILARITY 0.2 (WordLlama gives right paraphrases 0.1-0.2);
    dense_terms: the dense query is the question without its stopwords;
    rare_bm25:   BM25 ranks only terms found in at most 2% of the memories (the original
                 keeps every term below 2,000 memories, so common words like "kitchen"
                 or "work" fill the BM25 list, and RRF's flat 1/(60+rank) lets a memory
                 found by both lists at middling ranks outvote the dense top hit)."""

    REL_CUT = 0.5
    RARE_SHARE = 0.02
    rel_cut = True
    dense_terms = True
    rare_bm25 = True

    def search(
        self, scope: Scope, query: str, k: int = 5, tag: str | None = None
    ) -> list[dict[str, Any]]:
        pool = max(4 * k, 20)
        ranked: dict[int, float] = {}
        terms = query_terms(query)
        bm25 = self._rare(scope, terms, pool) if self.rare_bm25 else self._bm25(scope, query, pool)
        for rank, mid in enumerate(bm25):
            ranked[mid] = ranked.get(mid, 0.0) + 1.0 / (RRF_K + rank + 1)
        if self.embedder is not None:
            text = " ".join(terms) if self.dense_terms and terms else query
            vec = self.embedder.embed([text])[0]
            for rank, mid in enumerate(self._dense(scope, vec, pool)):
                ranked[mid] = ranked.get(mid, 0.0) + 1.0 / (RRF_K + rank + 1)
        out = []
        for mid, score in sorted(ranked.items(), key=lambda kv: -kv[1]):
            item = self.get(scope, mid)
            if tag is None or tag in item["tags"]:
                out.append({**item, "score": round(score, 6)})
            if len(out) == k:
                break
        return out

    def _dense(self, scope: Scope, query: np.ndarray, k: int) -> list[int]:
        vecs = self._owner_vectors(scope.owner)
        if not vecs.ids:
            return []
        sims = vecs.matrix[: len(vecs.ids)] @ query
        if scope.pid is not None:
            pids = np.asarray(vecs.pids)
            allowed = (pids == scope.pid) | ((pids == -1) & scope.shared)
            sims = np.where(allowed, sims, -np.inf)
        k = min(k, len(vecs.ids))
        best = np.argpartition(-sims, k - 1)[:k]
        best = best[np.argsort(-sims[best])]
        floor = self.REL_CUT * float(sims[best[0]]) if self.rel_cut else 0.2
        return [vecs.ids[i] for i in best if np.isfinite(sims[i]) and sims[i] >= floor]

    def _rare(self, scope: Scope, terms: list[str], k: int) -> list[int]:
        if not terms:
            return []
        marks = ",".join("?" for _ in terms)
        df = {
            r[0]: r[1]
            for r in self.db.execute(
                f"SELECT term, doc FROM memories_vocab WHERE term IN ({marks})", terms
            )
        }
        total = self.db.execute("SELECT max(id) FROM memories").fetchone()[0] or 0
        limit = max(2, int(total * self.RARE_SHARE))
        rare = [t for t in terms if 0 < df.get(t, 0) <= limit]
        match = fts_query(rare)
        if match is None:
            return []
        sql = (
            "SELECT m.id FROM memories_fts f JOIN memories m ON m.id = f.rowid"
            " WHERE memories_fts MATCH ? AND m.owner = ?"
        )
        args: list[Any] = [match, scope.owner]
        if scope.pid is not None:
            sql += " AND (m.pid = ?" + (" OR m.pid IS NULL)" if scope.shared else ")")
            args.append(scope.pid)
        sql += " ORDER BY bm25(memories_fts) LIMIT ?"
        return [int(r[0]) for r in self.db.execute(sql, [*args, k])]


class TunedConversations(Conversations):
    """Conversations._recall, copied, with the number of candidates as a parameter (the
    recall budget still decides how many go in) and, as a diagnostic, the option to
    leave paged-out assistant turns out of recall."""

    recall_k = RECALL_K
    user_only = False

    async def _recall(
        self, dev: Any, owner: str, pid: int, query: str, start: int, budget: int
    ) -> tuple[list[dict[str, Any]], int]:
        if start == 0 and not self.memory.listing(Scope(owner, pid, shared=False), limit=1):
            return [], 0
        chosen, used = [], 0
        k = 2 * self.recall_k if self.user_only else self.recall_k
        found = self.memory.search(Scope(owner, pid, shared=False), query, k)
        if self.user_only:
            found = [m for m in found if m["meta"].get("role") != "assistant"][: self.recall_k]
        for m in found:
            turn = m["meta"].get("turn")
            if isinstance(turn, int) and turn >= start:
                continue
            cost = len(await dev.tokenize(m["text"])) + 2
            if used + cost > budget:
                continue
            chosen.append(m)
            used += cost
        return chosen, used + (PER_MESSAGE + 6 if chosen else 0)


def variant(
    recall_k: int = RECALL_K, user_only: bool = False, **switches: bool
) -> tuple[type[MemoryStore], type[Conversations]]:
    store = type("Store", (TunedMemoryStore,), dict(switches))
    conv = type("Conv", (TunedConversations,), {"recall_k": recall_k, "user_only": user_only})
    return store, conv


OFF: dict[str, Any] = {"rel_cut": False, "dense_terms": False, "rare_bm25": False}
VARIANTS: dict[str, dict[str, Any]] = {
    "tuned": {"recall_k": 16},  # all three switches on, 16 candidates
    "tuned-k8": {},  # all three switches, the original 8 candidates
    "tuned-user": {"recall_k": 16, "user_only": True},  # tuned, no assistant turns recalled
    "no-cut": {**OFF, "rel_cut": True},
    "query-terms": {**OFF, "dense_terms": True},
    "rare-bm25": {**OFF, "rare_bm25": True},
    "k16": {**OFF, "recall_k": 16},
    "copy": OFF,  # the copy with everything off: must match llmos
}


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


# -- 1. evidence recall ------------------------------------------------------------------
async def recall_runs(
    args: argparse.Namespace, budgets: list[int], systems: dict[str, tuple[Any, Any, Any]]
) -> dict[str, dict[int, list[dict[str, Any]]]]:
    convs = make_conversations(args.conversations, args.seed, args.pairs)
    dev = LlamaCppDevice(
        default_model_path(), slots=1, ctx=max(budgets) + MAX_TOKENS, threads=args.threads
    )
    await dev.start()
    tokens = CachedTokens(dev, max(budgets) + MAX_TOKENS)
    rows: dict[str, dict[int, list[dict[str, Any]]]] = {s: {} for s in systems}
    try:
        for name, (embedder, store, conv_cls) in systems.items():
            for budget in budgets:
                t0 = time.monotonic()
                got = rows[name][budget] = []
                for conv in convs:
                    got += await replay(conv, tokens, budget, embedder, MAX_TOKENS, conv_cls, store)
                print(
                    f"# {name:12s} budget {budget:5d}: recall {share(got, 'recalled'):.3f}"
                    f"  ({len(got)} questions, {time.monotonic() - t0:.1f} s)",
                    flush=True,
                )
    finally:
        await dev.close()
    return rows


# -- 2. search latency ---------------------------------------------------------------------
def latency_runs(
    args: argparse.Namespace, sizes: list[int], embedder: Any, tuned: bool
) -> dict[str, Any]:
    rng = random.Random(f"{args.seed}:corpus")
    queries = [corpus_query(rng) for _ in range(args.queries)]
    out: dict[str, Any] = {"sizes": {}}
    owner, scope = "bench", Scope("bench")
    with tempfile.TemporaryDirectory(prefix="llmos-membench-") as tmp:
        db = open_db(Path(tmp))
        # TunedMemoryStore's own methods are only used by the "tuned" timing below:
        # MemoryStore.search(store, ...) is the original code path.
        store = TunedMemoryStore(db, embedder, KeyRing.ephemeral(db))
        # single adds (the paging path: one embedding and two INSERTs per turn)
        single = [corpus_sentence(rng) for _ in range(300)]
        t0 = time.perf_counter()
        for text in single:
            store.add("other", 1, text, tags=["conversation"], meta={"turn": 0})
        out["add_per_s"] = round(len(single) / (time.perf_counter() - t0), 1)
        have = prev = 0
        for size in sizes:
            insert_s, gen_s = 0.0, 0.0
            while have < size:
                n = min(5000, size - have)
                t0 = time.perf_counter()
                texts = [corpus_sentence(rng) for _ in range(n)]
                t1 = time.perf_counter()
                store.add_many(owner, None, texts)
                insert_s += time.perf_counter() - t1
                gen_s += t1 - t0
                have += n
            added, prev = size - prev, size
            t0 = time.perf_counter()
            MemoryStore.search(store, scope, queries[0], RECALL_K)  # builds the matrix
            cold = time.perf_counter() - t0
            lat, bm25, dense, tuned_lat = [], [], [], []
            for q in queries:
                t0 = time.perf_counter()
                MemoryStore.search(store, scope, q, RECALL_K)
                lat.append(time.perf_counter() - t0)
            for q in queries[:50]:  # the two halves on their own
                t0 = time.perf_counter()
                store._bm25(scope, q, 32)
                t1 = time.perf_counter()
                vec = embedder.embed([q])[0]
                store._owner_vectors(owner).top(vec, scope, 32)
                bm25.append(t1 - t0)
                dense.append(time.perf_counter() - t1)
            after_add = []  # the conversation path: page a turn out, then search
            for q in queries[:10]:
                store.add(owner, None, corpus_sentence(rng), meta={"turn": 0})
                t0 = time.perf_counter()
                MemoryStore.search(store, scope, q, RECALL_K)
                after_add.append(time.perf_counter() - t0)
            prev += len(after_add)
            have += len(after_add)
            if tuned:
                for q in queries:
                    t0 = time.perf_counter()
                    store.search(scope, q, 16)
                    tuned_lat.append(time.perf_counter() - t0)
            r = out["sizes"][str(size)] = {
                "p50_ms": round(1000 * statistics.median(lat), 2),
                "p95_ms": round(1000 * _pct(lat, 0.95), 2),
                "max_ms": round(1000 * max(lat), 2),
                "bm25_p50_ms": round(1000 * statistics.median(bm25), 2),
                "bm25_p95_ms": round(1000 * _pct(bm25, 0.95), 2),
                "dense_p50_ms": round(1000 * statistics.median(dense), 2),
                "dense_p95_ms": round(1000 * _pct(dense, 0.95), 2),
                "first_search_ms": round(1000 * cold, 1),
                "search_after_add_ms": round(1000 * statistics.median(after_add), 1),
                "insert_per_s": round(added / insert_s, 0),
            }
            if tuned_lat:
                r["tuned_p50_ms"] = round(1000 * statistics.median(tuned_lat), 2)
                r["tuned_p95_ms"] = round(1000 * _pct(tuned_lat, 0.95), 2)
            print(
                f"# {size:7d} memories: search p50 {r['p50_ms']} ms  p95 {r['p95_ms']} ms"
                f"  (bm25 p95 {r['bm25_p95_ms']}, dense p95 {r['dense_p95_ms']})"
                f"  add_many {r['insert_per_s']:.0f}/s  (text generation {gen_s:.1f} s)",
                flush=True,
            )
        db.close()
    return out


# -- report ----------------------------------------------------------------------------------
def summarize(
    rows: dict[str, dict[int, list[dict[str, Any]]]], budgets: list[int]
) -> dict[str, dict[int, float]]:
    def per(system: str, key: str, where: Any = None) -> dict[int, float]:
        return {
            b: round(share([r for r in rows[system][b] if where is None or where(r)], key), 3)
            for b in budgets
        }

    def in_top(r: dict[str, Any], k: int) -> bool:
        return r["search_rank"] is not None and r["search_rank"] < k

    out: dict[str, dict[int, float]] = {}
    base = next(iter(rows))
    out["recent"] = per(base, "recent_only")
    for name in rows:
        out[name] = per(name, "recalled")
        out[f"{name}/paraphrased"] = per(name, "recalled", lambda r: r["paraphrased"])
        out[f"{name}/literal"] = per(name, "recalled", lambda r: not r["paraphrased"])
        out[f"{name}/window"] = per(name, "in_window")
        for k in (RECALL_K, 16):
            out[f"{name}/top{k}"] = {
                b: round(sum(in_top(r, k) for r in rows[name][b]) / len(rows[name][b]), 3)
                for b in budgets
            }
    return out


def print_tables(summary: dict[str, Any], budgets: list[int], lat: dict[str, Any]) -> None:
    print()
    print("evidence recall (share of questions whose fact turn is in the assembled context)")
    print(f"{'':36s}" + "".join(f"{b:>10d}" for b in budgets))
    titles = {
        "llmos": "llmos (BM25 + dense, RRF)",
        "bm25": "(c) BM25 only, same machinery",
        "tuned": "tuned copy (bench/memory.py)",
    }
    systems = [k for k in summary if "/" not in k and k != "recent"]
    for name in systems:
        print(f"{titles.get(name, 'variant ' + name):36s}" + _cells(summary[name], budgets))
        for sub, label in (
            ("paraphrased", "paraphrased questions"),
            ("literal", "literal questions"),
            ("window", "of which in the recent window"),
            (f"top{RECALL_K}", f"fact turn in search top {RECALL_K}"),
            ("top16", "fact turn in search top 16"),
        ):
            print(f"  {label:34s}" + _cells(summary[f"{name}/{sub}"], budgets))
        if name == "llmos":
            print(f"{'(b) recent turns only':36s}" + _cells(summary["recent"], budgets))
    goal = {1024: GOALS["recall_1024"], 2048: GOALS["recall_2048"]}
    print(f"{'goal (llmos)':36s}" + "".join(f"{goal.get(b, '-'):>10}" for b in budgets))
    if not lat["sizes"]:
        return
    print()
    print("search latency (MemoryStore.search, k=8, one owner's scope, 200 queries)")
    print(
        f"{'memories':>10s} {'p50 ms':>8s} {'p95 ms':>8s} {'max ms':>8s} {'bm25 p95':>9s}"
        f" {'dense p95':>9s} {'first ms':>9s} {'after add':>9s} {'add_many/s':>11s}"
        f" {'tuned p95':>10s}"
    )
    for size, r in lat["sizes"].items():
        print(
            f"{size:>10s} {r['p50_ms']:8.2f} {r['p95_ms']:8.2f} {r['max_ms']:8.2f}"
            f" {r['bm25_p95_ms']:9.2f} {r['dense_p95_ms']:9.2f} {r['first_search_ms']:9.1f}"
            f" {r['search_after_add_ms']:9.1f} {r['insert_per_s']:11.0f}"
            f" {r.get('tuned_p95_ms', float('nan')):10.2f}"
        )
    print(f"goal: p95 <= {GOALS['search_p95_ms_100000']} ms at 100,000 memories")
    print("first ms: the first search after a bulk insert; after add: median search right")
    print("after one add() (vectors are appended to the owner's matrix in place)")
    print(f"single add() (the paging path): {lat['add_per_s']}/s")


def _cells(values: dict[int, float], budgets: list[int]) -> str:
    return "".join(f"{values[b]:10.3f}" for b in budgets)


def print_failures(rows: list[dict[str, Any]], n: int) -> None:
    missed = [r for r in rows if not r["recalled"]]
    if not missed or n <= 0:
        return
    print(f"\nmissed questions (llmos, 1,024 tokens): {len(missed)}; the first {n}:")
    for r in missed[:n]:
        print(
            f"- [{r['fact_id']}] fact {r['fact']!r} (turn {r['evidence_turn']},"
            f" {r['turns_back']} turns back) / question {r['question']!r}:"
            f" search rank {r['search_rank']}; recalled turns {r['recalled_turns']}"
        )
        for t in r["recalled_texts"][:2]:
            print(f"    recalled: {t}")


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="8 conversations, up to 10k memories")
    ap.add_argument("--conversations", type=int, default=30)
    ap.add_argument("--pairs", type=int, default=110, help="user/assistant pairs per conversation")
    ap.add_argument("--budgets", default="512,1024,2048")
    ap.add_argument("--sizes", default="1000,10000,100000", help="memories for the latency run")
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--no-bm25", action="store_true", help="skip the BM25-only baseline")
    ap.add_argument("--no-latency", action="store_true")
    ap.add_argument("--variants", default="", help=f"tuned copies to run too: {','.join(VARIANTS)}")
    ap.add_argument("--show-failures", type=int, default=12)
    ap.add_argument("--dump", type=Path, help="write every question's row as JSON here")
    args = ap.parse_args()
    if args.quick:
        args.conversations, args.sizes = 8, "1000,10000"
    budgets = [int(b) for b in args.budgets.split(",")]
    sizes = [int(s) for s in args.sizes.split(",")]
    variants = [v for v in args.variants.split(",") if v]
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per tokenize otherwise
    t_start = time.monotonic()
    embedder = WordLlamaEmbedder()
    systems: dict[str, tuple[Any, Any, Any]] = {"llmos": (embedder, MemoryStore, Conversations)}
    if not args.no_bm25:
        systems["bm25"] = (None, MemoryStore, Conversations)
    for v in variants:
        systems[v] = (embedder, *variant(**VARIANTS[v]))
    rows = asyncio.run(recall_runs(args, budgets, systems))
    t_recall = time.monotonic() - t_start
    lat: dict[str, Any] = {"sizes": {}, "add_per_s": None}
    if not args.no_latency:
        lat = latency_runs(args, sizes, embedder, tuned="tuned" in variants)
    t_total = time.monotonic() - t_start
    summary = summarize(rows, budgets)
    print_tables(summary, budgets, lat)
    ref = 1024 if 1024 in budgets else budgets[len(budgets) // 2]
    print_failures(rows["llmos"][ref], args.show_failures)
    if args.dump:
        args.dump.write_text(json.dumps(rows, indent=1))
    questions = rows["llmos"][budgets[0]]

    def by_budget(key: str) -> dict[str, float] | None:
        return {str(b): v for b, v in summary[key].items()} if key in summary else None

    def at(key: str, b: int) -> float | None:
        return summary[key].get(b) if key in summary else None

    result = {
        "conversations": args.conversations,
        "turns_per_conversation": 2 * args.pairs,
        "questions": len(questions),
        "paraphrased_share": round(share(questions, "paraphrased"), 3),
        "recall_at_5": at("llmos", 1024),
        "recall_512": at("llmos", 512),
        "recall_2048": at("llmos", 2048),
        "recall": by_budget("llmos"),
        "recall_paraphrased": by_budget("llmos/paraphrased"),
        "recall_literal": by_budget("llmos/literal"),
        "search_top8_hit": by_budget(f"llmos/top{RECALL_K}"),
        "baseline_recall_at_5": at("recent", 1024),
        "baseline_recall": by_budget("recent"),
        "bm25_recall": at("bm25", 1024),
        "bm25_recall_by_budget": by_budget("bm25"),
        **{f"{v}_recall": by_budget(v) for v in variants},
        "search_p50_ms": {s: r["p50_ms"] for s, r in lat["sizes"].items()},
        "search_p95_ms": {s: r["p95_ms"] for s, r in lat["sizes"].items()},
        "tuned_search_p95_ms": {s: r.get("tuned_p95_ms") for s, r in lat["sizes"].items()},
        "search_after_add_ms": {s: r["search_after_add_ms"] for s, r in lat["sizes"].items()},
        "insert_per_s": {s: r["insert_per_s"] for s, r in lat["sizes"].items()},
        "add_per_s": lat["add_per_s"],
        "goals": GOALS,
        "recall_s": round(t_recall, 1),
        "total_s": round(t_total, 1),
    }
    print(f"\nrecall runs {t_recall:.0f} s, total {t_total:.0f} s")
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()

"""FileStore: per-owner versioned files on the kernel's SQLite connection."""

from __future__ import annotations

import hashlib
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from llmos.errors import InvalidRequest, LlmosError, NotFound, PayloadTooLarge, QuotaExceeded
from llmos.kernel.crypto import KeyRing
from llmos.kernel.fspaths import check_path, fts_query, passages
from llmos.kernel.storage import FileStore
from llmos.kernel.store import Store
from llmos.params import FS_PASSAGE_CHARS, MAX_FILE_BYTES, MAX_SEARCH_LIMIT

TEST_KEY = bytes(range(32))


def ring(db: sqlite3.Connection) -> KeyRing:
    """Contents are sealed at rest (crypto.py): one fixed test key, so a reopened
    database reads back."""
    return KeyRing(db, TEST_KEY, "test")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / "llmos.db")
    yield s
    s.close()


@pytest.fixture
def fs(store: Store) -> FileStore:
    return FileStore(store.db, keys=ring(store.db))


def err(exc: pytest.ExceptionInfo[LlmosError]) -> tuple[int, str | None]:
    return exc.value.status, exc.value.param


# -- basics ------------------------------------------------------------------------
def test_write_read_stat(fs: FileStore) -> None:
    info = fs.write("alice", "notes/todo.md", b"buy milk\n")
    assert info["path"] == "notes/todo.md"
    assert info["version"] == 1
    assert info["size"] == 9
    assert info["sha256"] == hashlib.sha256(b"buy milk\n").hexdigest()
    assert info["created_at"] == info["updated_at"]
    assert fs.read("alice", "notes/todo.md") == b"buy milk\n"
    assert fs.stat("alice", "notes/todo.md") == info


def test_every_write_is_a_new_version(fs: FileStore) -> None:
    first = fs.write("alice", "f", b"one")
    second = fs.write("alice", "f", b"two")
    same = fs.write("alice", "f", b"two")
    assert [first["version"], second["version"], same["version"]] == [1, 2, 3]
    assert second["created_at"] == first["created_at"] <= second["updated_at"]
    assert fs.read("alice", "f") == b"two"
    assert fs.read("alice", "f", 1) == b"one"
    info, data = fs.fetch("alice", "f", 1)
    assert (info["version"], info["size"], data) == (1, 3, b"one")
    assert [v["version"] for v in fs.versions("alice", "f")] == [1, 2, 3]


def test_binary_and_empty_files(fs: FileStore) -> None:
    blob = bytes(range(256)) * 4
    fs.write("alice", "bin/blob", blob)
    fs.write("alice", "empty", b"")
    assert fs.read("alice", "bin/blob") == blob
    assert fs.read("alice", "empty") == b""
    assert fs.stat("alice", "empty")["size"] == 0


def test_list_is_sorted_and_filtered_by_string_prefix(fs: FileStore) -> None:
    for path in ("notes/b", "notes/a", "notes2/x", "other", "50%_off", "50x_off"):
        fs.write("alice", path, b"x")
    assert [f["path"] for f in fs.list("alice")] == [
        "50%_off",
        "50x_off",
        "notes/a",
        "notes/b",
        "notes2/x",
        "other",
    ]
    assert [f["path"] for f in fs.list("alice", "notes/")] == ["notes/a", "notes/b"]
    assert [f["path"] for f in fs.list("alice", "notes")] == ["notes/a", "notes/b", "notes2/x"]
    assert [f["path"] for f in fs.list("alice", "50%")] == ["50%_off"]  # not a LIKE pattern
    assert fs.list("alice", "nothing/") == []
    with pytest.raises(InvalidRequest) as e:
        fs.list("alice", "a\x00")
    assert e.value.param == "prefix"


def test_missing_files_and_versions(fs: FileStore) -> None:
    for call in (
        lambda: fs.read("alice", "nope"),
        lambda: fs.stat("alice", "nope"),
        lambda: fs.delete("alice", "nope"),
        lambda: fs.versions("alice", "nope"),
        lambda: fs.rollback("alice", "nope", 1),
    ):
        with pytest.raises(NotFound) as e:
            call()
        assert err(e) == (404, "path")
    fs.write("alice", "f", b"x")
    for call in (lambda: fs.read("alice", "f", 2), lambda: fs.rollback("alice", "f", 7)):
        with pytest.raises(NotFound) as e:
            call()
        assert err(e) == (404, "version")


# -- paths -------------------------------------------------------------------------
HOSTILE: list[Any] = [
    "../x",
    "/etc/passwd",
    "a/../../b",
    "a/..",
    "a//b",
    "a/",
    "a\\b",
    "..\\..\\windows",
    "a\x00b",
    "a\nb",
    "a\x7fb",
    "\u202etxt.exe",
    "a\ud800b",
    ".",
    "./a",
    "a/./b",
    "..",
    "",
    "x" * 2000,
    "a/" + "y" * 256,
    "é" * 600,  # 600 characters, 1200 bytes
    5,
    None,
    b"bytes",
]


@pytest.mark.parametrize("path", HOSTILE, ids=repr)
def test_hostile_paths_are_refused_everywhere(fs: FileStore, path: Any) -> None:
    calls = (
        lambda: fs.write("alice", path, b"x"),
        lambda: fs.read("alice", path),
        lambda: fs.stat("alice", path),
        lambda: fs.delete("alice", path),
        lambda: fs.versions("alice", path),
        lambda: fs.rollback("alice", path, 1),
    )
    for call in calls:
        with pytest.raises(InvalidRequest) as e:
            call()
        assert err(e) == (400, "path")
    assert fs.list("alice") == []


@pytest.mark.parametrize(
    "path",
    [
        "a",
        "a/b/c.txt",
        ".hidden",
        "...",
        "a..b",
        "with space/and-dash_under.score",
        "ünïcödé/日本語.md",
        "emoji/👩‍💻.txt",
        "x" * 255,
        "/".join(["y" * 200] * 5)[:1024].rstrip("/"),
    ],
)
def test_ordinary_paths_are_accepted(fs: FileStore, path: str) -> None:
    assert check_path(path) == path
    fs.write("alice", path, b"ok")
    assert fs.read("alice", path) == b"ok"


# -- limits ------------------------------------------------------------------------
def test_file_size_limit(store: Store) -> None:
    fs = FileStore(store.db, keys=ring(store.db), max_file_bytes=100)
    fs.write("alice", "ok", b"x" * 100)
    with pytest.raises(PayloadTooLarge) as e:
        fs.write("alice", "big", b"x" * 101)
    assert err(e) == (413, "content")
    with pytest.raises(NotFound):
        fs.stat("alice", "big")
    assert FileStore(store.db, keys=ring(store.db)).max_file_bytes == MAX_FILE_BYTES


def test_quota_counts_live_files_per_owner(store: Store) -> None:
    fs = FileStore(store.db, keys=ring(store.db), quota_bytes=100)
    fs.write("alice", "a", b"x" * 60)
    with pytest.raises(QuotaExceeded) as e:
        fs.write("alice", "b", b"x" * 41)
    assert err(e) == (403, "quota")
    assert [v["version"] for v in fs.versions("alice", "a")] == [1]  # nothing half-done
    with pytest.raises(NotFound):
        fs.versions("alice", "b")
    fs.write("alice", "b", b"x" * 40)  # exactly at the quota
    fs.write("alice", "a", b"x" * 10)  # an overwrite counts its new size only
    fs.write("alice", "b", b"x" * 90)
    fs.write("bob", "a", b"x" * 100)  # another owner has its own quota
    fs.delete("alice", "b")  # a deletion frees its bytes
    fs.write("alice", "c", b"x" * 90)
    assert fs.usage("alice") == {"files": 2, "bytes": 100, "max_files": 100_000, "quota_bytes": 100}
    with pytest.raises(QuotaExceeded):
        fs.rollback("alice", "b", 2)  # a rollback is a write like any other


def test_file_count_limit(store: Store) -> None:
    fs = FileStore(store.db, keys=ring(store.db), max_files=2)
    fs.write("alice", "a", b"")
    fs.write("alice", "b", b"")
    fs.write("alice", "a", b"again")  # overwriting is not a new file
    with pytest.raises(QuotaExceeded) as e:
        fs.write("alice", "c", b"")
    assert err(e) == (403, "quota")
    fs.delete("alice", "a")
    fs.write("alice", "c", b"")


def test_old_versions_are_pruned(store: Store) -> None:
    fs = FileStore(store.db, keys=ring(store.db), max_versions=3)
    for i in range(5):
        fs.write("alice", "f", str(i).encode())
    assert [v["version"] for v in fs.versions("alice", "f")] == [3, 4, 5]
    with pytest.raises(NotFound) as e:
        fs.read("alice", "f", 1)
    assert err(e) == (404, "version")
    assert "last 3" in e.value.message
    assert fs.read("alice", "f", 3) == b"2"


def test_limits_must_be_positive(store: Store) -> None:
    with pytest.raises(InvalidRequest):
        FileStore(store.db, keys=ring(store.db), quota_bytes=0)


# -- history -----------------------------------------------------------------------
def test_rollback_writes_old_content_as_a_new_version(fs: FileStore) -> None:
    fs.write("alice", "f", b"good")
    fs.write("alice", "f", b"oops")
    info = fs.rollback("alice", "f", 1)
    assert info["version"] == 3
    assert info["restored_from"] == 1
    assert info["sha256"] == hashlib.sha256(b"good").hexdigest()
    assert fs.read("alice", "f") == b"good"
    assert fs.read("alice", "f", 2) == b"oops"  # nothing is lost


def test_delete_is_a_tombstone_that_rollback_undoes(fs: FileStore) -> None:
    fs.write("alice", "notes/plan.md", b"the secret plan")
    gone = fs.delete("alice", "notes/plan.md")
    assert gone["version"] == 2
    assert gone["deleted"] is True
    for call in (
        lambda: fs.read("alice", "notes/plan.md"),
        lambda: fs.stat("alice", "notes/plan.md"),
        lambda: fs.delete("alice", "notes/plan.md"),
    ):
        with pytest.raises(NotFound):
            call()
    assert fs.list("alice") == []
    assert fs.search("alice", "secret") == []
    history = fs.versions("alice", "notes/plan.md")
    assert [(v["version"], v["deleted"], v["sha256"] is None) for v in history] == [
        (1, False, False),
        (2, True, True),
    ]
    with pytest.raises(NotFound) as e:
        fs.read("alice", "notes/plan.md", 2)
    assert err(e) == (404, "version")
    with pytest.raises(InvalidRequest) as bad:
        fs.rollback("alice", "notes/plan.md", 2)
    assert bad.value.param == "version"

    back = fs.rollback("alice", "notes/plan.md", 1)
    assert back["version"] == 3
    assert fs.read("alice", "notes/plan.md") == b"the secret plan"
    assert [f["path"] for f in fs.search("alice", "secret")] == ["notes/plan.md"]


def test_a_file_written_again_after_delete_starts_a_new_life(fs: FileStore) -> None:
    first = fs.write("alice", "f", b"one")
    fs.delete("alice", "f")
    again = fs.write("alice", "f", b"two")
    assert again["version"] == 3
    assert again["created_at"] >= first["created_at"]
    assert fs.read("alice", "f", 1) == b"one"


# -- search ------------------------------------------------------------------------
def test_search_ranks_by_bm25_with_snippets(fs: FileStore) -> None:
    fs.write("alice", "a.md", b"the kernel schedules processes onto engines")
    fs.write("alice", "b.md", b"kernel kernel kernel: all about the kernel")
    fs.write("alice", "c.md", b"nothing relevant here")
    hits = fs.search("alice", "kernel")
    assert [h["path"] for h in hits] == ["b.md", "a.md"]
    assert "score" not in hits[0]  # BM25 counts every owner's words: no side channel
    assert "**kernel**" in hits[1]["snippet"]
    assert hits[0]["version"] == 1
    assert [h["path"] for h in fs.search("alice", "kernel engines")] == ["a.md"]  # all words
    assert [h["path"] for h in fs.search("alice", "sched*")] == ["a.md"]  # prefix
    assert [h["path"] for h in fs.search("alice", "KERNEL", limit=1)] == ["b.md"]


def test_search_matches_paths_and_unicode(fs: FileStore) -> None:
    fs.write("alice", "recipes/pancakes.txt", b"flour, eggs, milk")
    fs.write("alice", "journal.txt", "Über café crème brûlée".encode())
    assert [h["path"] for h in fs.search("alice", "pancakes")] == ["recipes/pancakes.txt"]
    assert [h["path"] for h in fs.search("alice", "über CAFÉ")] == ["journal.txt"]


def test_search_sees_only_current_text_content(fs: FileStore) -> None:
    fs.write("alice", "f", b"alpha")
    fs.write("alice", "f", b"beta")
    fs.write("alice", "bin", b"\xff\xfe gamma \x80")  # not UTF-8: stored, not indexed
    assert fs.search("alice", "alpha") == []
    assert [h["path"] for h in fs.search("alice", "beta")] == ["f"]
    assert fs.search("alice", "gamma") == []
    fs.rollback("alice", "f", 1)
    assert [h["path"] for h in fs.search("alice", "alpha")] == ["f"]
    assert fs.search("alice", "beta") == []


def test_search_of_a_big_file_is_quick_and_finds_the_best_passage(fs: FileStore) -> None:
    """snippet() costs the square of the text it reads: passages keep it bounded."""
    filler = b"lorem ipsum dolor sit amet " * (MAX_FILE_BYTES // 27)
    fs.write("alice", "big.txt", b"aardvark " + filler[: MAX_FILE_BYTES - 100] + b" zebra crossing")
    started = time.perf_counter()
    hits = fs.search("alice", "dolor")
    assert time.perf_counter() - started < 3.0
    assert [h["path"] for h in hits] == ["big.txt"]
    assert "**dolor**" in hits[0]["snippet"]
    hits = fs.search("alice", "zebra")
    assert "**zebra** crossing" in hits[0]["snippet"]
    assert [h["path"] for h in fs.search("alice", "lorem zebra")] == ["big.txt"]
    assert fs.search("alice", "aardvark zebra") == []  # words must share a passage


def test_passages_cut_at_whitespace_and_cover_the_text() -> None:
    text = "word " * 5000 + "x" * 20000
    pieces = list(passages(text))
    assert "".join(pieces) == text
    assert all(len(p) <= FS_PASSAGE_CHARS for p in pieces)
    assert all(p.endswith(" ") for p in pieces[:2])
    assert list(passages("")) == []


def test_empty_files_are_found_by_path(fs: FileStore) -> None:
    fs.write("alice", "inbox/placeholder", b"")
    assert [h["path"] for h in fs.search("alice", "placeholder")] == ["inbox/placeholder"]


WEIRD_QUERIES = [
    '"foo',
    'foo"',
    '"',
    '""',
    "AND OR",
    "AND",
    "NOT foo",
    "foo OR",
    "NEAR(foo bar",
    "NEAR(",
    "(",
    ")",
    "*",
    "**",
    "foo*",
    "*foo",
    "^foo",
    "-foo",
    "+",
    "path:foo",
    "body:foo",
    "owner:alice",
    "{path body}: foo",
    "foo\x00bar",
    "foo\tbar\n",
    "'; DROP TABLE files; --",
    "%",
    "_",
    "🙂",
    "x" * 1024,
]


@pytest.mark.parametrize("query", WEIRD_QUERIES, ids=repr)
def test_weird_queries_never_raise(fs: FileStore, query: str) -> None:
    fs.write("alice", "doc.txt", b"foo bar: AND OR NOT near the path body")
    hits = fs.search("alice", query)
    assert isinstance(hits, list)
    assert all(h["path"] == "doc.txt" for h in hits)


def test_quoting_keeps_words_literal(fs: FileStore) -> None:
    assert fts_query('say "hi" AND go*') == '"say" "hi" "AND" "go"*'
    fs.write("alice", "doc.txt", b"foo bar")
    assert [h["path"] for h in fs.search("alice", '"foo')] == ["doc.txt"]
    assert [h["path"] for h in fs.search("alice", "foo AND")] == []  # 'and' is a word here
    assert fs.search("alice", "NOT bar") == []


@pytest.mark.parametrize(
    ("query", "limit", "param"),
    [
        ("", 10, "query"),
        ("   ", 10, "query"),
        ("x" * 1025, 10, "query"),
        ("a\ud800", 10, "query"),
        ("foo", 0, "limit"),
        ("foo", MAX_SEARCH_LIMIT + 1, "limit"),
        ("foo", True, "limit"),
    ],
)
def test_bad_search_arguments(fs: FileStore, query: str, limit: Any, param: str) -> None:
    with pytest.raises(InvalidRequest) as e:
        fs.search("alice", query, limit)
    assert err(e) == (400, param)


# -- owners ------------------------------------------------------------------------
def test_owners_never_see_each_others_files(fs: FileStore) -> None:
    fs.write("alice", "diary.txt", b"alice's secret")
    fs.write("bob", "diary.txt", b"bob's secret")
    fs.write("alice", "only-alice", b"secret")
    assert fs.read("alice", "diary.txt") == b"alice's secret"
    assert fs.read("bob", "diary.txt") == b"bob's secret"
    assert [f["path"] for f in fs.list("bob")] == ["diary.txt"]
    assert [h["path"] for h in fs.search("bob", "secret")] == ["diary.txt"]
    assert fs.search("carol", "secret") == []
    for call in (
        lambda: fs.read("bob", "only-alice"),
        lambda: fs.stat("bob", "only-alice"),
        lambda: fs.versions("bob", "only-alice"),
        lambda: fs.delete("bob", "only-alice"),
        lambda: fs.rollback("bob", "only-alice", 1),
    ):
        with pytest.raises(NotFound):
            call()
    fs.delete("bob", "diary.txt")
    assert fs.read("alice", "diary.txt") == b"alice's secret"


# -- persistence -------------------------------------------------------------------
def test_files_survive_reopening_the_database(tmp_path: Path) -> None:
    db = tmp_path / "llmos.db"
    first = Store(db)
    fs = FileStore(first.db, keys=ring(first.db))
    fs.write("alice", "keep.md", b"version one")
    fs.write("alice", "keep.md", b"version two of the durable note")
    fs.write("alice", "gone", b"x")
    fs.delete("alice", "gone")
    first.close()

    second = Store(db)
    try:
        # CREATE IF NOT EXISTS: the tables are kept
        fs = FileStore(second.db, keys=ring(second.db))
        assert fs.read("alice", "keep.md") == b"version two of the durable note"
        assert fs.read("alice", "keep.md", 1) == b"version one"
        assert [f["path"] for f in fs.list("alice")] == ["keep.md"]
        assert [h["path"] for h in fs.search("alice", "durable")] == ["keep.md"]
        assert fs.write("alice", "keep.md", b"three")["version"] == 3
        fs.rollback("alice", "gone", 1)
        assert fs.read("alice", "gone") == b"x"
    finally:
        second.close()

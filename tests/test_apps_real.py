"""Apps on the real SmolLM2 (embedded llama.cpp) over HTTP: customer_service answers
a knowledge-base question from the right entry and cites it, recommendation ranks
with reasons, both answer without input, and summarize returns a summary shorter
than its text. Greedy decoding, small max_tokens."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from llmos.apps.textrank import terms
from tests.conftest import LiveServer

pytestmark = [
    pytest.mark.model,
    pytest.mark.parametrize("live", ["embedded"], indirect=True),
]

TEXT = (
    "The city council met on Tuesday to discuss the new public library. The current"
    " library was built in 1962 and is too small for the growing population; its roof"
    " leaks and it has no space for computers. After two hours of debate, the council"
    " voted seven to two to build a new library next to the central park. Construction"
    " will start in March and should take eighteen months. The new building will have"
    " three floors, a children's section, forty public computers and a cafe. It will"
    " cost twelve million dollars, paid for by a state grant and a local bond. Some"
    " residents worried about traffic near the park, so the council also approved a new"
    " bus stop and a small parking garage. The old library will become a community"
    " center for seniors."
)


def serve(live: LiveServer, name: str, value: Any = None) -> dict[str, Any]:
    body = {"name": name} if value is None else {"name": name, "input": value}
    r = httpx.post(f"{live.url}/serving/process", json=body, headers=live.headers, timeout=300)
    assert r.status_code == 200, r.text
    answer: dict[str, Any] = r.json()
    assert answer["status"] == "success"
    return answer


def entry_text(live: LiveServer, entry_id: str) -> str:
    kb = httpx.get(
        f"{live.url}/v1/files/apps/customer_service/kb.jsonl",
        params={"owner": "apps"},
        headers=live.headers,
        timeout=30,
    ).text
    return next(line for line in kb.splitlines() if f'"id": "{entry_id}"' in line)


@pytest.mark.parametrize(
    ("question", "entry"),
    [("Can I pay with bitcoin?", "payment-methods"), ("How can I return an item?", "returns")],
)
def test_customer_service_answers_from_the_right_entry(
    live: LiveServer, question: str, entry: str
) -> None:
    answer = serve(live, "customer_service", question)
    result = answer["result"]
    assert result["grounded"] is True
    assert result["citations"][0]["id"] == entry
    said = set(terms(result["answer"]))
    facts = set(terms(entry_text(live, entry)))
    assert len(said & facts) >= 2, (result["answer"], said & facts)  # it used the entry
    proc = httpx.get(
        f"{live.url}/v1/processes/{answer['pid']}", headers=live.headers, timeout=30
    ).json()
    assert proc["name"] == "app:customer_service" and proc["state"] == "exited"
    assert proc["tokens_out"] == answer["usage"]["completion_tokens"] > 0


def test_customer_service_greets_and_declines_without_the_model(live: LiveServer) -> None:
    greeting = serve(live, "customer_service")
    assert greeting["result"]["answer"].startswith("Hello!")
    assert "Payment methods" in greeting["result"]["topics"]
    unknown = serve(live, "customer_service", "What is the weather on Mars?")
    assert unknown["result"]["grounded"] is False and unknown["usage"]["requests"] == 0


def test_recommendation_ranks_with_reasons(live: LiveServer) -> None:
    ranked = serve(live, "recommendation_system", {"history": ["The Hobbit"], "k": 3})
    items = ranked["result"]["items"]
    assert items[0]["id"] == "lotr" and len(items) == 3
    assert "similar to 'The Hobbit'" in items[0]["reason"]
    assert all(i["reason"] and i["id"] != "hobbit" for i in items)
    popular = serve(live, "recommendation")["result"]
    assert popular["strategy"] == "popularity" and popular["items"][0]["id"] == "dune"


def test_summarize_is_shorter_than_its_text_and_about_it(live: LiveServer) -> None:
    answer = serve(live, "summarize", {"text": TEXT, "max_words": 40})
    result = answer["result"]
    assert 0 < result["words_out"] <= 40 < result["words_in"]
    assert len(result["summary"]) < len(TEXT)
    common = set(terms(result["summary"])) & set(terms(TEXT))
    assert len(common) >= 4, (result["summary"], common)
    assert answer["usage"]["completion_tokens"] > 0

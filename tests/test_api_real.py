"""Behaviour of llmos on the real embedded SmolLM2 model, over real HTTP."""

from __future__ import annotations

import asyncio
import json

import httpx
import openai
import pytest

from tests.conftest import MODEL, LiveServer

pytestmark = pytest.mark.model

HI = [{"role": "user", "content": "Name three colors."}]


def test_greedy_output_equals_the_engine_driven_directly(live: LiveServer) -> None:
    direct = live.direct_chat({"messages": HI, "max_tokens": 24, "temperature": 0, "seed": 7})
    r = httpx.post(
        live.url + "/v1/chat/completions",
        headers=live.headers,
        json={"model": MODEL, "messages": HI, "max_tokens": 24, "temperature": 0, "seed": 7},
        timeout=60,
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["choices"][0]["message"]["content"] == direct["choices"][0]["message"]["content"]
    assert body["usage"]["prompt_tokens"] == direct["usage"]["prompt_tokens"]
    assert body["usage"]["completion_tokens"] == direct["usage"]["completion_tokens"]
    again = httpx.post(
        live.url + "/v1/chat/completions",
        headers=live.headers,
        json={"model": MODEL, "messages": HI, "max_tokens": 4, "temperature": 0},
        timeout=60,
    ).json()
    # the engine's prefix cache served the repeated prompt, and llmos reports it
    assert again["usage"]["prompt_tokens_details"]["cached_tokens"] > 0


def test_openai_client_chat_stream_and_completions(live: LiveServer) -> None:
    client = openai.OpenAI(base_url=live.url + "/v1", api_key=live.token)
    with client:
        assert [m.id for m in client.models.list()] == [MODEL]
        full = client.chat.completions.create(
            model=MODEL, messages=HI, max_tokens=16, temperature=0, seed=1
        )
        text = full.choices[0].message.content
        assert text and full.choices[0].finish_reason in ("stop", "length")
        assert full.object == "chat.completion" and full.usage is not None
        assert full.usage.total_tokens == full.usage.prompt_tokens + full.usage.completion_tokens

        stream = client.chat.completions.create(
            model=MODEL,
            messages=HI,
            max_tokens=16,
            temperature=0,
            seed=1,
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = list(stream)
        streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert streamed == text
        assert chunks[-1].choices == [] and chunks[-1].usage is not None
        assert chunks[-1].usage.completion_tokens == full.usage.completion_tokens

        comp = client.completions.create(
            model=MODEL, prompt="The sky is", max_tokens=5, temperature=0, logprobs=2
        )
        assert comp.object == "text_completion" and comp.choices[0].text
        lp = comp.choices[0].logprobs
        assert lp is not None and lp.tokens and len(lp.tokens) == comp.usage.completion_tokens
        assert all(len(t) == 2 for t in lp.top_logprobs or [])


def test_chat_logprobs_stop_and_json_schema(live: LiveServer) -> None:
    client = openai.OpenAI(base_url=live.url + "/v1", api_key=live.token)
    with client:
        r = client.chat.completions.create(
            model=MODEL, messages=HI, max_tokens=8, temperature=0, logprobs=True, top_logprobs=3
        )
        content = r.choices[0].logprobs.content  # type: ignore[union-attr]
        assert content and len(content) == r.usage.completion_tokens  # type: ignore[union-attr]
        assert all(len(t.top_logprobs) == 3 for t in content)
        assert "".join(t.token for t in content) == r.choices[0].message.content

        base = client.chat.completions.create(
            model=MODEL, messages=HI, max_tokens=24, temperature=0
        )
        text = base.choices[0].message.content or ""
        cut = text.split()[2]  # a word in the middle of the greedy answer
        stopped = client.chat.completions.create(
            model=MODEL, messages=HI, max_tokens=24, temperature=0, stop=[cut]
        )
        assert stopped.choices[0].finish_reason == "stop"
        assert stopped.choices[0].message.content == text[: text.index(cut)]

        schema = {
            "type": "object",
            "properties": {"answer": {"type": "string", "enum": ["yes", "no"]}},
            "required": ["answer"],
            "additionalProperties": False,
        }
        js = client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "Is the sky blue? Answer in JSON."}],
            max_tokens=40,
            temperature=0,
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "answer", "schema": schema},
            },
        )
        parsed = json.loads(js.choices[0].message.content or "")
        assert parsed["answer"] in ("yes", "no")


async def test_sixteen_concurrent_requests_never_exceed_four_slots(live: LiveServer) -> None:
    before = live.kernel.scheduler.dispatched[live.device.name]
    async with httpx.AsyncClient(base_url=live.url, headers=live.headers, timeout=120) as c:

        async def one(i: int) -> httpx.Response:
            msgs = [{"role": "user", "content": f"Say a number bigger than {i}."}]
            return await c.post(
                "/v1/chat/completions",
                json={"model": MODEL, "messages": msgs, "max_tokens": 12, "temperature": 0},
            )

        results = await asyncio.gather(*(one(i) for i in range(16)))
        devices = (await c.get("/v1/sys/devices")).json()["data"][0]
    assert all(r.status_code == 200 for r in results), [r.text for r in results]
    assert all(r.json()["choices"][0]["message"]["content"] for r in results)
    assert live.kernel.scheduler.dispatched[live.device.name] - before == 16
    assert devices["peak_running"] == 4  # reached, and never more than the slots
    assert live.device.in_flight == 0 and devices["running"] == 0


async def test_kill_mid_stream_frees_the_slot_and_ends_the_stream_with_an_error(
    live: LiveServer,
) -> None:
    async with httpx.AsyncClient(base_url=live.url, headers=live.headers, timeout=120) as c:
        proc = (await c.post("/v1/processes", json={"name": "victim"})).json()
        pid, ptoken = proc["pid"], proc["token"]
        body = {
            "model": MODEL,
            "messages": [{"role": "user", "content": "Write a very long story."}],
            "max_tokens": 600,
            "temperature": 0,
            "stream": True,
        }
        lines: list[str] = []
        async with c.stream(
            "POST",
            "/v1/chat/completions",
            json=body,
            headers={"Authorization": f"Bearer {ptoken}"},
        ) as r:
            assert r.status_code == 200
            async for line in r.aiter_lines():
                if line.startswith("data:"):
                    lines.append(line[5:].strip())
                if len(lines) == 4:  # a few tokens in: kill it
                    killed = await c.delete(f"/v1/processes/{pid}")
                    assert killed.status_code == 200 and killed.json()["state"] == "killed"
        assert lines[-1] == "[DONE]"
        error = json.loads(lines[-2])["error"]
        assert error["code"] == "process_killed" and str(pid) in error["message"]
        assert len(lines) < 100  # stopped long before max_tokens
        # The slot is free: nothing runs, and the device serves the next request.
        for _ in range(50):
            if live.device.in_flight == 0 and live.kernel.scheduler.num_running() == 0:
                break
            await asyncio.sleep(0.02)
        assert live.device.in_flight == 0
        assert live.kernel.scheduler.num_running() == 0
        after = await c.post(
            "/v1/chat/completions",
            json={"model": MODEL, "messages": HI, "max_tokens": 4, "temperature": 0},
        )
        assert after.status_code == 200
        # The killed process's token can no longer run anything.
        denied = await c.post(
            "/v1/chat/completions",
            json={"model": MODEL, "messages": HI, "max_tokens": 4},
            headers={"Authorization": f"Bearer {ptoken}"},
        )
        assert denied.status_code == 409 and denied.json()["error"]["code"] == "process_killed"
        info = (await c.get(f"/v1/processes/{pid}")).json()
        assert info["state"] == "killed" and info["running"] == 0 and info["tokens_out"] >= 1


async def test_kill_fails_queued_requests_with_a_clear_error(live: LiveServer) -> None:
    async with httpx.AsyncClient(base_url=live.url, headers=live.headers, timeout=120) as c:
        proc = (await c.post("/v1/processes", json={"name": "crowd"})).json()
        auth = {"Authorization": f"Bearer {proc['token']}"}
        body = {
            "model": MODEL,
            "messages": [{"role": "user", "content": "Tell me everything about the sea."}],
            "max_tokens": 400,
        }
        tasks = [
            asyncio.create_task(c.post("/v1/chat/completions", json=body, headers=auth))
            for _ in range(6)
        ]
        for _ in range(200):  # wait until 4 run and 2 wait
            p = (await c.get(f"/v1/processes/{proc['pid']}")).json()
            if p["running"] == 4 and p["waiting"] == 2:
                break
            await asyncio.sleep(0.02)
        assert (p["running"], p["waiting"]) == (4, 2)
        await c.delete(f"/v1/processes/{proc['pid']}")
        results = await asyncio.gather(*tasks)
    assert [r.status_code for r in results] == [409] * 6
    assert all("was killed" in r.json()["error"]["message"] for r in results)
    assert live.kernel.scheduler.num_waiting() == 0

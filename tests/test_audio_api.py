"""The perception routes (OpenAI's /v1/audio/transcriptions and /v1/audio/speech,
and /v1/images/ocr), their errors, /metrics, the SDK and the CLI, on real models
(Whisper tiny.en, RapidOCR, espeak-ng) behind a kernel on the mock LLM device."""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from typer.testing import CliRunner

from llmos.api import create_app
from llmos.api.routes_audio import subtitles
from llmos.cli.audio import media_parts
from llmos.cli.main import build_app
from llmos.devices import MockDevice
from llmos.kernel import Kernel
from llmos.kernel.perception import Perception
from llmos.params import Settings
from llmos.sdk import ApiError, AsyncClient, Client
from tests import _media
from tests._live_server import LiveServer
from tests._media import SENTENCE, png, wav, wav_info, wer
from tests.test_perception import BlockingStt

ADMIN = "test-admin-token"
LIMITS = {"max_audio_bytes": 600_000, "max_audio_s": 15.0, "max_image_bytes": 200_000}


@contextlib.asynccontextmanager
async def app_client(
    home: Path, stt: Any = None, **settings: Any
) -> AsyncIterator[tuple[httpx.AsyncClient, Kernel]]:
    kernel = Kernel(
        Settings(home=home, admin_token=ADMIN, **{**LIMITS, **settings}), [MockDevice()]
    )
    kernel.perception.stop()
    drivers = {**_media.drivers(), **({"stt": stt} if stt is not None else {})}
    kernel.perception = Perception(kernel.settings, kernel.store.db, **drivers)
    await kernel.start()
    transport = httpx.ASGITransport(app=create_app(kernel, manage_kernel=False))
    headers = {"Authorization": f"Bearer {ADMIN}"}
    async with httpx.AsyncClient(
        transport=transport, base_url="http://llmos", headers=headers, timeout=120
    ) as client:
        yield client, kernel
    await kernel.stop()


@pytest_asyncio.fixture
async def api(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    async with app_client(tmp_path) as (client, _):
        yield client


def upload(
    data: bytes, name: str = "speech.wav", ctype: str = "audio/wav", **form: str
) -> dict[str, Any]:
    return {"files": {"file": (name, data, ctype)}, "data": {"model": "whisper-1", **form}}


def assert_error(r: httpx.Response, status: int, param: str, *words: str) -> None:
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["param"] == param, error
    for word in words:
        assert word in error["message"], error["message"]


# -- acceptance: text -> speech -> text ----------------------------------------------
async def test_speech_round_trip_over_http(api: httpx.AsyncClient) -> None:
    r = await api.post(
        "/v1/audio/speech", json={"model": "tts-1", "input": SENTENCE, "voice": "alloy"}
    )
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "audio/wav"
    channels, width, seconds = wav_info(r.content)
    assert (channels, width) == (1, 2) and seconds > 2
    t = await api.post("/v1/audio/transcriptions", **upload(r.content))
    assert t.status_code == 200, t.text
    body = t.json()
    error = wer(SENTENCE, body["text"])
    print(f"\nround trip WER {error:.3f}: {body['text']!r}")
    assert error <= 0.25
    assert body["usage"] == {"type": "duration", "seconds": pytest.approx(seconds, abs=0.1)}


async def test_transcription_formats(api: httpx.AsyncClient) -> None:
    speech = (await api.post("/v1/audio/speech", json={"input": "Good morning."})).content
    verbose = (await api.post("/v1/audio/transcriptions", **upload(speech, **{
        "response_format": "verbose_json", "language": "en", "temperature": "0.2"
    }))).json()  # fmt: skip
    assert verbose["task"] == "transcribe" and verbose["language"] == "en"
    assert wer("Good morning.", verbose["text"]) == 0
    assert verbose["segments"][0]["id"] == 0 and verbose["duration"] > 0.5
    text = await api.post("/v1/audio/transcriptions", **upload(speech, response_format="text"))
    assert text.headers["content-type"].startswith("text/plain")
    assert text.text == verbose["text"] + "\n"
    srt = await api.post("/v1/audio/transcriptions", **upload(speech, response_format="srt"))
    assert srt.text.startswith("1\n00:00:00,000 --> 00:00:0") and verbose["text"] in srt.text
    vtt = await api.post("/v1/audio/transcriptions", **upload(speech, response_format="vtt"))
    assert vtt.text.startswith("WEBVTT\n\n00:00:00.000 --> ")


def test_subtitle_timestamps() -> None:
    segments = [
        {"start": 0.0, "end": 1.5, "text": "one"},
        {"start": 3661.25, "end": 3662.0, "text": "two"},
    ]
    assert subtitles(segments, "srt") == (
        "1\n00:00:00,000 --> 00:00:01,500\none\n\n2\n01:01:01,250 --> 01:01:02,000\ntwo\n"
    )
    assert subtitles(segments, "vtt").splitlines()[2] == "00:00:00.000 --> 00:00:01.500"


async def test_ocr_route_reads_text_and_says_what_it_is(api: httpx.AsyncClient) -> None:
    image = png("Invoice 4711", "Total due: 250 EUR")
    r = await api.post("/v1/images/ocr", files={"image": ("scan.png", image, "image/png")})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["text"] == "Invoice 4711\nTotal due: 250 EUR"
    assert [line["text"] for line in body["lines"]] == body["text"].splitlines()
    assert body["note"] == "text read by OCR; the picture itself is not understood"


# -- every bad upload: a clear 4xx naming the field ----------------------------------
CORRUPT_WAV = b"RIFF\x24\x00\x00\x00WAVEjunk" + bytes(range(256)) * 4


@pytest.mark.parametrize(
    ("request_args", "status", "param", "words"),
    [
        (upload(wav(1.0), "notes.txt", "text/plain"), 415, "file", ("text/plain",)),
        (upload(png("x"), "x.png", "image/png"), 415, "file", ("image/png",)),
        (upload(wav(1.0) + bytes(600_000)), 413, "file", ("600000",)),
        (upload(CORRUPT_WAV), 400, "file", ("cannot read",)),
        (upload(b"definitely not audio", "a.wav"), 400, "file", ("corrupt",)),
        (upload(wav(16.0, rate=8000)), 400, "file", ("limit of 15 seconds",)),
        (upload(b""), 400, "file", ("empty",)),
        ({"data": {"model": "whisper-1"}}, 400, "file", ("missing",)),
        ({"files": {"file": ("a.wav", wav(0.5), "audio/wav")}}, 400, "model", ("missing",)),
        (upload(wav(0.5), response_format="mp3"), 400, "response_format", ("verbose_json",)),
        (upload(wav(0.5), language="klingon"), 400, "language", ("ISO-639-1",)),
    ],
    ids=[
        "mime-text",
        "an-image",
        "oversize",
        "corrupt-wav",
        "junk",
        "too-long",
        "empty",
        "no-file",
        "no-model",
        "bad-format",
        "bad-language",
    ],
)
async def test_bad_audio_uploads(
    api: httpx.AsyncClient,
    request_args: dict[str, Any],
    status: int,
    param: str,
    words: tuple[str, ...],
) -> None:
    r = await api.post("/v1/audio/transcriptions", **request_args)
    assert_error(r, status, param, *words)
    assert (await api.get("/healthz")).json()["status"] == "ok"  # nothing broke


@pytest.mark.parametrize(
    ("files", "status", "words"),
    [
        ({"image": ("x.png", png("x")[:200], "image/png")}, 400, ("cannot read",)),
        ({"image": ("x.png", b"\x89PNG\r\n\x1a\n" + bytes(99), "image/png")}, 400, ("cannot",)),
        ({"image": ("x.pdf", png("x"), "application/pdf")}, 415, ("application/pdf",)),
        ({"image": ("x.wav", wav(0.2), "application/octet-stream")}, 415, ("audio/wav",)),
        ({"image": ("x.png", png("x") + bytes(200_000), "image/png")}, 413, ("200000",)),
        ({"image": ("x.png", b"", "image/png")}, 400, ("empty",)),
        ({"picture": ("x.png", png("x"), "image/png")}, 400, ("missing",)),
    ],
    ids=["truncated-png", "corrupt-png", "mime-pdf", "audio", "oversize", "empty", "no-field"],
)
async def test_bad_image_uploads(
    api: httpx.AsyncClient, files: dict[str, Any], status: int, words: tuple[str, ...]
) -> None:
    assert_error(await api.post("/v1/images/ocr", files=files), status, "image", *words)


@pytest.mark.parametrize(
    ("body", "param", "words"),
    [
        ({"input": "hi", "response_format": "mp3"}, "response_format", ("wav",)),
        ({"input": ""}, "input", ("empty",)),
        ({"input": "x" * 5000}, "input", ("limit is 4096",)),
        ({"input": "hi", "voice": "nobody"}, "voice", ("alloy",)),
        ({"input": "hi", "speed": 9}, "speed", ()),
        ({"model": "tts-1"}, "input", ("missing",)),
    ],
    ids=["mp3", "empty", "too-long", "voice", "speed", "no-input"],
)
async def test_bad_speech_requests(
    api: httpx.AsyncClient, body: dict[str, Any], param: str, words: tuple[str, ...]
) -> None:
    assert_error(await api.post("/v1/audio/speech", json=body), 400, param, *words)


async def test_a_body_over_the_kernel_limit_is_413(tmp_path: Path) -> None:
    async with app_client(tmp_path, max_body_bytes=100_000) as (api, _):
        r = await api.post("/v1/audio/transcriptions", **upload(wav(5.0)))
        assert_error(r, 413, "body")


# -- the pool bound, accounting, /metrics ---------------------------------------------
async def test_a_full_perception_pool_is_429(tmp_path: Path) -> None:
    stt = BlockingStt()
    async with app_client(tmp_path, stt, perception_workers=1, perception_queue=1) as (api, k):
        post = api.post("/v1/audio/transcriptions", **upload(wav(0.2)))
        first = asyncio.ensure_future(post)
        second = asyncio.ensure_future(api.post("/v1/audio/transcriptions", **upload(wav(0.2))))
        assert await asyncio.to_thread(stt.started.acquire, True, 30)
        while k.perception.pool.busy < 2:
            await asyncio.sleep(0.01)
        r = await api.post("/v1/audio/transcriptions", **upload(wav(0.2)))
        assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1
        assert r.json()["error"]["code"] == "queue_full"
        gauge = (await api.get("/metrics")).text
        assert "llmos:perception_jobs 2.0" in gauge
        stt.release.set()
        assert [x.status_code for x in await asyncio.gather(first, second)] == [200, 200]
        assert (await first).json()["text"] == "done"


async def test_use_is_accounted_to_the_process_and_in_metrics(api: httpx.AsyncClient) -> None:
    spawned = (await api.post("/v1/processes", json={"name": "listener"})).json()
    agent = {"Authorization": f"Bearer {spawned['token']}"}
    speech = await api.post("/v1/audio/speech", json={"input": "Hello there."}, headers=agent)
    r = await api.post("/v1/audio/transcriptions", **upload(speech.content), headers=agent)
    assert r.status_code == 200, r.text
    image = {"image": ("a.png", png("Hello"), "image/png")}
    assert (await api.post("/v1/images/ocr", files=image, headers=agent)).status_code == 200
    proc = (await api.get(f"/v1/processes/{spawned['pid']}")).json()
    use = proc["perception"]
    assert use["tts"]["requests"] == 1 and use["tts"]["chars"] == len("Hello there.")
    assert use["stt"]["requests"] == 1
    assert use["stt"]["audio_s"] == pytest.approx(wav_info(speech.content)[2], abs=0.1)
    assert use["ocr"] == {"requests": 1, "seconds": use["ocr"]["seconds"], "images": 1}
    assert all(use[kind]["seconds"] > 0 for kind in ("stt", "ocr", "tts"))
    metrics = (await api.get("/metrics")).text
    for kind in ("stt", "ocr", "tts"):
        assert f'llmos:perception_requests_total{{kind="{kind}"}} 1.0' in metrics
        line = next(x for x in metrics.splitlines() if x.startswith(
            f'llmos:perception_seconds_total{{kind="{kind}"}}'))  # fmt: skip
        assert float(line.split()[-1]) > 0


async def test_the_syscalls_take_base64_from_json_front_ends(api: httpx.AsyncClient) -> None:
    r = await api.post("/v1/syscalls/audio.speak", json={"input": "Good morning."})
    speech = base64.b64decode(r.json()["result"]["audio"])
    data_url = "data:audio/wav;base64," + base64.b64encode(speech).decode()
    heard = await api.post("/v1/syscalls/audio.transcribe", json={"file": data_url})
    assert wer("Good morning.", heard.json()["result"]["text"]) == 0
    image = base64.b64encode(png("Seven")).decode()
    read = await api.post("/v1/syscalls/image.ocr", json={"image": image})
    assert read.json()["result"]["text"] == "Seven"
    bad = await api.post("/v1/syscalls/image.ocr", json={"image": "not base64!"})
    assert_error(bad, 400, "image", "base64")
    bad = await api.post("/v1/syscalls/audio.transcribe", json={"file": 12})
    assert_error(bad, 400, "file")
    # Viewers only read; perception spends the machine's time: refused.
    assert (await api.post("/v1/users", json={"name": "eve", "role": "viewer"})).is_success
    token = (await api.post("/v1/tokens", json={"user": "eve"})).json()["token"]
    headers = {"Authorization": f"Bearer {token}"}
    r = await api.post("/v1/audio/speech", json={"input": "hi"}, headers=headers)
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"


# -- SDK and CLI, against a live server ----------------------------------------------
def test_sdk_transcribe_speak_and_ocr(server: LiveServer, client: Client, tmp_path: Path) -> None:
    speech = client.speak(SENTENCE, voice="nova")
    path = tmp_path / "meeting.wav"
    path.write_bytes(speech)
    heard = client.transcribe(path, language="en")
    assert wer(SENTENCE, heard["text"]) <= 0.25 and heard["language"] == "en"
    assert client.transcribe(speech)["text"] == heard["text"]  # bytes work as well
    assert client.ocr(png("Room 101"))["text"] == "Room 101"
    with pytest.raises(ApiError) as info:
        client.speak("hi", voice="nobody")
    assert info.value.status == 400 and "voice" in info.value.message


async def test_async_sdk(server: LiveServer) -> None:
    async with AsyncClient(server.url, server.token) as client:
        speech = await client.speak("Good morning.")
        assert wer("Good morning.", (await client.transcribe(speech))["text"]) == 0
        assert (await client.ocr(png("Async")))["text"] == "Async"
        with pytest.raises(ApiError) as info:
            await client.transcribe(b"junk")
        assert info.value.status == 400


def cli(server: LiveServer, *args: str) -> Any:
    return CliRunner().invoke(build_app(), [*args, "--url", server.url, "--token", server.token])


def test_cli_say_transcribe_and_ocr(server: LiveServer, tmp_path: Path) -> None:
    out = tmp_path / "hello.wav"
    said = cli(server, "say", "Hello from the command line.", "-o", str(out), "--voice", "alloy")
    assert said.exit_code == 0, said.output
    assert f"wrote {out}" in said.stdout and wav_info(out.read_bytes())[2] > 1
    heard = cli(server, "transcribe", str(out))
    assert heard.exit_code == 0, heard.output
    assert wer("Hello from the command line.", heard.stdout) <= 0.25
    verbose = cli(server, "transcribe", str(out), "--json")
    assert '"segments"' in verbose.stdout
    image = tmp_path / "sign.png"
    image.write_bytes(png("No parking"))
    read = cli(server, "ocr", str(image))
    assert read.exit_code == 0 and read.stdout == "No parking\n"


def test_cli_bad_files_fail_cleanly(server: LiveServer, tmp_path: Path) -> None:
    missing = cli(server, "transcribe", str(tmp_path / "nope.wav"))
    assert missing.exit_code == 2 and "not found" in missing.stderr
    corrupt = tmp_path / "bad.wav"
    corrupt.write_bytes(CORRUPT_WAV)
    bad = cli(server, "transcribe", str(corrupt))
    assert bad.exit_code == 1 and bad.stderr.startswith("error: cannot read the file")
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    wrong = cli(server, "transcribe", str(text))
    assert wrong.exit_code == 1 and "text/plain" in wrong.stderr
    empty = cli(server, "say", "", "-o", str(tmp_path / "x.wav"))
    assert empty.exit_code == 1 and "empty" in empty.stderr
    assert not (tmp_path / "x.wav").exists()
    folder = cli(server, "say", "hi", "-o", str(tmp_path))
    assert folder.exit_code == 2 and "folder" in folder.stderr
    no_image = cli(server, "chat", "what is this?", "--image", str(tmp_path / "none.png"))
    assert no_image.exit_code == 2 and "not found" in no_image.stderr
    nothing = cli(server, "chat")
    assert nothing.exit_code == 2 and "--audio" in nothing.stderr
    for result in (missing, bad, wrong, empty, folder, no_image, nothing):
        assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("option", "words"),
    [(("--tts-engine", "festival"), "festival"), (("--stt-model", "/nonexistent"), "model.bin")],
)
def test_up_refuses_bad_perception_settings(option: tuple[str, str], words: str) -> None:
    result = CliRunner().invoke(build_app(), ["up", "--device", "mock", *option])
    assert result.exit_code == 2 and words in result.output


def test_chat_media_parts_are_openai_parts(tmp_path: Path) -> None:
    audio, image = tmp_path / "q.wav", tmp_path / "p.png"
    audio.write_bytes(wav(0.1))
    image.write_bytes(png("x"))
    sound, picture = media_parts(audio, image)
    assert sound == {
        "type": "input_audio",
        "input_audio": {"data": base64.b64encode(wav(0.1)).decode(), "format": "wav"},
    }
    assert picture["type"] == "image_url"
    assert picture["image_url"]["url"].startswith("data:image/png;base64,iVBOR")
    assert media_parts(None, None) == []


def test_sh_runs_a_spoken_command(server: LiveServer, client: Client, tmp_path: Path) -> None:
    spoken = tmp_path / "command.wav"
    spoken.write_bytes(client.speak("List processes."))
    result = cli(server, "sh", "--audio", str(spoken), "--no-model", "--json")
    assert result.exit_code == 0, result.output
    assert '"proc.list"' in result.stdout
    both = cli(server, "sh", "list", "processes", "--audio", str(spoken))
    assert both.exit_code == 2 and "not both" in both.output
    silence = tmp_path / "silence.wav"
    silence.write_bytes(wav(1.0, freq=0))
    quiet = cli(server, "sh", "--audio", str(silence), "--no-model")
    assert quiet.exit_code == 1 and "heard no words" in quiet.output

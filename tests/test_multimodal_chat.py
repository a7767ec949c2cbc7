"""Chat with image and audio parts (kernel/media_parts.py): every bad part gets a clear
4xx naming it; for a text-only model the parts are converted through perception
(OCR text, a transcript) and the answer says so. First with stand-in drivers (fast),
then with the real ones and the real SmolLM2 (marked `model`)."""

from __future__ import annotations

import base64
import io
import wave
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from llmos.api import create_app
from llmos.devices import LlamaCppDevice, MockDevice, default_model_path
from llmos.devices.media import OCR_NOTE, OcrText, Transcript
from llmos.errors import DeviceError, Unavailable
from llmos.kernel import Kernel
from llmos.kernel.perception import Perception
from llmos.params import MAX_MEDIA_PARTS, Settings
from llmos.types import Finished, SamplingParams, Snapshot, Token
from tests import _media
from tests.test_capabilities import PNG, chat, image_part

ADMIN = "adm"
LIMITS: dict[str, Any] = {"max_image_bytes": 4096, "max_audio_bytes": 200_000, "max_audio_s": 2.0}


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def audio_part(data: bytes, fmt: str = "wav") -> dict[str, Any]:
    return {"type": "input_audio", "input_audio": {"data": b64(data), "format": fmt}}


def silence(seconds: float, rate: int = 8000) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"\0\0" * int(seconds * rate))
    return buf.getvalue()


@dataclass
class FakeOcr:
    text: str = "HELLO WORLD"
    error: Exception | None = None
    seen: list[bytes] = field(default_factory=list)

    def read(self, image: bytes, max_pixels: int) -> OcrText:
        if self.error is not None:
            raise self.error
        self.seen.append(image)
        return OcrText(self.text, [(self.text, 0.99)])


@dataclass
class FakeStt:
    text: str = "turn on the lights"
    seen: list[bytes] = field(default_factory=list)

    def transcribe(self, audio: bytes, language: str | None, max_s: float) -> Transcript:
        self.seen.append(audio)
        return Transcript(self.text, "en", 0.5, [(0.0, 0.5, self.text)])


@dataclass
class Chat:
    kernel: Kernel
    client: httpx.AsyncClient
    text: MockDevice
    ocr: FakeOcr
    stt: FakeStt

    async def post(self, body: dict[str, Any]) -> httpx.Response:
        return await self.client.post("/v1/chat/completions", json=body)

    def prompt(self) -> str:
        """The last prompt the text device was given, as text."""
        return "".join(chr(i) for i in self.text.started_prompts[-1])


@pytest_asyncio.fixture
async def textonly(tmp_path: Path) -> AsyncIterator[Chat]:
    """A text-only model (the mock) with stand-in OCR and speech-to-text drivers."""
    text = MockDevice(name="text0", slots=2, context_length=1024, token_delay=0.001)
    kernel = Kernel(Settings(home=tmp_path, admin_token=ADMIN, **LIMITS), [text])
    ocr, stt = FakeOcr(), FakeStt()
    kernel.perception.stop()
    kernel.perception = Perception(kernel.settings, kernel.store.db, ocr=ocr, stt=stt)
    await kernel.start()
    transport = httpx.ASGITransport(app=create_app(kernel, manage_kernel=False))
    headers = {"Authorization": f"Bearer {ADMIN}"}
    try:
        async with httpx.AsyncClient(
            transport=transport, base_url="http://llmos", headers=headers
        ) as client:
            yield Chat(kernel, client, text, ocr, stt)
    finally:
        await kernel.stop()


# -- bad parts -----------------------------------------------------------------------
PART = "messages[0].content[1]"
WAV = silence(0.5)
BAD: list[tuple[str, Any, int, str, str]] = [
    # (name, a part or a whole body, status, param, words of the message)
    (
        "http URL",
        {"type": "image_url", "image_url": {"url": "http://example.com/a.png"}},
        400,
        PART,
        "allow_media_fetch",
    ),
    (
        "file URL",
        {"type": "image_url", "image_url": {"url": "file:///etc/passwd"}},
        400,
        PART,
        "data:",
    ),
    ("no url", {"type": "image_url", "image_url": {}}, 400, PART, "image_url"),
    ("url not in an object", {"type": "image_url", "image_url": "data:x"}, 400, PART, "image_url"),
    (
        "not base64",
        {"type": "image_url", "image_url": {"url": "data:image/png,abc"}},
        400,
        PART,
        "base64",
    ),
    (
        "bad base64",
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,@@@@"}},
        400,
        PART,
        "not valid base64",
    ),
    (
        "empty image",
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,"}},
        400,
        PART,
        "empty",
    ),
    ("oversize image", image_part(PNG + bytes(5000)), 413, PART, "4096 bytes"),
    ("image just over the limit", image_part(PNG.ljust(4097, b"\0")), 413, PART, "4097 bytes"),
    ("image type not taken", image_part(PNG, "image/tiff"), 415, PART, "image/tiff"),
    ("corrupt image", image_part(b"this is no picture at all"), 400, PART, "corrupt"),
    ("audio sent as an image", image_part(silence(0.01)), 415, PART, "audio/wav"),
    (
        "no audio format",
        {"type": "input_audio", "input_audio": {"data": b64(WAV)}},
        400,
        PART,
        "format",
    ),
    ("audio format not taken", audio_part(WAV, "aiff"), 415, PART, "aiff"),
    (
        "bad audio base64",
        audio_part(WAV) | {"input_audio": {"data": "%%", "format": "wav"}},
        400,
        PART,
        "base64",
    ),
    ("corrupt WAV", audio_part(b"RIFF\x24\0\0\0WAVEfmt junk"), 400, PART, "WAV"),
    ("audio too long", audio_part(silence(3.0)), 400, PART, "max_audio_s"),
    ("oversize audio", audio_part(silence(14.0, 8000)), 413, PART, "200000 bytes"),
    ("an image sent as audio", audio_part(PNG), 415, PART, "image/png"),
    ("unknown part type", {"type": "video_url", "video_url": {"url": "x"}}, 400, PART, "video_url"),
    ("part not an object", "a bare string", 400, PART, "type must be"),
    (
        "a text part without text beside an image",
        {
            "model": "mock",
            "messages": [{"role": "user", "content": [{"type": "text", "text": 5}, image_part()]}],
        },
        400,
        "messages[0].content[0]",
        "string 'text'",
    ),
    (
        "image in an assistant message",
        {
            "model": "mock",
            "messages": [
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": [image_part()]},
            ],
        },
        400,
        "messages[1].content[0]",
        "user messages only",
    ),
    (
        "too many parts",
        chat(*[image_part()] * (MAX_MEDIA_PARTS + 1)),
        400,
        f"messages[0].content[{MAX_MEDIA_PARTS + 1}]",
        f"at most {MAX_MEDIA_PARTS}",
    ),
    ("unknown media option", chat(image_part(), llmos={"media": "maybe"}), 400, "llmos.media", ""),
]


@pytest.mark.parametrize(("name", "part", "status", "param", "said"), BAD, ids=[b[0] for b in BAD])
async def test_bad_parts_get_a_clear_4xx(
    textonly: Chat, name: str, part: Any, status: int, param: str, said: str
) -> None:
    body = part if isinstance(part, dict) and "model" in part else chat(part)
    r = await textonly.post(body)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["param"] == param and said in err["message"], err
    assert set(err) == {"message", "type", "param", "code"}


async def test_bad_parts_create_nothing_and_do_not_hurt_the_kernel(textonly: Chat) -> None:
    for _, part, _, _, _ in BAD:
        await textonly.post(part if isinstance(part, dict) and "model" in part else chat(part))
    assert textonly.kernel.procs.list() == []
    assert textonly.text.started_prompts == [] and textonly.ocr.seen == []
    r = await textonly.post(chat(image_part()))  # still serving
    assert r.status_code == 200, r.text


# -- conversion for a text-only model ------------------------------------------------
async def test_an_image_is_read_by_ocr_for_a_text_model(textonly: Chat) -> None:
    r = await textonly.post(chat(image_part()))
    assert r.status_code == 200, r.text
    (entry,) = r.json()["llmos"]["media"]
    assert entry == {
        "part": PART,
        "type": "image_url",
        "handled": "ocr",
        "text": "HELLO WORLD",
        "note": OCR_NOTE,  # it reads text, not pictures
        "seconds": entry["seconds"],
    }
    assert textonly.ocr.seen == [PNG]
    prompt = textonly.prompt()
    assert (
        "What is in the picture?\n[The user attached an image; text read from it by OCR: "
        "HELLO WORLD]" in prompt
    )
    (proc,) = textonly.kernel.procs.list()
    assert textonly.kernel.perception.usage(proc.pid)["ocr"]["requests"] == 1  # accounted


async def test_the_syscall_route_says_how_parts_were_taken(textonly: Chat) -> None:
    args = {**chat(image_part()), "media": "convert"}
    r = await textonly.client.post("/v1/syscalls/llm.chat", json=args)
    assert r.status_code == 200, r.text
    result = r.json()["result"]
    assert result["media"][0]["handled"] == "ocr" and result["text"]


async def test_an_image_without_text_is_said_to_have_none(textonly: Chat) -> None:
    textonly.ocr.text = ""
    assert (await textonly.post(chat(image_part()))).status_code == 200
    assert "[The user attached an image; OCR found no text in it.]" in textonly.prompt()


async def test_audio_is_transcribed_for_a_text_model(textonly: Chat) -> None:
    r = await textonly.post(chat(audio_part(WAV), text="Do it."))
    assert r.status_code == 200, r.text
    (entry,) = r.json()["llmos"]["media"]
    assert entry["handled"] == "transcript" and entry["text"] == "turn on the lights"
    assert entry["language"] == "en" and entry["duration_s"] == 0.5
    assert textonly.stt.seen == [WAV]
    assert "Do it.\n[Transcript of the user's audio: turn on the lights]" in textonly.prompt()


async def test_several_parts_each_become_their_note_in_order(textonly: Chat) -> None:
    body = chat(image_part(), audio_part(WAV), text="Both:")
    r = await textonly.post(body)
    assert [e["handled"] for e in r.json()["llmos"]["media"]] == ["ocr", "transcript"]
    assert (
        "Both:\n[The user attached an image; text read from it by OCR: HELLO WORLD]\n"
        "[Transcript of the user's audio: turn on the lights]" in textonly.prompt()
    )


async def test_a_missing_converter_names_the_capability(textonly: Chat) -> None:
    textonly.ocr.error = Unavailable("rapidocr is not installed (pip install 'llmos[ocr]')")
    r = await textonly.post(chat(image_part()))
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["param"] == PART and err["code"] == "capability"
    assert "has the 'vision' capability" in err["message"]
    assert "cannot be converted: rapidocr is not installed" in err["message"]


async def test_native_only_refuses_instead_of_converting(textonly: Chat) -> None:
    r = await textonly.post(chat(audio_part(WAV), llmos={"media": "native"}))
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["param"] == PART and "'audio_in' capability" in err["message"]
    assert textonly.stt.seen == []


async def test_convert_is_used_even_where_a_vision_device_exists(tmp_path: Path) -> None:
    text = MockDevice(name="text0")
    vision = MockDevice(name="vis0", capabilities=("text", "vision"))
    kernel = Kernel(Settings(home=tmp_path, admin_token=ADMIN), [text, vision])
    kernel.perception.stop()
    kernel.perception = Perception(kernel.settings, kernel.store.db, ocr=FakeOcr("A SIGN"))
    await kernel.start()
    admin = kernel.authenticate(ADMIN)
    try:
        req = await kernel.call(
            "llm.chat", admin, {**chat(image_part(), max_tokens=4), "media": "convert"}
        )
        assert (await req.outcome()).error is None
        assert req.media is not None and req.media[0]["handled"] == "ocr"
        assert req.snapshot.messages is None  # converted: tokenized, resumable
        assert vision.started_messages == []
        auto = await kernel.call("llm.chat", admin, chat(image_part(), max_tokens=4))
        assert (await auto.outcome()).error is None
        assert auto.device == "vis0" and auto.media == [
            {"part": PART, "type": "image_url", "handled": "native", "device": "vis0"}
        ]
    finally:
        await kernel.stop()


# -- with the real drivers and the real SmolLM2 ---------------------------------------
MODEL = "SmolLM2-135M-Instruct"


@pytest_asyncio.fixture
async def real(tmp_path: Path) -> AsyncIterator[Chat]:
    dev = LlamaCppDevice(default_model_path(), slots=1, ctx=1024, threads=2, model=MODEL)
    kernel = Kernel(Settings(home=tmp_path, admin_token=ADMIN, threads=2), [dev])
    drivers = _media.drivers()  # loaded once per session
    kernel.perception.stop()
    kernel.perception = Perception(kernel.settings, kernel.store.db, **drivers)
    await kernel.start()
    transport = httpx.ASGITransport(app=create_app(kernel, manage_kernel=False))
    headers = {"Authorization": f"Bearer {ADMIN}"}
    try:
        async with httpx.AsyncClient(
            transport=transport, base_url="http://llmos", headers=headers, timeout=120
        ) as client:
            yield Chat(kernel, client, MockDevice(), drivers["ocr"], drivers["stt"])
    finally:
        await kernel.stop()


def real_chat(part: dict[str, Any], question: str) -> dict[str, Any]:
    content = [part, {"type": "text", "text": question}]
    return {
        "model": MODEL,
        "messages": [{"role": "user", "content": content}],
        "max_tokens": 24,
        "temperature": 0,
    }


@pytest.mark.model
async def test_real_image_text_is_read_and_answered_from(real: Chat) -> None:
    image = image_part(_media.png("The secret word is PINEAPPLE"))
    r = await real.post(real_chat(image, "What is the secret word? Answer with one word."))
    assert r.status_code == 200, r.text
    out = r.json()
    (entry,) = out["llmos"]["media"]
    assert entry["handled"] == "ocr" and "PINEAPPLE" in entry["text"]
    assert "pineapple" in out["choices"][0]["message"]["content"].lower()


@pytest.mark.model
async def test_real_audio_is_answered_from_its_transcript(real: Chat) -> None:
    speaker = _media.drivers()["tts"]
    speech = speaker.speak("The meeting is on Tuesday at noon.", speaker.check_voice(None), 1.0)
    question = "On which day is the meeting? Answer with one word."
    r = await real.post(real_chat(audio_part(speech), question))
    assert r.status_code == 200, r.text
    out = r.json()
    (entry,) = out["llmos"]["media"]
    assert entry["handled"] == "transcript" and "tuesday" in entry["text"].lower()
    assert "tuesday" in out["choices"][0]["message"]["content"].lower()


@pytest.mark.model
async def test_real_corrupt_image_is_a_400_from_the_reader(real: Chat) -> None:
    truncated = _media.png("cut short")[:120]  # a PNG's signature, then nothing whole
    r = await real.post(real_chat(image_part(truncated), "What does it say?"))
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == "messages[0].content[0]"


@pytest.mark.model
async def test_the_embedded_engine_takes_a_chat_whole(real: Chat) -> None:
    """The path a vision request takes on an embedded VLM (mmproj): messages to
    handle_chat_completions, text pieces back. Checked here with SmolLM2 and text
    parts; an image part without a projector is refused by llama.cpp itself."""
    (dev,) = real.kernel.devices
    parts = [{"type": "text", "text": "Say hello."}]
    snapshot = Snapshot(
        [],
        SamplingParams(max_tokens=8, temperature=0),
        messages=[{"role": "user", "content": parts}],
    )
    events = [e async for e in dev.generate(snapshot)]
    tokens = [e for e in events if isinstance(e, Token)]
    assert tokens and all(t.id == -1 for t in tokens)  # text pieces, no ids
    assert isinstance(events[-1], Finished) and events[-1].reason in ("stop", "length")
    assert "".join(t.text for t in tokens).strip()
    snapshot.messages = [{"role": "user", "content": [*parts, image_part()]}]
    with pytest.raises(DeviceError, match="image input is not supported"):
        async for _ in dev.generate(snapshot):
            pass

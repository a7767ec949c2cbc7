"""Perception in the kernel (kernel/perception.py and its drivers): real Whisper
tiny.en, RapidOCR and espeak-ng; limits and bad input; the bounded worker pool;
accounting to the calling process."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import io
import struct
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from llmos.devices import MockDevice
from llmos.devices import tts as tts_module
from llmos.devices.media import BadMedia, Transcript, normalise, sniff
from llmos.devices.ocr import group_lines
from llmos.devices.stt import decode
from llmos.devices.tts import EspeakSpeaker, fix_wav_header
from llmos.errors import (
    InvalidRequest,
    LlmosError,
    Overloaded,
    PayloadTooLarge,
    Unavailable,
    UnsupportedMediaType,
)
from llmos.kernel import Kernel
from llmos.kernel.perception import Perception
from llmos.kernel.tokens import Caller
from llmos.params import Settings
from tests import _media
from tests._media import SENTENCE, png, wav, wav_info, wer
from tests.test_kernel import make


async def kernel_with(tmp_path: Path, **settings: object) -> tuple[Kernel, Caller]:
    """A mock-device kernel whose perception uses the session's real drivers."""
    kernel, _, admin = await make(tmp_path)
    for key, value in settings.items():
        setattr(kernel.settings, key, value)
    kernel.perception.stop()
    kernel.perception = Perception(kernel.settings, kernel.store.db, **_media.drivers())
    return kernel, admin


async def fails(coro: object, kind: type[LlmosError], param: str | None) -> LlmosError:
    with pytest.raises(kind) as info:
        await coro  # type: ignore[misc]
    assert info.value.param == param, info.value.message
    return info.value


# -- types from bytes ----------------------------------------------------------------
@pytest.mark.parametrize(
    ("head", "kind"),
    [
        (b"RIFF\x10\x00\x00\x00WAVEfmt ", "audio/wav"),
        (b"RIFF\x10\x00\x00\x00WEBPVP8 ", "image/webp"),
        (b"fLaC\x00\x00\x00\x22", "audio/flac"),
        (b"OggS\x00\x02", "audio/ogg"),
        (b"\x1a\x45\xdf\xa3\x9f", "audio/webm"),
        (b"\x00\x00\x00\x20ftypM4A ", "audio/mp4"),
        (b"ID3\x04\x00", "audio/mpeg"),
        (b"\xff\xfb\x90\x64", "audio/mpeg"),
        (b"\x89PNG\r\n\x1a\n\x00", "image/png"),
        (b"\xff\xd8\xff\xe0\x00\x10JFIF", "image/jpeg"),
        (b"GIF89a\x01\x00", "image/gif"),
        (b"BM\x36\x00", "image/bmp"),
        (b"hello world", None),
        (b"", None),
    ],
)
def test_types_are_told_from_the_bytes(head: bytes, kind: str | None) -> None:
    assert sniff(head) == kind


def test_claimed_types_are_normalised() -> None:
    assert normalise("WAV") == normalise("audio/x-wav") == "audio/wav"
    assert normalise("audio/mpeg; charset=binary") == normalise("mp3") == "audio/mpeg"
    assert normalise("application/octet-stream") is None and normalise(None) is None
    assert normalise("text/plain") == "text/plain"  # kept: the allowed list refuses it


# -- the real models -----------------------------------------------------------------
async def test_speech_round_trip_and_accounting(tmp_path: Path) -> None:
    kernel, admin = await kernel_with(tmp_path)
    proc = kernel.process_of(admin)
    speech = await kernel.perception.speak(proc, SENTENCE, "alloy")
    channels, width, seconds = wav_info(speech)
    assert (channels, width) == (1, 2) and 2.0 < seconds < 10.0
    text = await kernel.perception.transcribe(proc, speech, "wav")
    error = wer(SENTENCE, text.text)
    print(f"\nWER {error:.3f}: {text.text!r}")
    assert error <= 0.25
    assert text.language == "en" and text.duration_s == pytest.approx(seconds, abs=0.1)
    assert text.segments and text.segments[-1][1] <= seconds + 0.5
    usage = kernel.perception.usage(proc.pid)
    assert usage["tts"]["requests"] == 1 and usage["tts"]["chars"] == len(SENTENCE)
    assert usage["stt"]["requests"] == 1
    assert usage["stt"]["audio_s"] == pytest.approx(seconds, abs=0.1)
    assert usage["stt"]["seconds"] > 0 and usage["ocr"]["requests"] == 0
    assert kernel.perception.totals["stt"].requests == 1
    await kernel.stop()


async def test_ocr_reads_rendered_text(tmp_path: Path) -> None:
    kernel, admin = await kernel_with(tmp_path)
    proc = kernel.process_of(admin)
    out = await kernel.perception.ocr(proc, png("Invoice 4711", "Total due: 250 EUR"))
    assert out.text.splitlines() == ["Invoice 4711", "Total due: 250 EUR"]
    assert all(confidence > 0.8 for _, confidence in out.lines)
    assert "not understood" in out.note and out.seconds > 0
    # Dark text on a clear background stays readable (composited onto white), and JPEG.
    clear = await kernel.perception.ocr(proc, png("Transparent 12", mode="RGBA"))
    assert clear.text == "Transparent 12"
    jpeg = await kernel.perception.ocr(proc, png("Quarterly report", fmt="JPEG"), fmt="jpg")
    assert jpeg.text == "Quarterly report"
    blank = await kernel.perception.ocr(proc, png(""))
    assert blank.text == "" and blank.lines == []
    assert kernel.perception.usage(proc.pid)["ocr"]["images"] == 4
    await kernel.stop()


async def test_bad_audio_is_refused_naming_the_field(tmp_path: Path) -> None:
    kernel, admin = await kernel_with(tmp_path, max_audio_bytes=100_000, max_audio_s=2.0)
    proc = kernel.process_of(admin)
    p = kernel.perception
    await fails(p.transcribe(proc, b"", param="file"), InvalidRequest, "file")
    big = await fails(p.transcribe(proc, wav(4.0), param="file"), PayloadTooLarge, "file")
    assert "100000" in big.message and big.status == 413
    claimed = await fails(p.transcribe(proc, wav(1), "text/plain"), UnsupportedMediaType, "file")
    assert claimed.status == 415 and "audio/wav" in claimed.message
    await fails(p.transcribe(proc, png("x")), UnsupportedMediaType, "file")  # an image
    junk = await fails(p.transcribe(proc, b"hello, not audio"), InvalidRequest, "file")
    assert "corrupt" in junk.message
    corrupt = b"RIFF\x24\x00\x00\x00WAVEjunk" + bytes(range(256)) * 4
    bad = await fails(p.transcribe(proc, corrupt, "wav", param="audio"), InvalidRequest, "audio")
    assert "cannot read" in bad.message
    empty = wav(0.0)
    assert sniff(empty) == "audio/wav"
    none = await fails(p.transcribe(proc, empty), InvalidRequest, "file")
    assert "no audio" in none.message
    long = await fails(p.transcribe(proc, wav(3.0)), InvalidRequest, "file")
    assert "limit of 2 seconds" in long.message
    await fails(p.transcribe(proc, wav(1.0), language="de"), InvalidRequest, "language")
    await fails(p.transcribe(proc, wav(1.0), language="english"), InvalidRequest, "language")
    # Failed decodes used a worker: they are accounted; the kernel still works.
    assert kernel.perception.usage(proc.pid)["stt"]["requests"] == 3
    ok = await p.transcribe(proc, wav(1.0, freq=0))
    assert ok.duration_s == pytest.approx(1.0, abs=0.05)
    await kernel.stop()


async def test_bad_images_are_refused_naming_the_field(tmp_path: Path) -> None:
    kernel, admin = await kernel_with(tmp_path, max_image_bytes=50_000)
    proc = kernel.process_of(admin)
    p = kernel.perception
    good = png("Hello")
    await fails(p.ocr(proc, b""), InvalidRequest, "image")
    await fails(p.ocr(proc, good + bytes(50_000)), PayloadTooLarge, "image")
    await fails(p.ocr(proc, good, fmt="application/pdf"), UnsupportedMediaType, "image")
    await fails(p.ocr(proc, wav(0.1), param="img"), UnsupportedMediaType, "img")
    truncated = await fails(p.ocr(proc, good[:200]), InvalidRequest, "image")
    assert "cannot read" in truncated.message
    await fails(p.ocr(proc, b"\x89PNG\r\n\x1a\n" + b"\x00" * 64), InvalidRequest, "image")
    await fails(p.ocr(proc, png("x", fmt="JPEG")[:300]), InvalidRequest, "image")
    # A small file that claims too many pixels is refused before it is decoded.
    bomb = Image.new("1", (8000, 8000))
    buf = io.BytesIO()
    bomb.save(buf, "PNG")
    assert len(buf.getvalue()) < 50_000
    big = await fails(p.ocr(proc, buf.getvalue()), PayloadTooLarge, "image")
    assert "8000x8000" in big.message
    await kernel.stop()


async def test_speak_checks_text_voice_and_speed(tmp_path: Path) -> None:
    kernel, admin = await kernel_with(tmp_path, max_speech_chars=100)
    proc = kernel.process_of(admin)
    p = kernel.perception
    await fails(p.speak(proc, "   "), InvalidRequest, "input")
    too_long = await fails(p.speak(proc, "a" * 101), InvalidRequest, "input")
    assert "limit is 100" in too_long.message
    await fails(p.speak(proc, "hi", "klingon"), InvalidRequest, "voice")
    await fails(p.speak(proc, "hi", "en-us+nosuchvariant"), InvalidRequest, "voice")
    await fails(p.speak(proc, "hi", "-v en"), InvalidRequest, "voice")
    await fails(p.speak(proc, "hi", speed=5.0), InvalidRequest, "speed")
    await fails(p.speak(proc, "hi", speed=True), InvalidRequest, "speed")  # type: ignore[arg-type]
    slow = wav_info(await p.speak(proc, "one two three four", "nova", speed=0.5))[2]
    fast = wav_info(await p.speak(proc, "one two three four", "en-gb+m3", speed=2.0))[2]
    assert slow > 1.5 * fast
    # Text that looks like an option is spoken, not obeyed (it goes in on stdin).
    assert wav_info(await p.speak(proc, "--help -w /tmp/x.wav", "de"))[2] > 0.5
    assert p.usage(proc.pid)["tts"]["requests"] == 3
    await kernel.stop()


def test_words_boxed_apart_are_put_back_into_lines() -> None:
    def box(x: float, y: float) -> np.ndarray:
        return np.array([[x, y], [x + 50, y], [x + 50, y + 20], [x, y + 20]], dtype=np.float32)

    boxes = [box(200, 102), box(10, 40), box(100, 98), box(80, 44)]
    texts, scores = ["world", "Total:", "hello", " 42 "], [0.9, 0.8, 0.95, 0.7]
    assert group_lines(boxes, texts, scores) == [("Total: 42", 0.7), ("hello world", 0.9)]
    assert group_lines([box(0, 0)], ["  "], [0.5]) == []


def test_wav_header_from_a_pipe_is_repaired() -> None:
    data = wav(0.5)
    broken = data[:4] + struct.pack("<I", 0x7FFFF000) + data[8:40]
    broken += struct.pack("<I", 0x7FFFF000) + data[44:]
    fixed = fix_wav_header(broken)
    assert fixed == data and wav_info(fixed)[2] == pytest.approx(0.5)
    # ... and the decoder does not trust such a header's length either.
    assert decode(broken, 1.0).size == 8000
    with pytest.raises(LlmosError):
        fix_wav_header(b"not a wav at all")


def test_decoding_stops_at_the_limit() -> None:
    with pytest.raises(BadMedia) as info:
        decode(wav(5.0), 1.0)
    assert "longer than 1 s" in str(info.value)
    assert decode(wav(1.0), 1.0).size == 16_000


def test_espeak_missing_is_a_clear_503(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tts_module.shutil, "which", lambda _: None)
    with pytest.raises(Unavailable) as info:
        EspeakSpeaker()
    assert info.value.status == 503 and "apt-get install espeak-ng" in info.value.message


# -- the pool ------------------------------------------------------------------------
class BlockingStt:
    """A stand-in speech model that holds its worker until released."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.started = threading.Semaphore(0)

    def transcribe(self, audio: bytes, language: str | None, max_s: float) -> Transcript:
        self.started.release()
        assert self.release.wait(30)
        return Transcript("done", "en", 1.0)


async def test_the_pool_is_bounded_and_a_full_pool_says_429(tmp_path: Path) -> None:
    kernel, _, admin = await make(tmp_path)
    kernel.settings.perception_workers, kernel.settings.perception_queue = 1, 1
    stt = BlockingStt()
    kernel.perception.stop()
    kernel.perception = p = Perception(kernel.settings, kernel.store.db, stt=stt)
    proc = kernel.process_of(admin)
    clip = wav(0.2)
    running = asyncio.create_task(p.transcribe(proc, clip))
    queued = asyncio.create_task(p.transcribe(proc, clip))
    assert await asyncio.to_thread(stt.started.acquire, True, 30)  # the first holds the one worker
    assert p.pool.busy == 2
    full = await fails(p.transcribe(proc, clip), Overloaded, None)
    assert full.status == 429 and full.retry_after >= 1  # type: ignore[attr-defined]
    # A caller that gives up does not free the worker it still occupies.
    running.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await running
    assert p.pool.busy == 2
    stt.release.set()
    assert (await queued).text == "done"
    for _ in range(100):
        if p.pool.busy == 0:
            break
        await asyncio.sleep(0.01)
    assert p.pool.busy == 0
    assert (await p.transcribe(proc, clip)).text == "done"  # room again
    await kernel.stop()


async def test_usage_survives_a_restart(tmp_path: Path) -> None:
    stt = BlockingStt()
    stt.release.set()
    kernel, _, admin = await make(tmp_path)
    kernel.perception.stop()
    kernel.perception = Perception(kernel.settings, kernel.store.db, stt=stt)
    spawned = await kernel.call("proc.spawn", admin, {"name": "listener"})
    agent = kernel.authenticate(spawned["token"])
    out = await kernel.call("audio.transcribe", agent, {"file": wav(0.2), "format": "wav"})
    assert out["text"] == "done" and out["pid"] == spawned["pid"]
    await kernel.stop()
    again = Kernel(Settings(home=tmp_path, admin_token="adm"), [MockDevice()])
    await again.start()
    got = await again.call("proc.get", again.authenticate("adm"), {"pid": spawned["pid"]})
    stt = got["perception"]["stt"]
    assert stt["requests"] == 1 and stt["audio_s"] == 1.0 and 0 <= stt["seconds"] < 5
    assert got["perception"]["ocr"]["requests"] == 0
    await again.stop()


# -- settings ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({"tts_engine": "festival"}, "tts_engine"),
        ({"audio_types": ("audio/wav", "audio/midi")}, "audio_types"),
        ({"image_types": ("image/tiff",)}, "image_types"),
        ({"max_audio_s": 0}, "max_audio_s"),
        ({"max_image_bytes": 0}, "max_image_bytes"),
        ({"perception_workers": 0}, "perception_workers"),
        ({"stt_model": Path("/nonexistent/whisper")}, "stt_model"),
    ],
)
def test_media_settings_are_validated(change: dict[str, object], param: str) -> None:
    settings = Settings(home=Path("/tmp"), **change)  # type: ignore[arg-type]
    with pytest.raises(InvalidRequest) as info:
        settings.validate()
    assert info.value.param == param


async def test_a_narrower_type_list_is_enforced(tmp_path: Path) -> None:
    kernel, admin = await kernel_with(tmp_path, image_types=("image/png",))
    proc = kernel.process_of(admin)
    jpeg = png("x", fmt="JPEG")
    refused = await fails(kernel.perception.ocr(proc, jpeg), UnsupportedMediaType, "image")
    assert "image/jpeg" in refused.message
    await kernel.stop()


@pytest.mark.skipif(importlib.util.find_spec("piper") is None, reason="the piper extra")
async def test_piper_speaks_what_whisper_hears(tmp_path: Path) -> None:
    from llmos.devices.tts import PiperSpeaker

    kernel, admin = await kernel_with(tmp_path)
    kernel.perception._tts = PiperSpeaker()
    proc = kernel.process_of(admin)
    speech = await kernel.perception.speak(proc, SENTENCE, "alloy")
    assert wav_info(speech)[:2] == (1, 2)
    text = await kernel.perception.transcribe(proc, speech)
    print(f"\npiper WER {wer(SENTENCE, text.text):.3f}: {text.text!r}")
    assert wer(SENTENCE, text.text) <= 0.25
    await fails(kernel.perception.speak(proc, "hi", "en-gb"), InvalidRequest, "voice")
    await kernel.stop()

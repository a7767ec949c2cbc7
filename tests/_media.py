"""Media for the perception tests: WAVs and PNGs made here, the word error rate, and
the real drivers loaded once per test session (Whisper tiny.en, RapidOCR, espeak-ng)."""

from __future__ import annotations

import functools
import io
import re
import wave
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from llmos.devices.ocr import RapidOcrReader
from llmos.devices.stt import WhisperStt
from llmos.devices.tts import EspeakSpeaker

FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"  # fonts-dejavu-core (make sysdeps)
SENTENCE = "Please schedule a meeting with the design team tomorrow morning."


@functools.cache
def drivers() -> dict[str, Any]:
    """One of each real driver for the whole session (their models load on first use)."""
    return {"stt": WhisperStt(None, 2), "ocr": RapidOcrReader(2), "tts": EspeakSpeaker()}


def wav(seconds: float, rate: int = 16_000, freq: float = 440.0) -> bytes:
    """A mono 16-bit WAV: a quiet tone (freq > 0) or silence."""
    t = np.arange(int(seconds * rate)) / rate
    pcm = (0.2 * np.sin(2 * np.pi * freq * t) * 32767).astype("<i2") if freq else t * 0
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(np.asarray(pcm, dtype="<i2").tobytes())
    return buf.getvalue()


def png(*lines: str, mode: str = "RGB", fmt: str = "PNG") -> bytes:
    """Black text on white, one line per argument; for RGBA on clear black, which
    reads as black on black unless transparency is composited onto white."""
    background = (0, 0, 0, 0) if mode == "RGBA" else "white"
    img = Image.new(mode, (720, 30 + 70 * len(lines)), background)
    draw, font = ImageDraw.Draw(img), ImageFont.truetype(FONT, 40)
    for i, line in enumerate(lines):
        draw.text((24, 20 + 70 * i), line, fill="black", font=font)
    buf = io.BytesIO()
    img.save(buf, fmt)
    return buf.getvalue()


def words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", text.lower())


def wer(reference: str, hypothesis: str) -> float:
    """Word error rate: (substitutions + deletions + insertions) / reference words."""
    ref, hyp = words(reference), words(hypothesis)
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (r != h))
    return row[len(hyp)] / max(1, len(ref))


def wav_info(data: bytes) -> tuple[int, int, float]:
    """(channels, sample width, seconds) of a WAV; raises if it is not one."""
    with wave.open(io.BytesIO(data)) as w:
        return w.getnchannels(), w.getsampwidth(), w.getnframes() / w.getframerate()

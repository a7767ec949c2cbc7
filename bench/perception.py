"""Perception speed on this machine, through the kernel's perception layer (its pool
of one worker, limits and accounting included): speech to text (Whisper tiny.en,
int8, 2 threads), OCR (RapidOCR) and text to speech (espeak-ng; Piper when the
`piper` extra is installed).

- Transcription real-time factor: audio seconds / wall seconds (above 1 is faster
  than real time), on espeak-ng clips of about 3 s and 10 s; word error rate too.
- OCR: seconds per image for a one-line sign (720 x 100), a two-line label and a
  page (1240 x 1754, 40 lines of 22 px text).
- TTS: seconds per sentence.

Each figure is the median of --repeat runs after one warm-up (the warm-up's model
load is reported on its own). Run alone: `flock /tmp/llmos-model.lock` keeps other
CPU-heavy work off the two cores.

    flock /tmp/llmos-model.lock .venv/bin/python bench/perception.py [--repeat 5]

The last line is `RESULT {json}`.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import io
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from llmos.devices import MockDevice
from llmos.kernel import Kernel
from llmos.params import Settings
from tests._media import FONT, png, wav_info, wer

CLIPS = {
    "3 s": "Please schedule a meeting with the design team tomorrow morning.",
    "10 s": (
        "Please schedule a meeting with the design team tomorrow morning. The weather "
        "today is sunny and warm, so we can walk to the office. Bring the quarterly "
        "report and the budget for next year."
    ),
}
SENTENCE = "The quick brown fox jumps over the lazy dog."


def page() -> bytes:
    img = Image.new("RGB", (1240, 1754), "white")
    draw, font = ImageDraw.Draw(img), ImageFont.truetype(FONT, 22)
    for i in range(40):
        line = f"Line {i}: the quarterly figures for region {i * 7} rose by {i * 3} percent"
        draw.text((80, 80 + 40 * i), line, fill="black", font=font)
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


async def timed(coro: Any) -> tuple[Any, float]:
    start = time.perf_counter()
    out = await coro
    return out, time.perf_counter() - start


async def run(repeat: int) -> dict[str, Any]:
    home = Path(tempfile.mkdtemp(prefix="llmos-bench-perception-"))
    kernel = Kernel(Settings(home=home, admin_token="bench"), [MockDevice()])
    await kernel.start()
    p, proc = kernel.perception, kernel.process_of(kernel.authenticate("bench"))
    out: dict[str, Any] = {"repeat": repeat}
    try:
        # Warm-ups: each model loads on its first call.
        clip = await p.speak(proc, CLIPS["3 s"])
        out["load_s"] = {
            "stt": round((await timed(p.transcribe(proc, clip)))[1], 3),
            "ocr": round((await timed(p.ocr(proc, png("Warm up"))))[1], 3),
        }
        out["stt"] = {}
        for name, text in CLIPS.items():
            audio = await p.speak(proc, text)
            seconds = wav_info(audio)[2]
            runs = [await timed(p.transcribe(proc, audio)) for _ in range(repeat)]
            wall = statistics.median(t for _, t in runs)
            out["stt"][name] = {
                "audio_s": round(seconds, 2),
                "wall_s": round(wall, 3),
                "rtf": round(seconds / wall, 1),
                "wer": round(wer(text, runs[0][0].text), 3),
            }
        images = {
            "sign 720x100": png("No parking"),
            "label 720x170": png("Invoice 4711", "Total due: 250 EUR"),
            "page 1240x1754": page(),
        }
        out["ocr"] = {}
        for name, image in images.items():
            runs = [await timed(p.ocr(proc, image)) for _ in range(repeat)]
            out["ocr"][name] = {
                "s": round(statistics.median(t for _, t in runs), 3),
                "lines": len(runs[0][0].lines),
            }
        out["tts"] = {"espeak-ng": await tts_time(p, proc, repeat)}
        if importlib.util.find_spec("piper") is not None:
            from llmos.devices.tts import PiperSpeaker

            p._tts = PiperSpeaker()
            await p.speak(proc, "Warm up.")
            out["tts"]["piper"] = await tts_time(p, proc, repeat)
    finally:
        await kernel.stop()
    return out


async def tts_time(p: Any, proc: Any, repeat: int) -> dict[str, float]:
    runs = [await timed(p.speak(proc, SENTENCE)) for _ in range(repeat)]
    wall = statistics.median(t for _, t in runs)
    return {"s": round(wall, 3), "audio_s": round(wav_info(runs[0][0])[2], 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    out = asyncio.run(run(args.repeat))
    print(f"model load (first call): stt {out['load_s']['stt']} s, ocr {out['load_s']['ocr']} s")
    print("transcription (Whisper tiny.en, int8, 2 threads):")
    for name, r in out["stt"].items():
        print(
            f"  {name} clip ({r['audio_s']} s of audio): {r['wall_s']} s, "
            f"real-time factor {r['rtf']}x, WER {r['wer']}"
        )
    print("OCR (RapidOCR PP-OCRv6 small):")
    for name, r in out["ocr"].items():
        print(f"  {name}: {r['s']} s ({r['lines']} lines)")
    print("TTS, one sentence:")
    for name, r in out["tts"].items():
        print(f"  {name}: {r['s']} s for {r['audio_s']} s of speech")
    print("RESULT " + json.dumps(out))


if __name__ == "__main__":
    main()

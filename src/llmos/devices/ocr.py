"""Text in images: RapidOCR (Apache-2.0; PP-OCR detection and recognition models
inside its wheel, run by onnxruntime on the CPU; nothing is downloaded). It reads
the text an image holds; it does not understand the picture (a vision device does:
see the README). Images are decoded by Pillow first, so a corrupt file or one that
claims too many pixels is refused before the models see it."""

from __future__ import annotations

import io
import struct
import threading
from typing import Any, NamedTuple

import numpy as np

from llmos.devices.media import BadMedia, OcrText, TooLarge
from llmos.errors import Unavailable

MARGIN = 64  # pixels of background added around an image before it is read


def decode(image: bytes, max_pixels: int) -> np.ndarray:
    """The image as an H x W x 3 uint8 array, BGR (OpenCV's order, which RapidOCR takes).
    Transparent pixels become white, so dark text on a clear background stays readable."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(image)) as img:
            width, height = img.size
            if width * height > max_pixels:
                raise TooLarge(
                    f"the image is {width}x{height} pixels; the limit is {max_pixels} pixels"
                )
            img.load()
            if img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info:
                rgba = img.convert("RGBA")
                flat = Image.new("RGB", rgba.size, "white")
                flat.paste(rgba, mask=rgba.getchannel("A"))
            else:
                flat = img.convert("RGB")
    except (OSError, ValueError, SyntaxError, EOFError, struct.error) as exc:
        raise BadMedia(f"not a readable image ({type(exc).__name__}: {exc})") from None
    except Image.DecompressionBombError as exc:
        raise TooLarge(str(exc)) from None
    rgb = np.asarray(flat, dtype=np.uint8)
    return np.ascontiguousarray(rgb[:, :, ::-1])


def pad(pixels: np.ndarray) -> np.ndarray:
    """A margin of the image's own background colour (the median of its outer ring).
    The text detector misses or splits text that runs close to the edge, as in a
    cropped screenshot; with room around it, it reads whole lines."""
    ring = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    colour = np.median(ring, axis=0).astype(np.uint8)
    h, w, _ = pixels.shape
    out = np.empty((h + 2 * MARGIN, w + 2 * MARGIN, 3), dtype=np.uint8)
    out[:] = colour
    out[MARGIN : MARGIN + h, MARGIN : MARGIN + w] = pixels
    return out


class _Word(NamedTuple):
    y: float  # vertical centre
    height: float
    x: float  # left edge
    text: str
    score: float


def group_lines(boxes: Any, texts: list[str], scores: list[float]) -> list[tuple[str, float]]:
    """Words the detector boxed separately, put back into lines: boxes whose vertical
    centres are within half a line height of each other form one line, left to right.
    A line's confidence is its least confident word's."""
    words = sorted(
        _Word(float(b[:, 1].mean()), float(np.ptp(b[:, 1])), float(b[:, 0].min()), t, s)
        for b, t, s in zip(boxes, texts, scores, strict=False)
        if t.strip()
    )
    lines: list[list[_Word]] = []
    for word in words:
        first = lines[-1][0] if lines else None
        if first is not None and abs(word.y - first.y) <= 0.5 * max(word.height, first.height):
            lines[-1].append(word)
        else:
            lines.append([word])
    return [
        (
            " ".join(w.text.strip() for w in sorted(line, key=lambda w: w.x)),
            round(float(min(w.score for w in line)), 4),
        )
        for line in lines
    ]


class RapidOcrReader:
    name = "rapidocr"

    def __init__(self, threads: int) -> None:
        self.threads = threads
        self._engine: Any = None
        self._lock = threading.Lock()  # one image at a time through the engine

    def _load(self) -> Any:
        if self._engine is None:
            try:
                from rapidocr import RapidOCR
            except ImportError:
                raise Unavailable(
                    "reading text in images needs rapidocr: pip install 'llmos[ocr]'",
                    param="model",
                ) from None
            # Measured on rendered text (signs, lines, a 40-line page): RapidOCR's own
            # default, scaling the short side up to 736 px, garbles short one-line
            # images; PaddleOCR's classic "longest side at most 960" reads them all.
            # The 180-degree classifier flipped upright lines of a page into
            # nonsense: text is taken as upright.
            self._engine = RapidOCR(
                params={
                    "Global.log_level": "error",
                    "Global.use_cls": False,
                    "Det.limit_side_len": 960,
                    "Det.limit_type": "max",
                    "EngineConfig.onnxruntime.intra_op_num_threads": self.threads,
                    "EngineConfig.onnxruntime.inter_op_num_threads": 1,
                }
            )
        return self._engine

    def read(self, image: bytes, max_pixels: int) -> OcrText:
        pixels = pad(decode(image, max_pixels))
        with self._lock:
            result = self._load()(pixels)
        if result.boxes is None:
            return OcrText(text="")
        lines = group_lines(result.boxes, list(result.txts), list(result.scores))
        return OcrText(text="\n".join(t for t, _ in lines), lines=lines)

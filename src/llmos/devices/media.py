"""What perception drivers take and give: media types told from their bytes, and
the plain results (Transcript, OcrText). The bytes decide a file's type, not the
name or the Content-Type a client claims: those are only checked against the
allowed list."""

from __future__ import annotations

from dataclasses import dataclass, field

OCR_NOTE = "text read by OCR; the picture itself is not understood"


class BadMedia(Exception):
    """The bytes are not a readable file of their type (a driver's decoder failed)."""

    seconds = 0.0  # worker time spent before the failure (it is accounted too)


class TooLarge(BadMedia):
    """An image whose pixel count passes the limit (a small file can claim many)."""


class TooLong(BadMedia):
    """Audio past the length limit; decoding stopped there."""

    def __init__(self, limit_s: float) -> None:
        super().__init__(f"longer than {limit_s:g} s")
        self.limit_s = limit_s


@dataclass
class Transcript:
    text: str
    language: str
    duration_s: float  # of the audio
    segments: list[tuple[float, float, str]] = field(default_factory=list)  # (start, end, text)

    def to_dict(self) -> dict[str, object]:
        return {
            "text": self.text,
            "language": self.language,
            "duration": self.duration_s,
            "segments": [
                {"id": i, "start": s, "end": e, "text": t}
                for i, (s, e, t) in enumerate(self.segments)
            ],
        }


@dataclass
class OcrText:
    text: str  # the lines, top to bottom, joined by newlines
    lines: list[tuple[str, float]] = field(default_factory=list)  # (text, confidence 0..1)
    seconds: float = 0.0  # time spent reading
    note: str = OCR_NOTE

    def to_dict(self) -> dict[str, object]:
        return {
            "text": self.text,
            "lines": [{"text": t, "confidence": c} for t, c in self.lines],
            "seconds": self.seconds,
            "note": self.note,
        }


# Names a client may use for a type (OpenAI's input_audio `format`, file extensions,
# MIME aliases) -> the one MIME type llmos uses for it.
_ALIASES = {
    "wav": "audio/wav",
    "wave": "audio/wav",
    "audio/x-wav": "audio/wav",
    "audio/wave": "audio/wav",
    "audio/vnd.wave": "audio/wav",
    "mp3": "audio/mpeg",
    "mpeg": "audio/mpeg",
    "mpga": "audio/mpeg",
    "audio/mp3": "audio/mpeg",
    "flac": "audio/flac",
    "audio/x-flac": "audio/flac",
    "ogg": "audio/ogg",
    "oga": "audio/ogg",
    "opus": "audio/ogg",
    "audio/opus": "audio/ogg",
    "webm": "audio/webm",
    "video/webm": "audio/webm",
    "m4a": "audio/mp4",
    "mp4": "audio/mp4",
    "audio/m4a": "audio/mp4",
    "audio/x-m4a": "audio/mp4",
    "audio/mp4a-latm": "audio/mp4",
    "video/mp4": "audio/mp4",
    "png": "image/png",
    "jpg": "image/jpeg",
    "jpeg": "image/jpeg",
    "image/jpg": "image/jpeg",
    "gif": "image/gif",
    "webp": "image/webp",
    "bmp": "image/bmp",
    "image/x-ms-bmp": "image/bmp",
}
# Claims that say nothing about the type: the bytes decide.
_UNSAID = frozenset({"", "application/octet-stream", "binary/octet-stream"})


def normalise(kind: str | None) -> str | None:
    """A client's name for a type -> a MIME type (None: it did not say)."""
    if kind is None:
        return None
    mime = kind.split(";")[0].strip().lower()
    if mime in _UNSAID:
        return None
    return _ALIASES.get(mime, mime)


def sniff(data: bytes) -> str | None:
    """The media type the bytes themselves show, or None."""
    head = data[:16]
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return "audio/wav"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    if head[:4] == b"fLaC":
        return "audio/flac"
    if head[:4] == b"OggS":
        return "audio/ogg"
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return "audio/webm"
    if head[4:8] == b"ftyp":
        return "audio/mp4"
    if head[:3] == b"ID3" or (len(head) > 1 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0):
        return "audio/mpeg"  # an ID3 tag, or an MPEG frame's sync bits (JPEG's FF D8 is not)
    if head[:8] == b"\x89PNG\r\n\x1a\n":
        return "image/png"
    if head[:3] == b"\xff\xd8\xff":
        return "image/jpeg"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if head[:2] == b"BM":
        return "image/bmp"
    return None

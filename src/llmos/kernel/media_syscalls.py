"""Perception syscalls: audio.transcribe, audio.speak, image.ocr. Files travel as
bytes (in-process front ends) or base64 text, a data URL included (JSON front ends:
/v1/syscalls, the MCP server, the shell); speech comes back as base64 WAV, so every
result is plain JSON. The work and its limits are in perception.py."""

from __future__ import annotations

import base64
import binascii
import re
from typing import TYPE_CHECKING, Any

from llmos.errors import InvalidRequest, PayloadTooLarge
from llmos.kernel.sysdefs import ALL, Syscall
from llmos.kernel.tokens import Caller

if TYPE_CHECKING:
    from llmos.kernel.kernel import Kernel

_DATA_URL = re.compile(r"^data:([\w.+-]+/[\w.+-]+)?(;[\w=.+-]+)*;base64,", re.ASCII)


def blob(args: dict[str, Any], key: str, max_bytes: int) -> tuple[bytes, str | None]:
    """A file argument's bytes and the type it claims (a data URL's MIME type)."""
    value = args.get(key)
    if value is None:
        raise InvalidRequest(f"{key} is required", param=key)
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value), None
    if not isinstance(value, str):
        raise InvalidRequest(f"{key} must be bytes, base64 text or a data URL", param=key)
    claimed = None
    match = _DATA_URL.match(value)
    if match is not None:
        claimed, value = match.group(1), value[match.end() :]
    elif value.startswith("data:"):
        raise InvalidRequest(f"{key}: only base64 data URLs are taken", param=key)
    if len(value) // 4 * 3 > max_bytes + 2:  # refuse before decoding it
        raise PayloadTooLarge(f"{key} is larger than the limit of {max_bytes} bytes", param=key)
    try:
        return base64.b64decode(value, validate=True), claimed
    except (binascii.Error, ValueError):
        raise InvalidRequest(f"{key} is not valid base64", param=key) from None


def _opt_str(args: dict[str, Any], key: str) -> str | None:
    value = args.get(key)
    if value is not None and not isinstance(value, str):
        raise InvalidRequest(f"{key} must be a string", param=key)
    return value


async def _transcribe(k: Kernel, c: Caller, a: dict[str, Any]) -> Any:
    audio, claimed = blob(a, "file", k.settings.max_audio_bytes)
    fmt = _opt_str(a, "format") or claimed
    language = _opt_str(a, "language") or None
    proc = k.process_of(c)
    text = await k.perception.transcribe(proc, audio, fmt, param="file", language=language)
    return {**text.to_dict(), "pid": proc.pid}


async def _speak(k: Kernel, c: Caller, a: dict[str, Any]) -> Any:
    text = a.get("input")
    if not isinstance(text, str):
        raise InvalidRequest("input must be the text to speak", param="input")
    fmt = a.get("response_format", "wav")
    if fmt != "wav":
        raise InvalidRequest(
            f"response_format {fmt!r} is not supported; llmos speaks wav", param="response_format"
        )
    speed = a.get("speed", 1.0)
    proc = k.process_of(c)
    wav = await k.perception.speak(proc, text, _opt_str(a, "voice"), param="input", speed=speed)
    return {"format": "wav", "audio": base64.b64encode(wav).decode("ascii"), "pid": proc.pid}


async def _ocr(k: Kernel, c: Caller, a: dict[str, Any]) -> Any:
    image, claimed = blob(a, "image", k.settings.max_image_bytes)
    fmt = _opt_str(a, "format") or claimed
    proc = k.process_of(c)
    text = await k.perception.ocr(proc, image, param="image", fmt=fmt)
    return {**text.to_dict(), "pid": proc.pid}


MEDIA_SYSCALLS = (
    Syscall("audio.transcribe", _transcribe, ALL, "speech to text: file (audio) -> text"),
    Syscall("audio.speak", _speak, ALL, "text to speech: input -> base64 WAV"),
    Syscall("image.ocr", _ocr, ALL, "the text in an image (OCR; not what it shows)"),
)

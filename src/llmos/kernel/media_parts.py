"""Image and audio parts of a chat (OpenAI's `image_url` and `input_audio`): checked,
then handed unchanged to a device that takes them, or converted for a text-only
one through perception (OCR text, a transcript) with a note telling the model what
it is reading.

When to convert -- the request's `media` (HTTP: `"llmos": {"media": ...}`):
- "auto" (default): natively when a device serving the model has every capability
  the parts need (`vision` for images, `audio_in` for audio), else all converted;
- "native": natively, or 400 naming the part and the missing capability;
- "convert": always converted (e.g. the transcript in the model's context).
The response says what was done with each part (`Request.media`, shown as `llmos`).

Checks, each a 4xx naming the part (`messages[i].content[j]`): parts only in user
messages, at most MAX_MEDIA_PARTS; data URLs (an http(s) URL is handed to a vision
device only with Settings.allow_media_fetch: the kernel itself fetches nothing);
base64 that decodes; a size within max_image_bytes / max_audio_bytes (413); a type
in image_types / audio_types as the bytes show it (415 for a type not taken, 400
for bytes of no known type); a WAV's length within max_audio_s (other formats are
measured when transcribed)."""

from __future__ import annotations

import base64
import binascii
import io
import wave
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from llmos.devices.base import Device
from llmos.devices.media import normalise, sniff
from llmos.errors import InvalidRequest, PayloadTooLarge, Unavailable, UnsupportedMediaType
from llmos.kernel import prompts
from llmos.kernel.capabilities import NEED_OF_PART, TEXT_ONLY, capable, missing
from llmos.params import MAX_MEDIA_PARTS, Settings
from llmos.types import Snapshot

if TYPE_CHECKING:
    from llmos.kernel.kernel import Kernel
    from llmos.kernel.process import Process
    from llmos.kernel.request import Request
    from llmos.kernel.tokens import Caller

MODES = ("auto", "native", "convert")
_SHAPE = {
    "image_url": '{"type": "image_url", "image_url": {"url": "data:image/png;base64,..."}}',
    "input_audio": '{"type": "input_audio", "input_audio": {"data": "<base64>", "format": "wav"}}',
}


@dataclass(frozen=True)
class Part:
    """One checked image or audio part."""

    where: str  # messages[i].content[j]
    type: str  # image_url | input_audio
    data: bytes | None  # decoded; None: an http(s) URL the device fetches
    mime: str | None  # as the bytes show it

    @property
    def need(self) -> str:
        return NEED_OF_PART[self.type]


def has_parts(messages: Any) -> bool:
    """Does any message hold a content part that is not text? (No checks: cheap.)"""
    if not isinstance(messages, list):
        return False
    return any(
        isinstance(m, dict)
        and isinstance(m.get("content"), list)
        and any(not isinstance(p, dict) or p.get("type") != "text" for p in m["content"])
        for m in messages
    )


# -- checks ------------------------------------------------------------------------
def find(messages: Any, settings: Settings) -> list[Part]:
    """Every image and audio part, checked; any other part must be text. Messages that
    are not a list of objects are left for prompts.normalize_messages to refuse."""
    parts: list[Part] = []
    for i, m in enumerate(messages if isinstance(messages, list) else []):
        content = m.get("content") if isinstance(m, dict) else None
        for j, part in enumerate(content if isinstance(content, list) else []):
            where = f"messages[{i}].content[{j}]"
            kind = part.get("type") if isinstance(part, dict) else None
            if kind == "text":
                if not isinstance(part.get("text"), str):
                    raise InvalidRequest("text part needs a string 'text'", param=where)
                continue
            if not isinstance(kind, str) or kind not in NEED_OF_PART:
                said = f", not {kind!r}" if isinstance(kind, str) else ""
                raise InvalidRequest(
                    f"a content part's type must be text, image_url or input_audio{said}",
                    param=where,
                )
            if m.get("role") != "user":
                raise InvalidRequest(f"{kind} parts are taken in user messages only", param=where)
            if len(parts) == MAX_MEDIA_PARTS:
                raise InvalidRequest(
                    f"at most {MAX_MEDIA_PARTS} image and audio parts in one request", param=where
                )
            check = _image if kind == "image_url" else _audio
            parts.append(check(part, where, settings))
    return parts


def _image(part: dict[str, Any], where: str, s: Settings) -> Part:
    spec = part.get("image_url")
    url = spec.get("url") if isinstance(spec, dict) else None
    if not isinstance(url, str) or not url:
        raise InvalidRequest(f"an image part is {_SHAPE['image_url']}", param=where)
    if url.startswith(("http://", "https://")):
        if not s.allow_media_fetch:
            raise InvalidRequest(
                "image URLs are not fetched (the allow_media_fetch setting is off): send "
                "the image as a data: URL (data:image/png;base64,...)",
                param=where,
            )
        return Part(where, "image_url", None, None)
    if not url.startswith("data:"):
        raise InvalidRequest(
            "image_url must be a data: URL (data:image/png;base64,...)", param=where
        )
    head, comma, payload = url[5:].partition(",")
    fields = [f.strip().lower() for f in head.split(";")]
    if not comma or "base64" not in fields[1:]:
        raise InvalidRequest(
            "the image's data: URL must be base64 (data:image/png;base64,...)", param=where
        )
    declared = normalise(fields[0])
    _taken(declared, s.image_types, "image", where)
    data = _decode(payload, s.max_image_bytes, "image", where)
    return Part(where, "image_url", data, _type_of(data, s.image_types, "image", where))


def _audio(part: dict[str, Any], where: str, s: Settings) -> Part:
    spec = part.get("input_audio")
    payload = spec.get("data") if isinstance(spec, dict) else None
    fmt = spec.get("format") if isinstance(spec, dict) else None
    if not isinstance(payload, str) or not isinstance(fmt, str):
        raise InvalidRequest(f"an audio part is {_SHAPE['input_audio']}", param=where)
    declared = normalise(fmt)
    if declared is None:
        raise InvalidRequest("input_audio.format must name the format (wav, mp3, ...)", param=where)
    _taken(declared, s.audio_types, "audio", where)
    data = _decode(payload, s.max_audio_bytes, "audio", where)
    mime = _type_of(data, s.audio_types, "audio", where)
    if mime == "audio/wav":
        _check_wav(data, s.max_audio_s, where)
    return Part(where, "input_audio", data, mime)


def _taken(declared: str | None, allowed: tuple[str, ...], what: str, where: str) -> None:
    if declared is not None and declared not in allowed:
        raise UnsupportedMediaType(
            f"{what} of type {declared!r} is not taken; send one of: {', '.join(allowed)}",
            param=where,
        )


def _decode(payload: str, limit: int, what: str, where: str) -> bytes:
    if len(payload) > (limit + 2) // 3 * 4 + 1024:  # too big by its length (whitespace aside)
        raise PayloadTooLarge(f"the {what} is over the limit of {limit} bytes", param=where)
    try:
        data = base64.b64decode("".join(payload.split()), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequest(f"the {what} data is not valid base64", param=where) from None
    if not data:
        raise InvalidRequest(f"the {what} is empty", param=where)
    if len(data) > limit:
        raise PayloadTooLarge(f"the {what} is {len(data)} bytes; the limit is {limit}", param=where)
    return data


def _type_of(data: bytes, allowed: tuple[str, ...], what: str, where: str) -> str:
    """The type the bytes show (not the one claimed, which was checked on its own)."""
    found = sniff(data[:16])
    if found is None:
        raise InvalidRequest(
            f"the {what} is corrupt or of an unknown type (taken: {', '.join(allowed)})",
            param=where,
        )
    if found not in allowed:
        raise UnsupportedMediaType(
            f"the {what} is {found}, which is not taken ({', '.join(allowed)})", param=where
        )
    return found


def _check_wav(data: bytes, max_s: float, where: str) -> None:
    try:
        with wave.open(io.BytesIO(data)) as w:
            frames, rate = w.getnframes(), w.getframerate()
    except wave.Error as exc:
        if str(exc).startswith("unknown format"):  # e.g. float samples: measured later
            return
        raise InvalidRequest(f"the audio is not a readable WAV file: {exc}", param=where) from None
    except EOFError:
        raise InvalidRequest(
            "the audio is not a readable WAV file (cut short)", param=where
        ) from None
    if rate <= 0:
        raise InvalidRequest("the audio is not a readable WAV file (no sample rate)", param=where)
    if frames / rate > max_s:
        raise InvalidRequest(
            f"the audio is {frames / rate:.1f} s long; the limit is {max_s:g} s (max_audio_s)",
            param=where,
        )


# -- routing and conversion --------------------------------------------------------
async def submit(k: Kernel, caller: Caller, args: dict[str, Any]) -> Request:
    """llm.chat for a chat with image or audio parts (see the module's doc)."""
    model = args.get("model")
    k.device_for(model)  # an unknown model: 404 before the parts are read
    parts = find(args.get("messages"), k.settings)
    mode = args.get("media") or "auto"
    if mode not in MODES:
        raise InvalidRequest(f"media must be one of {', '.join(MODES)}", param="media")
    serving = [d for d in k.devices if d.model == model]
    needs = TEXT_ONLY | {p.need for p in parts}
    if mode != "convert" and capable(serving, needs):
        dev = k.device_for(model, needs)
        snapshot = await prompts.chat_snapshot(dev, args, native=True)
        report = [
            {"part": p.where, "type": p.type, "handled": "native", "device": dev.name}
            for p in parts
        ]
        return _enqueue(k, caller, dev, snapshot, report)
    refusal = f"{missing(str(model), serving, needs)}"
    if mode == "native":
        raise InvalidRequest(
            f"{refusal}, and 'media': 'native' forbids converting the part",
            param=_first_lacking(parts, serving).where,
            code="capability",
        )
    for p in parts:
        if p.data is None:
            raise InvalidRequest(
                f"{refusal}, and an image given by URL cannot be read here (the kernel "
                "fetches nothing): send it as a data: URL",
                param=p.where,
                code="capability",
            )
    dev = k.device_for(model)
    proc = k.process_of(caller)
    notes, report = await _convert(k, proc, parts, refusal)
    messages = _rewrite(args["messages"], notes)
    snapshot = await prompts.chat_snapshot(dev, {**args, "messages": messages})
    return _enqueue(k, caller, dev, snapshot, report)


def _first_lacking(parts: list[Part], serving: list[Device]) -> Part:
    """The first part whose capability no device of the model has (else the first)."""
    for p in parts:
        if not any(p.need in d.capabilities for d in serving):
            return p
    return parts[0]


def _enqueue(
    k: Kernel, caller: Caller, dev: Device, snapshot: Snapshot, report: list[dict[str, Any]]
) -> Request:
    req = k.enqueue(k.process_of(caller), dev, "chat", snapshot)
    req.media = report
    return req


async def _convert(
    k: Kernel, proc: Process, parts: list[Part], refusal: str
) -> tuple[dict[str, str], list[dict[str, Any]]]:
    """Each part as text for the model (by `where`), and what was done with it. One at
    a time: the perception pool is small, and a request must not fill it alone."""
    notes: dict[str, str] = {}
    report: list[dict[str, Any]] = []
    for p in parts:
        assert p.data is not None
        entry: dict[str, Any] = {"part": p.where, "type": p.type}
        try:
            if p.type == "image_url":
                read = await k.perception.ocr(proc, p.data, param=p.where)
                text = read.text.strip()
                notes[p.where] = (
                    f"[The user attached an image; text read from it by OCR: {text}]"
                    if text
                    else "[The user attached an image; OCR found no text in it.]"
                )
                entry.update(handled="ocr", text=read.text, note=read.note, seconds=read.seconds)
            else:
                heard = await k.perception.transcribe(proc, p.data, p.mime, param=p.where)
                text = heard.text.strip()
                notes[p.where] = (
                    f"[Transcript of the user's audio: {text}]"
                    if text
                    else "[The user attached audio; no speech was heard in it.]"
                )
                entry.update(
                    handled="transcript",
                    text=heard.text,
                    language=heard.language,
                    duration_s=heard.duration_s,
                )
        except Unavailable as exc:  # the converter is not installed
            raise InvalidRequest(
                f"{refusal}, and it cannot be converted: {exc.message}",
                param=p.where,
                code="capability",
            ) from exc
        report.append(entry)
    return notes, report


def _rewrite(messages: list[Any], notes: dict[str, str]) -> list[Any]:
    """The messages with every image and audio part replaced by its note."""
    out: list[Any] = []
    for i, m in enumerate(messages):
        content = m.get("content") if isinstance(m, dict) else None
        if not isinstance(content, list) or not any(
            f"messages[{i}].content[{j}]" in notes for j in range(len(content))
        ):
            out.append(m)
            continue
        pieces = [
            notes.get(f"messages[{i}].content[{j}]") or str(part.get("text", ""))
            for j, part in enumerate(content)
        ]
        out.append({**m, "content": "\n".join(p for p in pieces if p)})
    return out

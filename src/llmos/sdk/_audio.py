"""Perception from the SDK: mixins for `Client` and `AsyncClient`.

client.transcribe("note.wav")           # {text, language, duration, segments}
client.speak("Hello", voice="nova")     # WAV bytes
client.ocr("scan.png")                  # {text, lines, seconds, note}

A file argument is a path or the file's bytes."""

from __future__ import annotations

import mimetypes
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from llmos.sdk._errors import error_from_response

Media = str | Path | bytes


def _upload(media: Media, default_name: str) -> tuple[str, bytes, str]:
    """(filename, bytes, content type) for a multipart file field."""
    if isinstance(media, bytes):
        return default_name, media, "application/octet-stream"  # the kernel sniffs the type
    path = Path(media)
    ctype = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return path.name, path.read_bytes(), ctype


def _transcribe_args(media: Media, language: str | None) -> dict[str, Any]:
    data = {"model": "whisper-1", "response_format": "verbose_json"}
    if language is not None:
        data["language"] = language
    return {"files": {"file": _upload(media, "audio")}, "data": data}


def _speech_body(text: str, voice: str | None, speed: float) -> dict[str, Any]:
    body: dict[str, Any] = {"model": "tts-1", "input": text, "speed": speed}
    if voice is not None:
        body["voice"] = voice
    return body


def _wav(response: httpx.Response) -> bytes:
    if response.is_error:
        raise error_from_response(response)
    return response.content


class AudioMixin:
    """Client's perception methods (sync)."""

    if TYPE_CHECKING:

        def _request(
            self, method: str, path: str, body: dict[str, Any] | None = None, **kwargs: Any
        ) -> Any: ...

        def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response: ...

    def transcribe(self, audio: Media, *, language: str | None = None) -> dict[str, Any]:
        """Speech to text: {text, language, duration, segments [{id, start, end, text}]}."""
        args = _transcribe_args(audio, language)
        return dict(self._request("POST", "/v1/audio/transcriptions", **args))

    def speak(self, text: str, *, voice: str | None = None, speed: float = 1.0) -> bytes:
        """Text to speech: a WAV file's bytes."""
        return _wav(self._send("POST", "/v1/audio/speech", json=_speech_body(text, voice, speed)))

    def ocr(self, image: Media) -> dict[str, Any]:
        """The text in an image: {text, lines [{text, confidence}], seconds, note}."""
        files = {"image": _upload(image, "image")}
        return dict(self._request("POST", "/v1/images/ocr", files=files))


class AsyncAudioMixin:
    """AsyncClient's perception methods."""

    if TYPE_CHECKING:

        async def _request(
            self, method: str, path: str, body: dict[str, Any] | None = None, **kwargs: Any
        ) -> Any: ...

        async def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response: ...

    async def transcribe(self, audio: Media, *, language: str | None = None) -> dict[str, Any]:
        args = _transcribe_args(audio, language)
        return dict(await self._request("POST", "/v1/audio/transcriptions", **args))

    async def speak(self, text: str, *, voice: str | None = None, speed: float = 1.0) -> bytes:
        body = _speech_body(text, voice, speed)
        return _wav(await self._send("POST", "/v1/audio/speech", json=body))

    async def ocr(self, image: Media) -> dict[str, Any]:
        files = {"image": _upload(image, "image")}
        return dict(await self._request("POST", "/v1/images/ocr", files=files))

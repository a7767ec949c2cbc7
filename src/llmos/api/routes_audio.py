"""Perception over HTTP, OpenAI-compatible: POST /v1/audio/transcriptions (multipart)
and POST /v1/audio/speech (JSON in, WAV out); and POST /v1/images/ocr (multipart),
llmos's own. Each is one syscall (audio.transcribe, audio.speak, image.ocr)."""

from __future__ import annotations

import base64
from typing import Any, Literal

from fastapi import APIRouter, Depends, File, Form, Request, UploadFile
from fastapi.responses import PlainTextResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from llmos.api.auth import caller, kernel_of
from llmos.kernel import Caller

router = APIRouter(prefix="/v1")

TranscriptFormat = Literal["json", "text", "verbose_json", "srt", "vtt"]


def _stamp(seconds: float, sep: str) -> str:
    ms = round(seconds * 1000)
    h, ms = divmod(ms, 3_600_000)
    m, ms = divmod(ms, 60_000)
    s, ms = divmod(ms, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def subtitles(segments: list[dict[str, Any]], kind: str) -> str:
    """SubRip (srt) or WebVTT (vtt) cues from a transcript's segments."""
    sep = "," if kind == "srt" else "."
    cues = [
        f"{i + 1}\n" * (kind == "srt")
        + f"{_stamp(s['start'], sep)} --> {_stamp(s['end'], sep)}\n{s['text']}\n"
        for i, s in enumerate(segments)
    ]
    return ("WEBVTT\n\n" if kind == "vtt" else "") + "\n".join(cues)


@router.post(
    "/audio/transcriptions",
    responses={
        200: {
            "description": "The transcript, in the asked response_format.",
            "content": {
                "application/json": {},
                "text/plain": {"schema": {"type": "string"}},
                "application/x-subrip": {"schema": {"type": "string"}},
                "text/vtt": {"schema": {"type": "string"}},
            },
        }
    },
)
async def transcriptions(
    request: Request,
    file: UploadFile = File(..., description="The audio: wav, mp3, flac, ogg, webm or m4a."),
    model: str = Form(..., description="Any name: the configured Whisper answers."),
    language: str | None = Form(None, description="ISO-639-1 code of the speech, e.g. en."),
    prompt: str | None = Form(None, description="Accepted and ignored."),
    response_format: TranscriptFormat = Form("json"),
    temperature: float | None = Form(None, description="Accepted and ignored."),
    who: Caller = Depends(caller),
) -> Any:
    limit = kernel_of(request).settings.max_audio_bytes
    audio = await file.read(limit + 1)  # one byte more than allowed is enough to refuse
    args = {"file": audio, "format": file.content_type, "language": language}
    out = await kernel_of(request).call("audio.transcribe", who, args)
    if response_format == "text":
        return PlainTextResponse(out["text"] + "\n")
    if response_format in ("srt", "vtt"):
        media = "application/x-subrip" if response_format == "srt" else "text/vtt"
        return PlainTextResponse(subtitles(out["segments"], response_format), media_type=media)
    usage = {"type": "duration", "seconds": out["duration"]}
    if response_format == "json":
        return {"text": out["text"], "usage": usage}
    return {"task": "transcribe", **{k: v for k, v in out.items() if k != "pid"}, "usage": usage}


class SpeechRequest(BaseModel):
    """OpenAI's /v1/audio/speech body. Only wav is spoken (no mp3 encoder here)."""

    model_config = ConfigDict(extra="allow")
    model: str | None = Field(None, description="Any name: the configured voice engine speaks.")
    input: str = Field(..., description="The text to speak.")
    voice: str | None = Field(
        None, description="OpenAI's voice names, or an espeak-ng voice such as en-gb or en-us+f3."
    )
    response_format: Literal["wav"] = "wav"
    speed: float = Field(1.0, ge=0.25, le=4.0)
    instructions: str | None = Field(None, description="Accepted and ignored.")


@router.post(
    "/audio/speech",
    response_class=Response,
    responses={200: {"content": {"audio/wav": {}}, "description": "The speech, a WAV file."}},
)
async def speech(body: SpeechRequest, request: Request, who: Caller = Depends(caller)) -> Response:
    args = body.model_dump(include={"input", "voice", "response_format", "speed"})
    out = await kernel_of(request).call("audio.speak", who, args)
    return Response(base64.b64decode(out["audio"]), media_type="audio/wav")


@router.post("/images/ocr")
async def ocr(
    request: Request,
    image: UploadFile = File(..., description="A png, jpeg, webp, gif or bmp image."),
    who: Caller = Depends(caller),
) -> Any:
    limit = kernel_of(request).settings.max_image_bytes
    data = await image.read(limit + 1)
    args = {"image": data, "format": image.content_type}
    return await kernel_of(request).call("image.ocr", who, args)

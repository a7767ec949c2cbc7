"""`llmos transcribe FILE`, `llmos say TEXT -o out.wav` and `llmos ocr IMAGE`: the
perception syscalls from the command line. `chat --audio/--image` and `sh --audio`
use `read_media` and `media_parts` from here."""

from __future__ import annotations

import base64
import json
import mimetypes
from pathlib import Path
from typing import Annotated, Any

import typer

from llmos.cli._shared import EXIT_USAGE, TokenOption, UrlOption, connect, fail

MAX_CLI_FILE = 64 * 1024 * 1024  # a file the CLI reads at all (the kernel's limits are lower)


def read_media(path: Path, what: str) -> bytes:
    """A file's bytes, or a clear usage error (exit 2) before the kernel is asked."""
    if not path.is_file():
        fail(f"{what} file not found: {path}", EXIT_USAGE)
    if path.stat().st_size > MAX_CLI_FILE:
        fail(f"{what} file is too large: {path}", EXIT_USAGE)
    try:
        return path.read_bytes()
    except OSError as exc:
        fail(f"cannot read {path}: {exc.strerror}", EXIT_USAGE)


def media_parts(audio: Path | None, image: Path | None) -> list[dict[str, Any]]:
    """OpenAI content parts for a chat message: input_audio and image_url (a data URL)."""
    parts: list[dict[str, Any]] = []
    if audio is not None:
        data = base64.b64encode(read_media(audio, "audio")).decode("ascii")
        fmt = audio.suffix.lstrip(".").lower() or "wav"
        parts.append({"type": "input_audio", "input_audio": {"data": data, "format": fmt}})
    if image is not None:
        data = base64.b64encode(read_media(image, "image")).decode("ascii")
        mime = mimetypes.guess_type(image.name)[0] or "application/octet-stream"
        parts.append({"type": "image_url", "image_url": {"url": f"data:{mime};base64,{data}"}})
    return parts


def transcribe(
    file: Annotated[Path, typer.Argument(help="Audio: wav, mp3, flac, ogg, webm or m4a.")],
    language: Annotated[
        str | None, typer.Option("--language", "-l", help="The speech's language, e.g. en.")
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print text, language, duration and segments.")
    ] = False,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Speech to text: print what FILE says."""
    read_media(file, "audio")  # a missing file fails before the kernel is asked
    with connect(url, token) as client:
        out = client.transcribe(file, language=language)
    typer.echo(json.dumps(out, indent=2) if as_json else out["text"])


def say(
    text: Annotated[str, typer.Argument(help="What to say.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="The WAV file to write.")],
    voice: Annotated[
        str | None,
        typer.Option(help="OpenAI's voice names (alloy, nova...), or espeak-ng's (en-gb, de)."),
    ] = None,
    speed: Annotated[float, typer.Option(help="0.25 to 4.0.")] = 1.0,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Text to speech: write TEXT, spoken, to a WAV file."""
    if output.is_dir():
        fail(f"{output} is a folder; give a file name such as out.wav", EXIT_USAGE)
    with connect(url, token) as client:
        wav = client.speak(text, voice=voice, speed=speed)
    try:
        output.write_bytes(wav)
    except OSError as exc:
        fail(f"cannot write {output}: {exc.strerror}")
    typer.echo(f"wrote {output} ({len(wav)} bytes)")


def ocr(
    image: Annotated[Path, typer.Argument(help="An image: png, jpeg, webp, gif or bmp.")],
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Print the text in an image (OCR: it reads text, it does not describe the picture)."""
    read_media(image, "image")
    with connect(url, token) as client:
        out = client.ocr(image)
    typer.echo(out["text"])


def register(app: typer.Typer) -> None:
    app.command("transcribe")(transcribe)
    app.command("say")(say)
    app.command("ocr")(ocr)

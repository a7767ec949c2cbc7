"""`llmos chat`: one message to the kernel, the reply streamed to the terminal."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from llmos.cli._shared import EXIT_USAGE, TokenOption, UrlOption, connect, echo_stream, fail
from llmos.cli.audio import media_parts


def chat(
    text: Annotated[str, typer.Argument(help="The message; `-` reads it from stdin.")] = "",
    model: Annotated[
        str | None,
        typer.Option(help="Model id. Default: the kernel's first model.", show_default=False),
    ] = None,
    max_tokens: Annotated[int | None, typer.Option(help="Most tokens to generate.")] = None,
    temperature: Annotated[float | None, typer.Option(help="Sampling temperature.")] = None,
    system: Annotated[str | None, typer.Option(help="A system message to send first.")] = None,
    audio: Annotated[
        Path | None, typer.Option(help="An audio file sent with the message (input_audio).")
    ] = None,
    image: Annotated[
        Path | None, typer.Option(help="An image sent with the message (image_url).")
    ] = None,
    stream: Annotated[
        bool, typer.Option("--stream/--no-stream", help="Print the reply as it is generated.")
    ] = True,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Send a message and print the reply."""
    if text == "-":
        text = sys.stdin.read()
    messages: list[dict[str, Any]] = []
    if system:
        messages.append({"role": "system", "content": system})
    parts = media_parts(audio, image)
    if not text and not parts:
        fail("give a message, --audio FILE or --image FILE", EXIT_USAGE)
    content = [*([{"type": "text", "text": text}] if text else []), *parts] if parts else text
    messages.append({"role": "user", "content": content})
    options: dict[str, Any] = {
        "model": model,
        "max_tokens": max_tokens,
        "temperature": temperature,
    }
    with connect(url, token) as client:
        if not stream:
            typer.echo(client.chat(messages, **options).text)
            return
        echo_stream(client.stream(messages, **options))

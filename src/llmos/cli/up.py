"""`llmos up`: settings from the command line, validated, then the server in-process."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from llmos.cli._shared import EXIT_USAGE, fail
from llmos.cli.backup import duration
from llmos.errors import LlmosError
from llmos.params import (
    DEFAULT_CTX,
    DEFAULT_HOST,
    DEFAULT_PORT,
    DEFAULT_QUANTUM,
    DEFAULT_SLOTS,
    MAX_QUEUE,
    MAX_QUEUE_PER_OWNER,
    POLICY_NAMES,
    RATE_BURST,
    RATE_LIMIT,
    REQUEST_TIMEOUT_S,
    Settings,
)


def up(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = DEFAULT_HOST,
    port: Annotated[int, typer.Option(help="Port to listen on.")] = DEFAULT_PORT,
    model: Annotated[
        Path | None,
        typer.Option(
            "--model",
            help="A GGUF file for the embedded engine. Default: the bundled SmolLM2.",
            show_default=False,
        ),
    ] = None,
    mmproj: Annotated[
        Path | None,
        typer.Option(help="The --model VLM's projector GGUF: the engine takes images (vision)."),
    ] = None,
    device_capabilities: Annotated[
        str | None,
        typer.Option(
            help="What --device-url (or the mock) takes, comma-separated: text, vision,"
            " audio_in, audio_out, embeddings. Default: text."
        ),
    ] = None,
    allow_media_fetch: Annotated[
        bool,
        typer.Option(
            "--allow-media-fetch", help="Let image parts be http(s) URLs, for a vision device."
        ),
    ] = False,
    device_url: Annotated[
        str | None,
        typer.Option(help="An OpenAI-compatible server to use instead of an embedded engine."),
    ] = None,
    device_api_key: Annotated[
        str | None,
        typer.Option(help="API key for --device-url.", envvar="LLMOS_DEVICE_API_KEY"),
    ] = None,
    model_name: Annotated[
        str | None, typer.Option(help="The model id clients send. Default: derived.")
    ] = None,
    slots: Annotated[int, typer.Option(help="Requests the engine runs at once.")] = DEFAULT_SLOTS,
    ctx: Annotated[int, typer.Option(help="Context length of one request, in tokens.")] = (
        DEFAULT_CTX
    ),
    threads: Annotated[
        int | None, typer.Option(help="CPU threads for the engine. Default: all cores.")
    ] = None,
    policy: Annotated[
        str, typer.Option(help=f"Scheduling policy: {', '.join(POLICY_NAMES)}.")
    ] = "fifo",
    quantum: Annotated[
        int, typer.Option(help="Tokens a request runs before rr/mlfq may preempt it.")
    ] = DEFAULT_QUANTUM,
    max_queue: Annotated[
        int, typer.Option(help="Most requests waiting in all; more get 429.")
    ] = MAX_QUEUE,
    max_queue_per_owner: Annotated[
        int, typer.Option(help="Most requests one owner may have waiting; more get 429.")
    ] = MAX_QUEUE_PER_OWNER,
    home: Annotated[
        Path | None,
        typer.Option(help="State directory. Default: $LLMOS_HOME, else ~/.llmos."),
    ] = None,
    device: Annotated[
        str,
        typer.Option(help="Engine kind: 'llamacpp' (embedded) or 'mock' (tests, benchmarks)."),
    ] = "llamacpp",
    rate_limit: Annotated[
        float, typer.Option(help="Requests a second per non-admin token (429 above); 0 = off.")
    ] = RATE_LIMIT,
    rate_burst: Annotated[
        int, typer.Option(help="Requests a token may make at once after a quiet spell.")
    ] = RATE_BURST,
    request_timeout: Annotated[
        float, typer.Option(help="Seconds an LLM request may take, queue included; 0 = none.")
    ] = REQUEST_TIMEOUT_S,
    tls_cert: Annotated[
        Path | None,
        typer.Option(help="Serve HTTPS with this certificate (PEM); needs --tls-key."),
    ] = None,
    tls_key: Annotated[
        Path | None, typer.Option(help="The private key (PEM) of --tls-cert.")
    ] = None,
    user_agents: Annotated[
        bool,
        typer.Option(
            help="Let users, not only admins, run programs (llmos run). They run as this"
            " OS user, who can read the state directory: only for users you trust."
        ),
    ] = False,
    anomaly: Annotated[
        bool, typer.Option(help="Watch processes for anomalies (token rate, errors, loops).")
    ] = True,
    anomaly_action: Annotated[
        str,
        typer.Option(help="On an anomaly: 'alert', or 'throttle' (alert and slow it down)."),
    ] = "throttle",
    autotune: Annotated[
        str,
        typer.Option(
            help="Tune the device's slots, context and batch by measuring it: 'off', 'start'"
            " (a calibration of up to 60 s at start) or 'online' (also as the load changes)."
        ),
    ] = "off",
    stt_model: Annotated[
        Path | None,
        typer.Option(help="A faster-whisper model folder for speech to text. Default: tiny.en."),
    ] = None,
    tts_engine: Annotated[
        str, typer.Option(help="Text to speech: 'espeak' (espeak-ng) or 'piper' (the extra).")
    ] = "espeak",
    backup_every: Annotated[
        str, typer.Option(help="Back up every 30m, 1h, 1d... under LLMOS_HOME/backups; 0 = off.")
    ] = "0",
    backup_keep: Annotated[int, typer.Option(help="Scheduled backups kept (oldest pruned).")] = 7,
    ray_address: Annotated[
        str | None,
        typer.Option(
            help="Join a Ray cluster: 'auto', HOST:PORT or ray://HOST:PORT (llmos[cluster])."
        ),
    ] = None,
    cluster: Annotated[
        Path | None,
        typer.Option(
            help="The cluster file: device groups placed as Ray actors (deploy/cluster.yaml)."
        ),
    ] = None,
    ray_node_ip: Annotated[
        str | None,
        typer.Option(help="This machine's address in the Ray cluster. Default: derived."),
    ] = None,
    placement: Annotated[
        str, typer.Option(help="Where requests run: 'affinity' (prefix cache) or 'least-loaded'.")
    ] = "affinity",
) -> None:
    """Start the llmos kernel and serve its HTTP API (blocks until Ctrl-C)."""
    given: dict[str, Any] = {"home": home, "threads": threads}
    if device not in ("llamacpp", "mock"):
        fail(f"unknown device {device!r}; choose llamacpp or mock", EXIT_USAGE)
    settings = Settings(
        host=host,
        port=port,
        model_path=model,
        mmproj=mmproj,
        device_capabilities=(
            tuple(c.strip() for c in device_capabilities.split(",") if c.strip())
            if device_capabilities is not None
            else None
        ),
        allow_media_fetch=allow_media_fetch,
        device_url=device_url,
        device_api_key=device_api_key,
        model_name=model_name,
        slots=slots,
        ctx=ctx,
        policy=policy,
        quantum=quantum,
        max_queue=max_queue,
        max_queue_per_owner=max_queue_per_owner,
        mock_device=device == "mock",
        rate_limit=rate_limit,
        rate_burst=rate_burst,
        request_timeout_s=request_timeout,
        tls_cert=tls_cert,
        tls_key=tls_key,
        user_agents=user_agents,
        anomaly=anomaly,
        anomaly_action=anomaly_action,
        autotune=autotune,
        stt_model=stt_model,
        tts_engine=tts_engine,
        backup_every_s=duration(backup_every, "--backup-every"),
        backup_keep=backup_keep,
        ray_address=ray_address,
        cluster_file=cluster,
        ray_node_ip=ray_node_ip,
        placement=placement,
        **{k: v for k, v in given.items() if v is not None},  # else Settings' defaults
    )
    try:
        settings.validate()
    except LlmosError as exc:
        fail(exc.message, EXIT_USAGE)

    from llmos.api.server import serve  # loads FastAPI and the engines: only when serving

    try:
        serve(settings)
    except LlmosError as exc:  # e.g. the model failed to load
        fail(exc.message)

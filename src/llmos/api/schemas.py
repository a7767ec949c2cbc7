"""Request bodies of the HTTP API. Pydantic checks types and ranges (naming the
field on failure); the kernel checks what needs the model (context, model names)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.config import JsonDict

from llmos.params import MAX_MESSAGES, MAX_NAME_LEN, MAX_PRIORITY, MAX_TOP_LOGPROBS


class _Body(BaseModel):
    # OpenAI clients send fields we do not use (user, metadata, store, …): accept them.
    model_config = ConfigDict(extra="allow")


class StreamOptions(BaseModel):
    include_usage: bool = False


class JsonSchemaSpec(BaseModel):
    name: str = "output"
    schema_: dict[str, Any] = Field(default_factory=dict, alias="schema")
    strict: bool | None = None
    description: str | None = None


class ResponseFormat(BaseModel):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaSpec | None = None

    def schema_or_none(self) -> dict[str, Any] | None:
        if self.type == "json_object":
            return {"type": "object"}
        if self.type == "json_schema":
            return self.json_schema.schema_ if self.json_schema else {"type": "object"}
        return None


class _Sampling(_Body):
    model: str = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    seed: int | None = None
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = Field(default=1, ge=1, le=1)
    presence_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    ignore_eos: bool = False  # llama.cpp's extension: generate exactly max_tokens

    def kernel_args(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "seed": self.seed,
            "stop": self.stop,
            "ignore_eos": self.ignore_eos,
        }


_TEXT_PART: JsonDict = {
    "type": "object",
    "required": ["type", "text"],
    "properties": {"type": {"const": "text"}, "text": {"type": "string"}},
}
_MEDIA_PARTS: list[JsonDict] = [  # user messages only (kernel/media_parts.py)
    {
        "type": "object",
        "required": ["type", "image_url"],
        "properties": {
            "type": {"const": "image_url"},
            "image_url": {
                "type": "object",
                "required": ["url"],
                "properties": {"url": {"type": "string", "description": "a data: URL"}},
            },
        },
    },
    {
        "type": "object",
        "required": ["type", "input_audio"],
        "properties": {
            "type": {"const": "input_audio"},
            "input_audio": {
                "type": "object",
                "required": ["data", "format"],
                "properties": {"data": {"type": "string"}, "format": {"type": "string"}},
            },
        },
    },
]
# For the OpenAPI schema only: the kernel checks messages itself, naming the field
# (messages[i].role, messages[i].content[j]), which pydantic's errors would not.
MESSAGES_DOC: JsonDict = {
    "maxItems": MAX_MESSAGES,
    "items": {
        "type": "object",
        "required": ["role"],
        "properties": {
            "role": {"enum": ["system", "developer", "user", "assistant", "tool"]},
            "content": {
                "anyOf": [
                    {"type": "string"},
                    {"type": "array", "items": {"anyOf": [_TEXT_PART, *_MEDIA_PARTS]}},
                    {"type": "null"},
                ]
            },
            "tool_calls": {"type": "array", "items": {"type": "object"}},  # assistant
            "tool_call_id": {"type": "string"},  # tool: the call it answers
        },
    },
}
TOOLS_DOC: JsonDict = {
    "items": {
        "type": "object",
        "required": ["type", "function"],
        "properties": {
            "type": {"const": "function"},
            "function": {
                "type": "object",
                "required": ["name"],
                "properties": {
                    "name": {"type": "string", "pattern": "^[A-Za-z0-9_.-]{1,128}$"},
                    "description": {"type": "string"},
                    "parameters": {"type": "object"},
                    "strict": {"type": "boolean"},
                },
            },
        },
    },
}
TOOL_CHOICE_DOC: JsonDict = {
    "description": '"none" | "auto" | "required" | {"type": "function", "function": {"name"}}'
}


class LlmosOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    media: Literal["auto", "native", "convert"] = Field(
        default="auto",
        description="image/audio parts: to a device that takes them, else converted "
        "(OCR, transcript) (auto); only to such a device, else 400 (native); converted",
    )


class ChatRequest(_Sampling):
    messages: list[dict[str, Any]] = Field(min_length=1, json_schema_extra=MESSAGES_DOC)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(default=None, ge=0, le=MAX_TOP_LOGPROBS)
    response_format: ResponseFormat | None = None
    # Tool calling (kernel/toolcalls.py checks them, naming the field).
    tools: list[dict[str, Any]] | None = Field(default=None, json_schema_extra=TOOLS_DOC)
    tool_choice: str | dict[str, Any] | None = Field(
        default=None, json_schema_extra=TOOL_CHOICE_DOC
    )
    parallel_tool_calls: bool | None = None
    # llmos's extension: the kernel runs calls of its registered tools and answers
    # when the model does (the `llm.chat_tools` syscall, kernel/toolloop.py).
    llmos_execute_tools: bool = False
    # llmos's extension: how image and audio parts are taken (kernel/media_parts.py).
    llmos: LlmosOptions | None = None

    def kernel_args(self) -> dict[str, Any]:
        args = super().kernel_args()
        args["messages"] = self.messages
        if self.llmos is not None:
            args["media"] = self.llmos.media
        args["max_tokens"] = self.max_completion_tokens or self.max_tokens
        args["logprobs"] = self.logprobs
        args["top_logprobs"] = self.top_logprobs if self.logprobs else 0
        args["json_schema"] = (
            self.response_format.schema_or_none() if self.response_format else None
        )
        args["tools"] = self.tools
        args["tool_choice"] = self.tool_choice
        args["parallel_tool_calls"] = self.parallel_tool_calls
        return args


class CompletionRequest(_Sampling):
    prompt: str | list[str] | list[int]
    max_tokens: int | None = Field(default=16, ge=1)
    logprobs: int | None = Field(default=None, ge=0, le=5)
    echo: Literal[False] = False
    best_of: int = Field(default=1, ge=1, le=1)
    suffix: None = None

    def kernel_args(self) -> dict[str, Any]:
        args = super().kernel_args()
        args["prompt"] = self.prompt
        args["logprobs"] = self.logprobs is not None
        args["top_logprobs"] = self.logprobs or 0
        return args


class SpawnRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(default="process", min_length=1, max_length=MAX_NAME_LEN)
    priority: int | None = Field(default=None, ge=0, le=MAX_PRIORITY)  # default: 20
    max_concurrent: int | None = Field(default=None, ge=1)
    token_budget: int | None = Field(default=None, ge=1)
    memory_shared: bool = False
    # syscalls (names or 'prefix.*'), files {read, write: [prefix]}, memory
    # none|read|write, expires_in seconds; never wider than the spawner's rights
    capabilities: dict[str, Any] | None = None


class Renice(BaseModel):
    model_config = ConfigDict(extra="forbid")
    priority: int = Field(ge=0, le=MAX_PRIORITY, description="0..39, higher runs earlier")


class SchedulerUpdate(BaseModel):
    """Switch policy or knobs at run time (admin)."""

    model_config = ConfigDict(extra="forbid")
    policy: str | None = None
    quantum: int | None = Field(default=None, ge=1, le=1 << 20)
    aging_s: float | None = Field(default=None, gt=0, le=86400)
    mlfq_levels: int | None = Field(default=None, ge=1, le=8)
    mlfq_boost_s: float | None = Field(default=None, gt=0, le=86400)
    preempt_margin: int | None = Field(default=None, ge=0, le=39)
    sjf_aging_tokens_per_s: float | None = Field(default=None, ge=0)
    weights: dict[str, float] | None = None

"""POST /v1/ask: a question about the system, answered by the model from the
kernel's figures (kernel/ask.py)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field

from llmos.api.auth import caller, kernel_of
from llmos.kernel import Caller
from llmos.kernel.ask import MAX_ASK_TOKENS, MAX_QUESTION_CHARS

router = APIRouter(prefix="/v1")


class AskBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    question: str = Field(min_length=1, max_length=MAX_QUESTION_CHARS)
    model: str | None = Field(
        default=None, min_length=1, description="Default: the first device's."
    )
    max_tokens: int | None = Field(default=None, ge=1, le=MAX_ASK_TOKENS)


@router.post("/ask")
async def ask(body: AskBody, request: Request, who: Caller = Depends(caller)) -> Any:
    return await kernel_of(request).call("sys.ask", who, body.model_dump(exclude_none=True))

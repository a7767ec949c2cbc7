"""The llmos SDK: the kernel's HTTP API from Python, for agents in any OS process.

    from llmos.sdk import Client

    with Client() as llm:  # $LLMOS_URL / $LLMOS_TOKEN, else the local kernel
        print(llm.chat("Say hi").text)
        for delta in llm.stream("Count to five"):
            print(delta, end="", flush=True)

Every failure raises `ApiError`; `KernelUnreachable` when no kernel answers.
"""

from llmos.sdk._async import AsyncClient
from llmos.sdk._client import Client
from llmos.sdk._config import DEFAULT_URL
from llmos.sdk._errors import ApiError, KernelUnreachable
from llmos.sdk._wire import ChatResult

__all__ = [
    "DEFAULT_URL",
    "ApiError",
    "AsyncClient",
    "ChatResult",
    "Client",
    "KernelUnreachable",
]

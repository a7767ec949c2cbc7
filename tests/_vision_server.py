"""A stand-in for an OpenAI-compatible vision server (vLLM or llama-server with a VLM):
it records every chat request it receives and answers deterministically, saying how
many image and audio parts it was given. No VLM ships in any package reachable here,
so routing to a vision device is tested against this. Loopback only.

    with vision_server(model="mock") as server:
        ...  # server.url; server.received: the JSON bodies of /v1/chat/completions
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class VisionServer:
    url: str
    model: str
    received: list[dict[str, Any]] = field(default_factory=list)


def answer(body: dict[str, Any]) -> str:
    """What the stand-in says: the parts it was given, by type."""
    counts = {"image_url": 0, "input_audio": 0}
    for m in body.get("messages") or []:
        for part in m.get("content") if isinstance(m.get("content"), list) else []:
            if part.get("type") in counts:
                counts[part["type"]] += 1
    return f"I see {counts['image_url']} images and {counts['input_audio']} audio clips."


def _handler(server: VisionServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # quiet
            pass

        def _json(self, status: int, obj: Any) -> None:
            data = json.dumps(obj).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if self.path in ("/v1/models", "/models"):
                self._json(200, {"object": "list", "data": [{"id": server.model}]})
            elif self.path == "/health":
                self._json(200, {"status": "ok"})
            else:
                self._json(404, {"error": {"message": "not found", "code": 404}})

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length) or b"{}")
            if self.path != "/v1/chat/completions":  # no /tokenize: llmos uses text mode
                self._json(404, {"error": {"message": "not found", "code": 404}})
                return
            server.received.append(body)
            words = answer(body).split(" ")
            max_tokens = int(body.get("max_tokens") or len(words))
            pieces = [w + " " for w in words[:-1]] + words[-1:]
            pieces = pieces[:max_tokens]
            reason = "stop" if len(pieces) == len(words) else "length"
            usage = {"prompt_tokens": 7, "completion_tokens": len(pieces), "total_tokens": 0}
            if not body.get("stream"):
                message = {"role": "assistant", "content": "".join(pieces)}
                choice = {"index": 0, "message": message, "finish_reason": reason}
                self._json(200, {"object": "chat.completion", "choices": [choice], "usage": usage})
                return
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()  # HTTP/1.0: the stream ends when the connection closes
            chunks = [{"choices": [{"index": 0, "delta": {"content": p}}]} for p in pieces]
            chunks.append({"choices": [{"index": 0, "delta": {}, "finish_reason": reason}]})
            chunks.append({"choices": [], "usage": usage})
            for chunk in chunks:
                self.wfile.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
            self.wfile.write(b"data: [DONE]\n\n")

    return Handler


@contextlib.contextmanager
def vision_server(model: str = "mock") -> Iterator[VisionServer]:
    """Serve on a free loopback port in a thread; always shut down and joined."""
    state = VisionServer(url="", model=model)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, name="vision-stand-in", daemon=True)
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)

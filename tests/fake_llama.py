"""A scripted stand-in for llama-server's native API (``/props``, ``/tokenize``, streamed ``/completion``), for the
rare paths the tiny model will not take on its own (a tool call inside its thinking).  ``reply(prompt)`` gives
the text a call streams, one character a token; every request's prompt (and body) is recorded.

``flavor="vllm"`` or ``"sglang"`` answers as those engines do instead (shapes from their documentation): their
identifying endpoint (``GET /version``; ``GET /get_model_info``), ``GET /v1/models`` with ``max_model_len``,
``POST /tokenize`` and streamed OpenAI ``/v1/completions`` chunks with ``logprobs``, a final chunk with its
``finish_reason``, a usage chunk (``stream_options.include_usage``) and ``data: [DONE]``; no ``/props``."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from conftest import free_port

CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


class FakeLlamaServer:
    def __init__(self, reply, flavor: str = "llama-server", slots: int = 0, n_cmpl: bool = False) -> None:
        self.reply, self.prompts, self.bodies, self.flavor = reply, [], [], flavor
        #: what ``GET /health`` answers (503: loading, as llama-server says while it loads its model)
        self.health = 200
        self.slots = slots
        #: serve ``n_cmpl`` children in one stream (newer llama-server); False: ignore it, as older ones do
        self.n_cmpl = n_cmpl
        #: stream a malformed chunk instead of a completion
        self.garbage = False
        self.port = free_port()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):  # quiet
                pass

            def _json(self, obj: dict) -> None:
                data = json.dumps(obj).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _missing(self) -> None:
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_GET(self):
                if self.path == "/health":
                    self.send_response(fake.health)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if fake.flavor == "llama-server":
                    return self._json({"chat_template": CHATML, "bos_token": "", "eos_token": "<|im_end|>",
                                       "default_generation_settings": {"n_ctx": 4096}, "total_slots": fake.slots})
                if self.path == "/v1/models":
                    return self._json({"object": "list", "data": [{"id": "fake-model", "object": "model",
                                                                   "max_model_len": 4096}]})
                if (fake.flavor, self.path) in (("vllm", "/version"), ("sglang", "/get_model_info")):
                    return self._json({"version": "0.0-fake"} if fake.flavor == "vllm"
                                      else {"model_path": "fake-model", "is_generation": True})
                return self._missing()

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
                if self.path == "/tokenize":
                    text = body.get("content", body.get("prompt", ""))
                    return self._json({"tokens": list(range(max(1, len(text) // 4)))})
                fake.prompts.append(body["prompt"])
                fake.bodies.append(body)
                if fake.flavor != "llama-server":
                    return self._openai(body)
                n = int(body.get("n_cmpl") or 1) if fake.n_cmpl else 1
                text = fake.reply(body["prompt"])[: body.get("n_predict", 10 ** 6)]
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                try:
                    if fake.garbage:
                        data = b"data: {not json\n\n"
                        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n0\r\n\r\n")
                        return
                    for ch in text:  # children interleaved, told apart by index (as n_cmpl streams them)
                        for i in range(n):
                            self._chunk({"index": i, "content": ch, "tokens": [1], "stop": False})
                    if len(text) < body.get("n_predict", 10 ** 6):  # ended by itself: llama-server streams the
                        for i in range(n):                           # end-of-turn token as an empty piece
                            self._chunk({"index": i, "content": "", "tokens": [2], "stop": False})
                    for i in range(n):
                        self._chunk({"index": i, "content": "", "stop": True, "stop_type": "eos",
                                     "tokens_evaluated": max(1, len(body["prompt"]) // 4),
                                     "tokens_predicted": len(text), "id_slot": i, "timings": {"cache_n": 0}})
                    self.wfile.write(b"0\r\n\r\n")
                except (BrokenPipeError, ConnectionResetError):
                    pass  # ponder closed the stream: its machine decided

            def _openai(self, body: dict) -> None:
                full = fake.reply(body["prompt"])
                text = full[: body.get("max_tokens", 16)]
                if not body.get("stream"):
                    return self._json({"object": "text_completion", "choices": [
                        {"index": 0, "text": text, "finish_reason": "length" if len(text) < len(full) else "stop",
                         "logprobs": {"tokens": list(text), "token_logprobs": [-0.1] * len(text),
                                      "top_logprobs": [{c: -0.1} for c in text]}}],
                        "usage": {"prompt_tokens": 10, "completion_tokens": len(text), "total_tokens": 10 + len(text)}})
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                try:
                    for i, ch in enumerate(text):
                        self._chunk({"object": "text_completion", "choices": [
                            {"index": 0, "text": ch, "finish_reason": None, "stop_reason": None,
                             "logprobs": {"tokens": [ch], "token_logprobs": [-0.1], "top_logprobs": [{ch: -0.1}],
                                          "text_offset": [i]}}]})
                    finish = "length" if len(text) < len(full) else "stop"
                    self._chunk({"object": "text_completion", "choices": [
                        {"index": 0, "text": "", "finish_reason": finish, "stop_reason": None}]})
                    if (body.get("stream_options") or {}).get("include_usage"):
                        self._chunk({"object": "text_completion", "choices": [], "usage": {
                            "prompt_tokens": 10, "completion_tokens": len(text), "total_tokens": 10 + len(text),
                            "prompt_tokens_details": {"cached_tokens": 8}}})
                    data = b"data: [DONE]\n\n"
                    self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                    self.wfile.write(b"0\r\n\r\n")
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def _chunk(self, obj: dict) -> None:
                data = b"data: " + json.dumps(obj).encode() + b"\n\n"
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                self.wfile.flush()

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.handle_error = lambda request, address: None  # a stream ponder closed is not an error
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def close(self) -> None:
        self.server.shutdown()

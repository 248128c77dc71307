"""A scripted stand-in for llama-server's native API (``/props``, ``/tokenize``, streamed ``/completion``), for the
rare paths the tiny model will not take on its own (a tool call inside its thinking).  ``reply(prompt)`` gives
the text a call streams, one character a token; every request's prompt is recorded."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from conftest import free_port

CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


class FakeLlamaServer:
    def __init__(self, reply) -> None:
        self.reply, self.prompts = reply, []
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

            def do_GET(self):
                self._json({"chat_template": CHATML, "bos_token": "", "eos_token": "<|im_end|>",
                            "default_generation_settings": {"n_ctx": 4096}})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
                if self.path == "/tokenize":
                    return self._json({"tokens": list(range(max(1, len(body.get("content", "")) // 4)))})
                fake.prompts.append(body["prompt"])
                text = fake.reply(body["prompt"])[: body.get("n_predict", 10 ** 6)]
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                try:
                    for ch in text:
                        self._chunk({"content": ch, "tokens": [1], "stop": False})
                    self._chunk({"content": "", "stop": True, "stop_type": "eos", "tokens_evaluated": 10,
                                 "tokens_predicted": len(text), "timings": {"cache_n": 0}})
                    self.wfile.write(b"0\r\n\r\n")
                except (BrokenPipeError, ConnectionResetError):
                    pass  # ponder closed the stream: its machine decided

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

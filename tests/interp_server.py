"""A chat-completions server on loopback for the auto-interpretation tests: speaks the protocol the openai client
speaks (POST /v1/chat/completions, Bearer key), answers as a deterministic oracle (an explainer that names the
most often marked token; a scorer that says 1 where the named token is in an example, or is every marked token),
and can be told to fail: 401 on a wrong key, a script of 429/500/timeouts/malformed bodies, or holding requests
until released (to kill a client mid-run). Counts the requests it answered per prompt."""

from __future__ import annotations

import collections
import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

EXPLAINED = re.compile(r'\[EXPLANATION\]: the token "(.*?)"')
NAMED = re.compile(r'(?:Feature|Latent explanation): the token "(.*?)"')
EXAMPLE = re.compile(r"^Example (\d+): ?(.*)$", re.M)


def oracle(messages: list[dict]) -> tuple[str, list[bool] | None]:
    """(answer text, the 0/1 list it holds or None for an explanation) for the last user message."""
    last = messages[-1]["content"]
    if "Excerpt" in last:  # an explainer prompt: name the most often marked token
        marked = collections.Counter(m.strip() for m in re.findall(r"<<(.*?)>>", last))
        tok = marked.most_common(1)[0][0] if marked else "nothing"
        return f'The marked tokens are all one word.\n[EXPLANATION]: the token "{tok}"', None
    named = NAMED.search(last)
    word = named.group(1) if named else "\x00"
    out = []
    for _, text in EXAMPLE.findall(last):
        spans = re.findall(r"<<(.*?)>>", text)
        if spans:
            out.append(all(s.strip() == word for s in spans))
        else:
            out.append(bool(re.search(rf"(?<![\w#]){re.escape(word)}(?!\w)", text)))
    return "[" + ",".join(str(int(v)) for v in out) + "]", out


def logprob_content(text: str, preds: list[bool] | None) -> list[dict]:
    """Per answer token, log-probabilities that put 0.9 on the chosen digit (0.1 on the other)."""
    import math

    content, k = [], 0
    for ch in text:
        if ch in "01" and preds is not None:
            p1 = 0.9 if preds[k] else 0.1
            k += 1
            top = [{"token": "1", "logprob": math.log(p1), "bytes": None},
                   {"token": "0", "logprob": math.log(1 - p1), "bytes": None}]
            content.append({"token": ch, "logprob": math.log(p1 if ch == "1" else 1 - p1), "bytes": None,
                            "top_logprobs": top})
        else:
            content.append({"token": ch, "logprob": 0.0, "bytes": None, "top_logprobs": []})
    return content


#: scripted replies that are not an answer: (status, body, content type)
FATES = {"429": (429, b'{"error": {"message": "fate 429"}}', "application/json"),
         "500": (500, b'{"error": {"message": "fate 500"}}', "application/json"),
         "garbage": (200, b"<html>not json</html>", "text/html"),
         "nochoices": (200, b'{"id": "x", "object": "chat.completion", "choices": []}', "application/json"),
         "badjson": (200, b"{not json", "application/json")}  # claims JSON, is not


MODELS = json.dumps({"object": "list", "data": [{"id": "oracle-1", "object": "model", "created": 0,
                                                 "owned_by": "test"}]}).encode()


class ChatServer:
    """``with ChatServer(key) as s:`` — ``s.url`` is the base URL (``.../v1``)."""

    def __init__(self, key: str = "sk-test-secret-0123456789") -> None:
        self.key = key
        self.answered: collections.Counter = collections.Counter()  #: prompt digest -> answers sent
        self.received = 0
        self.script: list[str] = []  #: next requests' fates: "429", "500", "slow", "garbage", "nochoices"
        self.hold_after: int | None = None  #: answer this many, then hold every further request until released
        self.release = threading.Event()
        self.bodies: list[dict] = []
        self.headers: list[dict] = []
        self.lock = threading.Lock()

    def __enter__(self) -> ChatServer:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a) -> None:
                pass

            def _send(self, code: int, body: bytes, ctype: str = "application/json") -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                if code == 429:
                    self.send_header("Retry-After", "0")
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:  # noqa: N802 - http.server's API: /v1/models, the clients' first check
                ok = self.headers.get("Authorization") == f"Bearer {server.key}"
                self._send(200 if ok else 401, MODELS if ok else b'{"error": {"message": "Incorrect API key"}}')

            def do_POST(self) -> None:  # noqa: N802 - http.server's API
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server.lock:
                    server.received += 1
                    server.bodies.append(body)
                    server.headers.append(dict(self.headers))
                    fate = server.script.pop(0) if server.script else ""
                    hold = server.hold_after is not None and sum(server.answered.values()) >= server.hold_after
                if self.headers.get("Authorization") != f"Bearer {server.key}":
                    return self._send(401, json.dumps({"error": {"message": "Incorrect API key provided",
                                                                 "type": "invalid_request_error"}}).encode())
                if hold:
                    server.release.wait(60)
                    return self._send(503, b'{"error": {"message": "released"}}')
                if fate == "slow":
                    time.sleep(3)
                if fate in FATES:
                    return self._send(*FATES[fate])
                text, preds = oracle(body["messages"])
                if fate in ("empty", "markonly"):
                    text = "" if fate == "empty" else "[EXPLANATION]:"
                choice = {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}
                if body.get("logprobs"):
                    choice["logprobs"] = {"content": logprob_content(text, preds)}
                reply = {"id": "c", "object": "chat.completion", "created": 0, "model": body["model"],
                         "choices": [choice],
                         "usage": {"prompt_tokens": len(json.dumps(body["messages"])) // 4,
                                   "completion_tokens": len(text) // 4,
                                   "total_tokens": len(json.dumps(body["messages"])) // 4 + len(text) // 4}}
                with server.lock:
                    server.answered[json.dumps(body["messages"], sort_keys=True)] += 1
                self._send(200, json.dumps(reply).encode())

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        return self

    def __exit__(self, *exc) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


def main() -> None:
    """``python -m tests.interp_server KEY``: serve until killed (benchmarks run it in its own process); prints
    the base URL on the first line."""
    import sys

    with ChatServer(sys.argv[1] if len(sys.argv) > 1 else "sk-bench") as server:
        print(server.url, flush=True)
        threading.Event().wait()


if __name__ == "__main__":
    main()

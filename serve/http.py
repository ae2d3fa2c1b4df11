"""The HTTP side of ``gptedge serve``: Python's own threaded HTTP server, one thread per connection,
all of them handing requests to one ``runtime.Engine``.

The standard library is enough here: the work is the engine's batched steps, one thread; each
connection's thread only parses JSON, waits on its request's events and writes them out (tested
with 32 concurrent streaming clients). So ``gptedge serve`` runs on a runtime-only install.

Routes: ``POST /v1/completions`` (streamed as server-sent events when asked), ``POST
/v1/chat/completions`` (the messages laid out by the bundle's chat template; a 400 for a bundle
that declares none, a base model), ``GET /v1/models``, ``GET /health``, ``GET /metrics``
(Prometheus text). With an API key, ``/v1/*`` needs ``Authorization: Bearer KEY``. A client that
goes away cancels its generation; one that stops sending mid-request is answered 408 after
``READ_TIMEOUT_S``. Every error, http.server's own included, is an OpenAI error object.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import queue
import select
import socket
import sys
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Iterator

from gptedge.errors import UserError
from gptedge.runtime import Busy, Engine, Event, Job, Model, chat, token_logprobs
from gptedge.serve import openai
from gptedge.serve.metrics import prometheus

MAX_BODY = 4 * 1024 * 1024  # bytes of JSON a request may send
POLL_S = 0.25  # how often a waiting request checks whether its client is still there
# How long a read (or a write) may wait on the client before its connection is given up. Only a
# request is read: a generation waits on the engine, not the socket, so a long stream is not cut.
READ_TIMEOUT_S = 60
# The fix for each refusal http.server makes before a route runs (others: a malformed request line).
REQUEST_FIXES = {414: "send long parameters in the JSON body of a POST", 431: "send fewer and shorter headers",
                 505: "send an HTTP/1.1 request"}


class App:
    """What every connection's handler shares: the model, its engine and the settings."""

    def __init__(self, model: Model, engine: Engine, api_key: str | None) -> None:
        self.model, self.engine, self.api_key = model, engine, api_key
        self.model_id = model.variant
        self.started = int(time.time())
        self.rejected = 0
        # Why the bundle's chat template cannot be used here (jinja2 missing), said once at start.
        self.chat_problem: str | None = None
        if model.manifest.chat_template is not None:
            try:
                chat.check_template(model.manifest.chat_template)
            except UserError as e:
                self.chat_problem = str(e)

    def models(self) -> dict:
        m = self.model.manifest
        data = [{"id": name, "object": "model", "created": self.started, "owned_by": "gptedge",
                 "precision": v.precision, "served": name == self.model_id} for name, v in m.variants.items()]
        return {"object": "list", "data": data}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = READ_TIMEOUT_S  # a client that never sends its request would hold its thread forever
    server: "Server"

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # a token goes out at once

    def handle(self) -> None:
        """Every request on the connection. A client that went away (at any point: mid-request,
        while its answer or its error was written) ends it quietly; its generation was cancelled."""
        with contextlib.suppress(ConnectionError):
            super().handle()

    # -- routing -----------------------------------------------------------------------------------

    def do_GET(self) -> None:
        self._handle(self._get)

    def do_POST(self) -> None:
        self._handle(self._post)

    def _handle(self, route) -> None:
        try:
            route(self.path.split("?", 1)[0].rstrip("/") or "/")
        except openai.ApiError as e:
            self._json(e.status, e.body(), e.headers)

    def _get(self, path: str) -> None:
        app = self.server.app
        if path == "/health":
            e = app.engine
            return self._json(200, {"status": "ok", "model": app.model_id, "slots": e.slots, "busy": e.busy,
                                    "queued": e.queued})
        if path == "/metrics":
            return self._send(200, prometheus(app).encode(), "text/plain; version=0.0.4")
        self._authorize()
        if path == "/v1/models":
            return self._json(200, app.models())
        if path.startswith("/v1/models/"):
            found = [m for m in app.models()["data"] if m["id"] == path[len("/v1/models/"):]]
            if found:
                return self._json(200, found[0])
            raise openai.ApiError(404, f"no model {path[len('/v1/models/'):]!r} in this bundle", code="model_not_found")
        raise openai.ApiError(404, f"no route GET {path}", kind="not_found_error")

    def _post(self, path: str) -> None:
        try:
            if path not in ("/v1/completions", "/v1/chat/completions"):
                raise openai.ApiError(404, f"no route POST {path}", kind="not_found_error")
            self._authorize()
        except openai.ApiError as e:  # answered before the body is read: the connection closes, as in _body
            e.headers["Connection"] = "close"
            raise
        body = self._body()
        if path == "/v1/chat/completions":
            return self._chat(body)
        self._completions(body)

    # -- requests ----------------------------------------------------------------------------------

    def _authorize(self) -> None:
        key = self.server.app.api_key
        if key is None:
            return
        given = self.headers.get("Authorization", "")
        if not given.startswith("Bearer ") or not hmac.compare_digest(given[len("Bearer "):].encode(), key.encode()):
            raise openai.ApiError(401, "missing or wrong API key: send Authorization: Bearer KEY",
                                  kind="authentication_error", code="invalid_api_key")

    def _body(self) -> Any:
        """The request's JSON. A refusal before the whole body is read closes the connection: what
        the client sends next is the rest of this body, not a request."""
        close = {"Connection": "close"}
        given = self.headers.get("Content-Length")
        if given is None:
            raise openai.ApiError(411, "send a Content-Length header with the JSON body", headers=close)
        if not (given.isascii() and given.isdigit()):
            raise openai.ApiError(400, f"the Content-Length header is {given!r}: send the body's size in bytes, "
                                       "a whole number", headers=close)
        length = int(given)
        if length > MAX_BODY:
            raise openai.ApiError(413, f"the body is {length} bytes; at most {MAX_BODY} are taken", headers=close)
        try:
            data = self.rfile.read(length)
        except TimeoutError:
            raise openai.ApiError(408, f"the body stopped coming: of the {length} bytes Content-Length announced, "
                                       f"nothing more came for {self.timeout} s; send the whole body at once",
                                  headers=close) from None
        if len(data) < length:
            raise openai.ApiError(400, f"the body ended after {len(data)} of the {length} bytes Content-Length "
                                       "announced: send the whole body", headers=close)
        try:
            return json.loads(data)
        except RecursionError:
            raise openai.ApiError(400, "the body's JSON is nested too deeply to read: send a flatter object") from None
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise openai.ApiError(400, f"the body is not JSON ({e})") from None
        except ValueError:  # what else json.loads raises: Python's limit on an integer's digits
            raise openai.ApiError(400, "the body holds a number with more digits than this server reads: "
                                       "send shorter numbers") from None

    def _completions(self, body: Any) -> None:
        app = self.server.app
        m = app.model.manifest
        request = self._served(openai.read_completion(body, app.model.settings, m.model.context_length,
                                                      m.model.vocab_size))
        jobs = self._submit(request)
        cid = openai.new_id()
        if request.stream:
            self._stream(cid, request, jobs)
        else:
            self._whole(cid, request, jobs)

    def _chat(self, body: Any) -> None:
        app = self.server.app
        m = app.model.manifest
        if m.chat_template is None:
            raise openai.ApiError(400, "this bundle declares no chat template (it is a base model, which continues "
                                       "text): use POST /v1/completions with a prompt")
        if app.chat_problem:
            raise openai.ApiError(500, f"chat completions are unavailable on this server: {app.chat_problem}",
                                  kind="server_error")
        request = self._served(openai.read_chat(body, app.model.settings, m.model.context_length, m.model.vocab_size))
        try:
            request.prompts = [app.model.chat_prompt(request.prompts[0])]
        except UserError as e:
            raise openai.ApiError(400, str(e), param="messages") from None
        job = self._submit(request)[0]
        cid, model_id = openai.new_id("chatcmpl"), app.model_id
        text, finish, logprobs, usage = "", None, [], None
        if request.stream:
            self._start_stream()
            self._events_out([openai.chat_chunk(cid, model_id, {"role": "assistant", "content": ""})])
        for ready in self._events([job]):
            chunks = []
            for _, event in ready:
                entry = None
                if request.logprobs and event.token is not None:
                    entry = self._chat_logprob(event, request.top_logprobs)
                    logprobs.append(entry)
                if event.result is not None:
                    finish = openai.FINISH.get(event.finish_reason, "stop")
                    usage = openai.usage(event.result.prompt_tokens, len(event.result.token_ids))
                text += event.text
                if request.stream and (event.text or entry or finish):
                    chunks.append(openai.chat_chunk(cid, model_id, {"content": event.text} if event.text else {},
                                                    finish, {"content": [entry]} if entry else None))
            self._events_out(chunks)
        if not request.stream:
            return self._json(200, openai.chat_completion(cid, model_id, text, finish,
                                                          {"content": logprobs} if request.logprobs else None, usage))
        if request.include_usage:
            self._events_out([openai.chat_chunk(cid, model_id, None, usage=usage)])
        self._end_stream()

    def _chat_logprob(self, event: Event, top: int) -> dict:
        model = self.server.app.model
        named = [(model.decode([t]), model.token_bytes[t], lp) for t, lp in event.top[:top]]
        return openai.chat_logprob(model.decode([event.token]), model.token_bytes[event.token], event.logprob, named)

    def _served(self, request: openai.CompletionRequest) -> openai.CompletionRequest:
        """``request``, unless it names another model than the one served (a 404)."""
        app = self.server.app
        if request.model not in (None, app.model_id):
            raise openai.ApiError(404, f"model {request.model!r} is not served here: this server runs "
                                       f"{app.model_id!r}: leave model out or name that one (another variant of the "
                                       "bundle is served by its own gptedge serve --variant NAME)",
                                  param="model", code="model_not_found")
        return request

    def _submit(self, request: openai.CompletionRequest) -> list[Job]:
        """A job per prompt: all of them, or none (429 when the server is full now, 400 when it
        could never take them all: the engine holds at most slots + queue requests)."""
        app = self.server.app
        most = app.engine.slots + app.engine.queue_size
        if len(request.prompts) > most:
            raise openai.ApiError(400, f"the request has {len(request.prompts)} prompts, more than this server takes "
                                       f"at once ({app.engine.slots} slots + a queue of {app.engine.queue_size}): "
                                       f"send at most {most} per request, or start gptedge serve with more --slots "
                                       "or --queue", param="prompt")
        jobs: list[Job] = []
        try:
            for prompt in request.prompts:
                jobs.append(app.engine.submit(prompt, request.settings, logprobs=request.logprobs))
        except Busy as e:
            for job in jobs:
                job.cancel()
            app.rejected += 1
            raise openai.ApiError(429, str(e), kind="rate_limit_error", code="server_busy",
                                  headers={"Retry-After": "1"}) from None
        except UserError as e:
            for job in jobs:
                job.cancel()
            raise openai.ApiError(400, str(e), param="prompt") from None
        return jobs

    def _events(self, jobs: list[Job]) -> Iterator[list[tuple[int, Event]]]:
        """Every job's events as they come, (prompt index, event), in batches of what is ready (so
        a busy server writes several tokens per system call); cancels all if the client leaves."""
        if len(jobs) == 1:
            merged = jobs[0].events  # one prompt, the usual case: its own queue, no forwarding thread
            tag = lambda e: (0, e)  # noqa: E731
        else:
            merged = queue.Queue()
            for i, job in enumerate(jobs):
                threading.Thread(target=lambda i=i, job=job: [merged.put((i, e)) for e in job], daemon=True).start()
            tag = lambda e: e  # noqa: E731
        left = len(jobs)
        try:
            if self._client_gone():  # it left while its request was read: nothing to generate for
                raise ConnectionResetError("the client went away")
            while left:
                try:
                    ready = [tag(merged.get(timeout=POLL_S))]
                except queue.Empty:
                    if self._client_gone():
                        raise ConnectionResetError("the client went away") from None
                    continue
                while True:
                    try:
                        ready.append(tag(merged.get_nowait()))
                    except queue.Empty:
                        break
                left -= sum(event.result is not None for _, event in ready)
                yield ready
        finally:
            if left:
                for job in jobs:
                    job.cancel()

    def _client_gone(self) -> bool:
        """Whether the client closed its connection (it sends nothing more while it waits)."""
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            return bool(readable) and self.connection.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True

    def _whole(self, cid: str, request: openai.CompletionRequest, jobs: list[Job]) -> None:
        texts = [self._echo(p) if request.echo else "" for p in request.prompts]
        logs = [self._prompt_logprobs(p, request) for p in request.prompts]
        finish, prompt_tokens, completion_tokens = [""] * len(jobs), 0, 0
        for i, event in (e for ready in self._events(jobs) for e in ready):
            texts[i] += event.text
            if event.token is not None and logs[i] is not None:
                logs[i].add(*self._token_logprobs(event))
            if event.result is not None:
                finish[i] = openai.FINISH.get(event.finish_reason, "stop")
                prompt_tokens += event.result.prompt_tokens
                completion_tokens += len(event.result.token_ids)
        choices = [openai.choice(i, texts[i], finish[i], logs[i].since(0) if logs[i] else None) for i in range(len(jobs))]
        self._json(200, openai.completion(cid, self.server.app.model_id, choices,
                                          openai.usage(prompt_tokens, completion_tokens)))

    def _start_stream(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")  # the stream ends when the connection does
        self.end_headers()
        self.close_connection = True

    def _end_stream(self) -> None:
        self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()

    def _stream(self, cid: str, request: openai.CompletionRequest, jobs: list[Job]) -> None:
        self._start_stream()
        model_id = self.server.app.model_id
        logs = [self._prompt_logprobs(p, request) for p in request.prompts]
        if request.echo:
            for i, p in enumerate(request.prompts):
                chunk = openai.choice(i, self._echo(p), None, logs[i].since(0) if logs[i] else None)
                self._events_out([openai.completion(cid, model_id, [chunk], None)])
        prompt_tokens = completion_tokens = 0
        for ready in self._events(jobs):
            out = []
            for i, event in ready:
                lp = None
                if event.token is not None and logs[i] is not None:
                    start = len(logs[i].tokens)
                    logs[i].add(*self._token_logprobs(event))
                    lp = logs[i].since(start)
                finish = None
                if event.result is not None:
                    finish = openai.FINISH.get(event.finish_reason, "stop")
                    prompt_tokens += event.result.prompt_tokens
                    completion_tokens += len(event.result.token_ids)
                if event.text or lp or finish:
                    out.append(openai.completion(cid, model_id, [openai.choice(i, event.text, finish, lp)], None))
            self._events_out(out)
        if request.include_usage:
            self._events_out([openai.completion(cid, model_id, [], openai.usage(prompt_tokens, completion_tokens))])
        self._end_stream()

    def _events_out(self, chunks: list[dict]) -> None:
        """Server-sent events, one per chunk, in one write."""
        if chunks:
            self.wfile.write(b"".join(b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks))
            self.wfile.flush()

    def _echo(self, prompt: str | list[int]) -> str:
        return prompt if isinstance(prompt, str) else self.server.app.model.decode(prompt)

    def _prompt_logprobs(self, prompt: str | list[int], request: openai.CompletionRequest) -> openai.Logprobs | None:
        """A logprobs object, holding the echoed prompt's tokens when ``echo`` is on (the first
        has no prediction, so null as in the API)."""
        if not request.logprobs:
            return None
        log = openai.Logprobs()
        if request.echo:
            model = self.server.app.model
            ids = model.encode(prompt) if isinstance(prompt, str) else list(prompt)
            chosen, top = token_logprobs(model.decoder, ids, 1, request.logprobs) if len(ids) > 1 else ([], [])
            log.add(model.decode([ids[0]]), None, None)
            for token, lp, candidates in zip(ids[1:], chosen, top):
                log.add(model.decode([token]), float(lp), self._named(candidates))
        return log

    def _token_logprobs(self, event: Event) -> tuple[str, float | None, dict[str, float]]:
        return self.server.app.model.decode([event.token]), event.logprob, self._named(event.top)

    def _named(self, candidates: list[tuple[int, float]]) -> dict[str, float]:
        decode = self.server.app.model.decode
        return {decode([t]): lp for t, lp in candidates}

    # -- responses ---------------------------------------------------------------------------------

    def _json(self, status: int, data: dict, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(data).encode(), "application/json", headers)

    def _send(self, status: int, payload: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":  # its answer is the headers alone
            self.wfile.write(payload)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """http.server's own refusals, made before any route (a request line that is not HTTP, a
        URL or headers too long, a method without a do_*), as the routes' JSON error object, not
        its HTML page. The connection closes: what comes next cannot be trusted to be a request."""
        self.log_error("code %d, message %s", code, message)
        if code == HTTPStatus.NOT_IMPLEMENTED:  # a method this server has no do_* for
            error = openai.ApiError(405, f"method {self.command} is not allowed: use GET or POST",
                                    headers={"Allow": "GET, POST"})
        else:
            fix = REQUEST_FIXES.get(code, "send an HTTP/1.1 request, such as POST /v1/completions (this server "
                                          "speaks plain HTTP, not HTTPS)")
            error = openai.ApiError(code, f"{message or HTTPStatus(code).phrase}: {fix}")
        if self.request_version == "HTTP/0.9":  # a garbage request line leaves it there: then no status line
            self.request_version = "HTTP/1.0"  # would be sent, and clients today read only HTTP/1.x answers
        self._json(error.status, error.body(), {**error.headers, "Connection": "close"})

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.verbose:
            sys.stderr.write(f"gptedge serve: {self.address_string()} {format % args}\n")


class Server(ThreadingHTTPServer):
    daemon_threads = True  # a stuck client never keeps the process alive
    allow_reuse_address = True
    request_queue_size = 256  # connections waiting to be accepted (the default 5 drops a burst of clients)

    def __init__(self, app: App, host: str, port: int, verbose: bool = False) -> None:
        self.app, self.verbose = app, verbose
        try:
            super().__init__((host, port), Handler)
        except OSError as e:
            raise UserError(f"cannot listen on {host}:{port} ({e.strerror}): pick another --port or --host") from None

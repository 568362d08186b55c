"""A fake LLM server that speaks the real OpenAI HTTP protocol, on loopback, for tests and
benchmarks.

It answers ``/v1/chat/completions`` and ``/v1/completions`` with rule-based judgements,
and can inject latency, 429 (with ``Retry-After``), 500, timeouts and garbled text, a
rate-limit outage (every request 429 for the first N seconds, ``Retry-After`` in seconds or
as an HTTP date), auth and model errors (401 whose body echoes the ``Authorization`` header,
as some gateways do; 403; 404), and paid answers with odd bodies (invalid UTF-8, malformed
``usage``). It records the ``Authorization`` values it saw and the requests' messages, so a
test can check what really went over the wire (``/stats``, ``/requests``). Clients
under test talk to it over real sockets, so retries, timeouts and connection pooling are
exercised for real. Run it in its own process (``python -m simfarm.testing.openai_server``
or :func:`start_server`) so its CPU does not compete with the client's event loop.

Judging rule: the server finds the two candidate outputs in the prompt (the layouts of the
bundled pairwise templates) and prefers the longer one (``--policy longest``), the first
(``first``) or a seeded coin (``random``). With ``logprobs`` asked for, it answers one token
``m`` (first output wins) or ``M`` with top logprobs for both, like AlpacaEval 2.0's judge.
A completions request with ``echo`` and ``max_tokens: 0`` (scoring a text, as likelihood
annotators do) gets the prompt's tokens back with deterministic, context-dependent logprobs.

Scripted answers (``--script FILE``, a JSON list of ``{"match": regex, "replies": [text,
...]}``): a prompt matching a rule's regex is answered with its replies in turn, per distinct
prompt (the first request of a prompt gets the first reply, a re-send the next, the last
repeats), so a test can script a rating judge's out-of-range answer and then a good one. With
``logprobs`` asked for, a scripted reply comes back as word, number and punctuation tokens;
each number token ``n`` carries top logprobs ``n: log .6, n-1: log .25, n+1: log .15`` (a
score-token distribution whose expectation is ``n - 0.1``).
"""

from __future__ import annotations

import argparse
import asyncio
import email.utils
import hashlib
import json
import math
import random
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

# Layouts of the bundled templates: AlpacaFarm's "## Output (a):" sections, and
# AlpacaEval's {"model_identifier": ..., "output": """..."""} records.
_FARM_LAYOUT = re.compile(
    r"## Output \(a\):\n(?P<first>.*?)\n\n## Output \(b\):\n(?P<second>.*?)\n\n## ", re.S
)
_EVAL_LAYOUT = re.compile(
    r'"model_identifier": "m",\s*"output": """(?P<first>.*?)"""\s*\},\s*\{\s*'
    r'"model_identifier": "M",\s*"output": """(?P<second>.*?)"""',
    re.S,
)


@dataclass
class ServerConfig:
    latency_s: float = 0.0
    policy: str = "longest"
    fault_rate: float = 0.0
    """Fraction of requests that get a fault, split evenly over ``fault_kinds``."""
    fault_kinds: tuple[str, ...] = ("429", "500", "timeout", "garbled")
    timeout_sleep_s: float = 30.0
    """How long a 'timeout' fault stalls before answering (longer than the client waits)."""
    seed: int = 0
    rate_limit_for_s: float = 0.0
    """A rate-limit outage: every request in the first this-many seconds after the first
    request is answered 429."""
    retry_after: str = "0.05"
    """``Retry-After`` sent with 429s: seconds, or ``date`` for an HTTP date (the outage's
    end, rounded up to the next whole second as HTTP dates are)."""
    script: list[dict[str, Any]] = field(default_factory=list)
    """Scripted answers: ``{"match": regex, "replies": [text, ...]}`` rules, first match wins."""


_MAX_RECORDED = 500
"""Requests whose messages are kept for ``/requests`` (the first ones)."""
_BAD_UTF8_MARK = "BAD-UTF8-HERE"
"""Replaced by bytes that are not UTF-8 in a ``bad_utf8`` answer."""


@dataclass
class ServerStats:
    requests: int = 0
    completed: int = 0
    faults: dict[str, int] = field(default_factory=dict)
    prompts: dict[str, int] = field(default_factory=dict)
    """How often each distinct prompt was requested (to count re-sent requests)."""
    authorization: set[str] = field(default_factory=set)
    """Distinct ``Authorization`` header values received (to check a key was really sent)."""
    recorded: list[dict[str, Any]] = field(default_factory=list)
    """``messages``/``prompt`` of the first requests, as the server received them."""
    first_request_at: float | None = None


_SCRIPT_TOKENS = re.compile(r"\d+|[^\W\d_]+|\s+|.", re.S)


def _scripted_logprobs(text: str) -> list[tuple[str, float, dict[str, float]]]:
    """(token, logprob, top logprobs) per token of a scripted reply (see the module doc)."""
    out: list[tuple[str, float, dict[str, float]]] = []
    for token in _SCRIPT_TOKENS.findall(text):
        if token.isdigit():
            value = int(token)
            tops = {token: math.log(0.6), str(value + 1): math.log(0.15)}
            if value > 0:
                tops[str(value - 1)] = math.log(0.25)
            out.append((token, tops[token], tops))
        else:
            out.append((token, 0.0, {token: 0.0}))
    return out


def _prompt_text(body: dict[str, Any]) -> str:
    if "messages" in body:
        return "\n".join(str(m.get("content", "")) for m in body["messages"])
    return str(body.get("prompt", ""))


def echo_logprobs(prompt: str) -> tuple[list[str], list[float | None]]:
    """The fake language model: ``prompt``'s tokens (words with their leading whitespace)
    and each one's log-probability, which depends on the token and everything before it;
    the first is ``None`` (nothing precedes it), as OpenAI's ``echo`` sends it."""
    tokens = re.findall(r"\s*\S+|\s+", prompt) or [""]
    logprobs: list[float | None] = [None]
    state = hashlib.sha256(tokens[0].encode()).digest()
    for token in tokens[1:]:
        state = hashlib.sha256(state + token.encode()).digest()  # the whole prefix
        logprobs.append(-0.05 - int.from_bytes(state[:2], "big") % 400 / 100)
    return tokens, logprobs


class FakeOpenAIServer:
    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.stats = ServerStats()
        self._rng = random.Random(config.seed)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/completions", self._completions)
        app.router.add_get("/stats", self._stats)
        app.router.add_get("/requests", self._requests)
        app.router.add_post("/reset", self._reset)
        return app

    async def _stats(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "requests": self.stats.requests,
                "completed": self.stats.completed,
                "faults": self.stats.faults,
                "distinct_prompts": len(self.stats.prompts),
                "max_requests_per_prompt": max(self.stats.prompts.values(), default=0),
                "resent": sum(n - 1 for n in self.stats.prompts.values()),
                "authorization": sorted(self.stats.authorization),
            }
        )

    async def _requests(self, request: web.Request) -> web.Response:
        return web.json_response(self.stats.recorded)

    def _rate_limited(self, now: float) -> web.Response | None:
        """The 429 of a rate-limit outage, while it lasts."""
        if self.stats.first_request_at is None:
            self.stats.first_request_at = now
        ends = self.stats.first_request_at + self.config.rate_limit_for_s
        if now >= ends:
            return None
        self.stats.faults["outage"] = self.stats.faults.get("outage", 0) + 1
        if self.config.retry_after == "date":
            ends_wall_clock = time.time() + (ends - now)
            retry_after = email.utils.formatdate(math.ceil(ends_wall_clock), usegmt=True)
        else:
            retry_after = self.config.retry_after
        return web.json_response(
            {"error": {"message": "Rate limit reached", "type": "rate_limit"}},
            status=429,
            headers={"Retry-After": retry_after},
        )

    async def _reset(self, request: web.Request) -> web.Response:
        self.stats = ServerStats()
        return web.json_response({"ok": True})

    def _verdict_first_wins(self, prompt: str) -> bool:
        match = _FARM_LAYOUT.search(prompt) or _EVAL_LAYOUT.search(prompt)
        if self.config.policy == "first":
            return True
        if self.config.policy == "random" or match is None:
            return self._rng.random() < 0.5
        return len(match["first"]) >= len(match["second"])

    async def _handle(self, request: web.Request, chat: bool) -> web.Response:
        body = await request.json()
        self.stats.requests += 1
        authorization = request.headers.get("Authorization")
        if authorization is not None:
            self.stats.authorization.add(authorization)
        if len(self.stats.recorded) < _MAX_RECORDED:
            self.stats.recorded.append(
                {key: body[key] for key in ("messages", "prompt") if key in body}
            )
        prompt = _prompt_text(body)
        self.stats.prompts[prompt] = self.stats.prompts.get(prompt, 0) + 1
        if self.config.rate_limit_for_s:
            outage = self._rate_limited(time.monotonic())
            if outage is not None:
                return outage
        fault = None
        if self.config.fault_rate and self._rng.random() < self.config.fault_rate:
            fault = self._rng.choice(self.config.fault_kinds)
            self.stats.faults[fault] = self.stats.faults.get(fault, 0) + 1
        if self.config.latency_s:
            await asyncio.sleep(self.config.latency_s)
        if fault == "429":
            return web.json_response(
                {"error": {"message": "Rate limit reached", "type": "rate_limit"}},
                status=429,
                headers={"Retry-After": "0.05"},
            )
        if fault == "500":
            return web.json_response({"error": {"message": "internal error"}}, status=500)
        if fault == "400":
            return web.json_response({"error": {"message": "bad request"}}, status=400)
        if fault == "401":
            # As some gateways do: the refused credential is echoed back in the body.
            echoed = f"invalid credentials in header 'Authorization: {authorization}'"
            return web.json_response({"error": {"message": echoed}}, status=401)
        if fault == "403":
            return web.json_response({"error": {"message": "forbidden"}}, status=403)
        if fault == "404":
            message = f"The model `{body.get('model')}` does not exist"
            return web.json_response({"error": {"message": message}}, status=404)
        if fault == "timeout":
            await asyncio.sleep(self.config.timeout_sleep_s)
        if not chat and body.get("echo") and body.get("max_tokens") == 0:
            return self._echo(body, prompt)
        first_wins = self._verdict_first_wins(prompt)
        wants_logprobs = bool(body.get("logprobs"))
        scripted = self._scripted(prompt)
        if scripted is not None and fault != "garbled":
            return self._answer_scripted(body, chat, prompt, scripted, wants_logprobs)
        if fault == "garbled":
            text, token = "I cannot decide ¯\\_(ツ)_/¯ lorem ipsum", "I"
            tops = {"I": -0.1, "The": -2.5}
        elif fault == "bad_utf8" and not wants_logprobs:
            text = ("Output (a)" if first_wins else "Output (b)") + " " + _BAD_UTF8_MARK
            token, tops = text, {text: 0.0}
        elif wants_logprobs:
            token = "m" if first_wins else "M"
            other = "M" if first_wins else "m"
            text, tops = token, {token: math.log(0.8), other: math.log(0.2)}
        else:
            text = "Output (a)" if first_wins else "Output (b)"
            token, tops = text, {text: 0.0}
        self.stats.completed += 1
        usage: dict[str, Any] = {
            "prompt_tokens": max(1, len(prompt) // 4),
            "completion_tokens": max(1, len(text) // 4),
        }
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        if fault == "bad_usage":
            usage = {"prompt_tokens": "many", "completion_tokens": [1], "total_tokens": None}
        n_top = int(body.get("top_logprobs") or 0) if chat else int(body.get("logprobs") or 0)
        top_items = sorted(tops.items(), key=lambda kv: -kv[1])[: max(n_top, 1)]
        if chat:
            choice: dict[str, Any] = {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": "stop",
                "logprobs": None,
            }
            if wants_logprobs:
                choice["logprobs"] = {
                    "content": [
                        {
                            "token": token,
                            "logprob": tops[token],
                            "top_logprobs": [{"token": t, "logprob": lp} for t, lp in top_items],
                        }
                    ]
                }
            obj = "chat.completion"
        else:
            choice = {"index": 0, "text": text, "finish_reason": "stop", "logprobs": None}
            if wants_logprobs:
                choice["logprobs"] = {
                    "tokens": [token],
                    "token_logprobs": [tops[token]],
                    "top_logprobs": [dict(top_items)],
                }
            obj = "text_completion"
        answer = {
            "id": f"fake-{self.stats.requests}",
            "object": obj,
            "created": int(time.time()),
            "model": body.get("model", "fake"),
            "choices": [choice],
            "usage": usage,
        }
        if fault == "bad_utf8":  # a paid answer whose body is not valid UTF-8
            payload = json.dumps(answer).encode().replace(_BAD_UTF8_MARK.encode(), b"\xe9\xff")
            return web.Response(body=payload, content_type="application/json")
        return web.json_response(answer)

    def _echo(self, body: dict[str, Any], prompt: str) -> web.Response:
        """A scoring answer (legacy completions, ``echo`` with ``max_tokens: 0``): the prompt
        back as its tokens (words with their leading space), each with a log-probability
        that depends on the token and everything before it (as a language model's would),
        the first ``null`` as OpenAI sends it."""
        tokens, logprobs = echo_logprobs(prompt)
        offsets, position = [], 0
        for token in tokens:
            offsets.append(position)
            position += len(token)
        self.stats.completed += 1
        usage = {"prompt_tokens": len(tokens), "completion_tokens": 0}
        usage["total_tokens"] = usage["prompt_tokens"]
        choice = {
            "index": 0,
            "text": prompt,
            "finish_reason": "length",
            "logprobs": {
                "tokens": tokens,
                "token_logprobs": logprobs,
                "top_logprobs": [None] * len(tokens),
                "text_offset": offsets,
            },
        }
        answer = {
            "id": f"fake-{self.stats.requests}",
            "object": "text_completion",
            "created": int(time.time()),
            "model": body.get("model", "fake"),
            "choices": [choice],
            "usage": usage,
        }
        return web.json_response(answer)

    def _scripted(self, prompt: str) -> str | None:
        """The scripted reply for this request of ``prompt``, if a rule matches."""
        for rule in self.config.script:
            if re.search(str(rule["match"]), prompt, re.S):
                replies = [str(r) for r in rule["replies"]]
                nth = self.stats.prompts.get(prompt, 1) - 1
                return replies[min(nth, len(replies) - 1)]
        return None

    def _answer_scripted(
        self, body: dict[str, Any], chat: bool, prompt: str, text: str, wants_logprobs: bool
    ) -> web.Response:
        self.stats.completed += 1
        tokens = _scripted_logprobs(text) if wants_logprobs else []
        n_top = int(body.get("top_logprobs") or 0) if chat else int(body.get("logprobs") or 0)

        def top(tops: dict[str, float]) -> list[tuple[str, float]]:
            return sorted(tops.items(), key=lambda kv: -kv[1])[: max(n_top, 1)]

        choice: dict[str, Any]
        if chat:
            choice = {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": "stop",
                "logprobs": None,
            }
            if wants_logprobs:
                choice["logprobs"] = {
                    "content": [
                        {
                            "token": t,
                            "logprob": lp,
                            "top_logprobs": [{"token": a, "logprob": b} for a, b in top(tops)],
                        }
                        for t, lp, tops in tokens
                    ]
                }
        else:
            choice = {"index": 0, "text": text, "finish_reason": "stop", "logprobs": None}
            if wants_logprobs:
                choice["logprobs"] = {
                    "tokens": [t for t, _, _ in tokens],
                    "token_logprobs": [lp for _, lp, _ in tokens],
                    "top_logprobs": [dict(top(tops)) for _, _, tops in tokens],
                }
        prompt_tokens, completion_tokens = max(1, len(prompt) // 4), max(1, len(text) // 4)
        return web.json_response(
            {
                "id": f"fake-{self.stats.requests}",
                "object": "chat.completion" if chat else "text_completion",
                "created": int(time.time()),
                "model": body.get("model", "fake"),
                "choices": [choice],
                "usage": {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": completion_tokens,
                    "total_tokens": prompt_tokens + completion_tokens,
                },
            }
        )

    async def _chat(self, request: web.Request) -> web.Response:
        return await self._handle(request, chat=True)

    async def _completions(self, request: web.Request) -> web.Response:
        return await self._handle(request, chat=False)


async def _serve(config: ServerConfig, host: str, port: int) -> None:
    server = FakeOpenAIServer(config)
    runner = web.AppRunner(server.app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=1024)
    await site.start()
    bound = runner.addresses[0][1]
    print(f"LISTENING {bound}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument("--policy", choices=["longest", "first", "random"], default="longest")
    parser.add_argument("--fault-rate", type=float, default=0.0)
    parser.add_argument("--fault-kinds", default="429,500,timeout,garbled")
    parser.add_argument("--timeout-sleep", type=float, default=30.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rate-limit-for", type=float, default=0.0)
    parser.add_argument("--retry-after", default="0.05")
    parser.add_argument("--script", default=None, help="JSON file of scripted answers.")
    args = parser.parse_args(argv)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        parser.error("the fake server only listens on loopback")
    config = ServerConfig(
        latency_s=args.latency,
        policy=args.policy,
        fault_rate=args.fault_rate,
        fault_kinds=tuple(k for k in args.fault_kinds.split(",") if k),
        timeout_sleep_s=args.timeout_sleep,
        seed=args.seed,
        rate_limit_for_s=args.rate_limit_for,
        retry_after=args.retry_after,
        script=_read_script(args.script) if args.script else [],
    )
    asyncio.run(_serve(config, args.host, args.port))


def _read_script(path: str) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as handle:
        rules = json.load(handle)
    if not isinstance(rules, list) or not all(
        isinstance(r, dict) and "match" in r and r.get("replies") for r in rules
    ):
        raise SystemExit(f"{path}: expected a list of {{match, replies}} rules")
    return rules


@dataclass
class RunningServer:
    """A fake server in its own process; use as a context manager."""

    process: subprocess.Popen[str]
    port: int

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def stats(self) -> dict[str, Any]:
        return self._get("stats")  # type: ignore[no-any-return]

    def requests(self) -> list[dict[str, Any]]:
        """``messages``/``prompt`` of the requests received (the first 500)."""
        return self._get("requests")  # type: ignore[no-any-return]

    def _get(self, path: str) -> Any:
        from urllib.request import urlopen

        with urlopen(f"http://127.0.0.1:{self.port}/{path}", timeout=10) as response:
            return json.loads(response.read())

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def __enter__(self) -> RunningServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_server(
    latency_s: float = 0.0,
    policy: str = "longest",
    fault_rate: float = 0.0,
    fault_kinds: str = "429,500,timeout,garbled",
    timeout_sleep_s: float = 30.0,
    seed: int = 0,
    port: int = 0,
    rate_limit_for_s: float = 0.0,
    retry_after: str = "0.05",
    script: str | None = None,
) -> RunningServer:
    """Start the fake server in a child process on 127.0.0.1 and wait until it listens.

    ``port=0`` picks a free port; pass a previous server's port to restart "the same"
    server (same base URL, so the same cache keys). ``script``: a scripted-answers file
    (see the module docstring)."""
    command = [
        sys.executable,
        "-m",
        "simfarm.testing.openai_server",
        "--latency",
        str(latency_s),
        "--policy",
        policy,
        "--fault-rate",
        str(fault_rate),
        "--fault-kinds",
        fault_kinds,
        "--timeout-sleep",
        str(timeout_sleep_s),
        "--seed",
        str(seed),
        "--port",
        str(port),
        "--rate-limit-for",
        str(rate_limit_for_s),
        "--retry-after",
        retry_after,
        *(["--script", script] if script else []),
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line.startswith("LISTENING "):
        process.kill()
        raise RuntimeError(f"fake server did not start: {line!r}")
    return RunningServer(process=process, port=int(line.split()[1]))


if __name__ == "__main__":
    main()

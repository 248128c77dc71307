"""Built-in tools the model may call in the middle of its thinking.

The model writes ``<tool_call>{"name": "calculator", "arguments": {"expression": "17*23"}}</tool_call>``
inside ``<think>``; the engine pauses only that sequence (it keeps its slot and
its KV), ponder runs the tool here, appends ``<tool_response>…</tool_response>``
and the sequence thinks on from the same state.  Several sequences that call
tools in the same step run their tools in parallel (each in its own thread).

One :class:`ToolBox` serves one request: it counts the request's calls and
tool time against the lane's limits.  Past a limit the model is told so and
the sequence moves to its answer.  Results are cached across requests by
(tool, arguments) in a :class:`ToolCache` the service owns.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from ponder.state import TtlLru
from ponder.telemetry import CURRENT
from ponder.tools.calculator import CalculatorError, calculate

TOOLS: dict[str, dict] = {
    "python": {
        "description": "Run a short Python 3 program (standard library only, no network, no files outside its "
                       "own directory) and read what it prints.",
        "parameters": {"type": "object", "properties": {"code": {"type": "string"}}, "required": ["code"]},
        "example": {"code": "print(sum(range(1, 101)))"},
    },
    "calculator": {
        "description": "Exact arithmetic: + - * / // % ^, parentheses, sqrt, abs, round, min, max, gcd, lcm, "
                       "factorial.",
        "parameters": {"type": "object", "properties": {"expression": {"type": "string"}},
                       "required": ["expression"]},
        "example": {"expression": "(17 * 23) + 4 / 8"},
    },
}


class ToolCache(TtlLru):
    """(tool, arguments) -> result for the lane's ``cache_ttl_s``; bounded, least recently used out first."""


@dataclass
class ToolLimits:
    max_calls: int = 4          # per request (all samples together)
    max_depth: int = 3          # per sequence: calls in one rollout
    timeout_s: float = 10.0     # per call
    max_total_s: float = 30.0   # tool time per request
    max_result_chars: int = 1024
    cache_ttl_s: float = 600.0


def _run_python(code: str, timeout_s: float) -> str:
    from ponder.verifiers.sandbox import Limits, Sandbox

    out = Sandbox(Limits(wall_s=timeout_s, cpu_s=max(1, int(timeout_s)), memory_mb=256, file_mb=4)).run_python(code)
    if out.timed_out:
        raise ToolError(f"the program did not finish within {timeout_s:g} s")
    if out.returncode != 0:
        tail = "\n".join(out.stderr.strip().splitlines()[-6:])
        raise ToolError(f"the program failed:\n{tail}")
    return out.stdout if out.stdout.strip() else "(the program printed nothing)"


class ToolError(Exception):
    """A tool call that failed; its message goes back to the model."""


@dataclass
class ToolBox:
    """The tools one request may use, and what it has used."""

    names: tuple[str, ...]
    limits: ToolLimits = field(default_factory=ToolLimits)
    cache: ToolCache | None = None
    calls: int = 0
    seconds: float = 0.0
    _runners: dict[str, Callable[[dict, float], str]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        unknown = [n for n in self.names if n not in TOOLS]
        if unknown:
            raise ValueError(f"unknown tool(s) {unknown}; built-in tools are {sorted(TOOLS)}")
        self._runners = {
            "python": lambda args, t: _run_python(_arg(args, "code"), t),
            "calculator": lambda args, t: calculate(_arg(args, "expression")),
        }

    @property
    def max_calls(self) -> int:
        return self.limits.max_calls

    @property
    def max_result_tokens(self) -> int:
        return self.limits.max_result_chars // 3

    def exhausted(self, depth: int) -> bool:
        """No further call may run for a sequence that has made ``depth`` calls."""
        return (self.calls >= self.limits.max_calls or depth >= self.limits.max_depth
                or self.seconds >= self.limits.max_total_s)

    def prompt(self) -> str:
        """The system note that teaches the model the call format."""
        lines = ["You can call tools while you think. To call one, write exactly",
                 '<tool_call>{"name": TOOL, "arguments": {...}}</tool_call>',
                 "then stop and wait: the result arrives as <tool_response>...</tool_response>. Tools:"]
        for n in self.names:
            t = TOOLS[n]
            lines.append(f"- {n}: {t['description']} Example: <tool_call>"
                         f"{json.dumps({'name': n, 'arguments': t['example']})}</tool_call>")
        if "python" in self.names:
            lines.append("A fenced block ```python ... ``` in your thinking also runs, and its output follows it.")
        lines.append(f"At most {self.limits.max_calls} calls. Use a tool only when it helps; then give the answer.")
        return "\n".join(lines)

    async def call(self, payload: str, depth: int = 0) -> tuple[str, dict[str, Any]]:
        """Run one call; returns (text for the model, record for ``ponder.tools``)."""
        record: dict[str, Any] = {"name": None, "arguments": None, "seconds": 0.0, "cached": False, "error": None}
        try:
            call = json.loads(payload)
            if not isinstance(call, dict) or not isinstance(call.get("name"), str):
                raise ValueError
        except ValueError:
            record["error"] = "malformed call"
            return ('error: a tool call is {"name": ..., "arguments": {...}} in JSON', record)
        name, args = call["name"], call.get("arguments") or {}
        if isinstance(args, str):  # OpenAI-style arguments are a JSON string
            try:
                args = json.loads(args)
            except ValueError:
                args = {"expression": args} if name == "calculator" else {"code": args}
        record.update(name=name, arguments=args)
        if name not in self.names:
            record["error"] = "unknown tool"
            return f"error: no tool named {name!r}; available: {', '.join(self.names)}", record
        if self.exhausted(depth):
            record["error"] = "limit reached"
            return "error: the tool limit for this request is reached; answer now with what you have.", record
        self.calls += 1
        key = json.dumps([name, args], sort_keys=True)
        if self.cache is not None and self.limits.cache_ttl_s > 0:
            hit = self.cache.get(key, self.limits.cache_ttl_s)
            if hit is not None:
                record["cached"] = True
                return hit, record
        t0 = time.perf_counter()
        remaining = max(0.1, min(self.limits.timeout_s, self.limits.max_total_s - self.seconds))
        try:
            text = await asyncio.wait_for(asyncio.to_thread(self._runners[name], args, remaining), remaining + 1.0)
            text = _cut(text, self.limits.max_result_chars)
            ok = True
        except (ToolError, CalculatorError, ValueError) as exc:
            text, ok = f"error: {exc}", False
            record["error"] = str(exc)[:200]
        except asyncio.TimeoutError:
            text, ok = f"error: the tool did not finish within {remaining:g} s", False
            record["error"] = "timeout"
        except Exception as exc:  # the sandbox itself failed: the model is told, the request goes on
            text, ok = f"error: the tool could not run ({type(exc).__name__})", False
            record["error"] = f"{type(exc).__name__}: {exc}"[:200]
        elapsed = time.perf_counter() - t0
        trace = CURRENT.get()
        if trace is not None:
            now = time.time()
            trace.add(f"execute_tool {name}", now - elapsed, now, {"gen_ai.operation.name": "execute_tool",
                                                                  "gen_ai.tool.name": name, "ponder.tool.ok": ok,
                                                                  "ponder.tool.error": record["error"]})
        self.seconds += elapsed
        record["seconds"] = round(elapsed, 4)
        if ok and self.cache is not None and self.limits.cache_ttl_s > 0:
            self.cache.put(key, text)
        return text, record


def _arg(args: Any, name: str) -> str:
    if not isinstance(args, dict) or not isinstance(args.get(name), str):
        raise ToolError(f'the arguments need a string "{name}"')
    return args[name]


def _cut(text: str, limit: int) -> str:
    text = text.rstrip()
    return text if len(text) <= limit else text[:limit] + f"\n... ({len(text) - limit} more characters cut)"


def toolbox_for(config, names, cache: ToolCache | None = None) -> ToolBox:
    """A fresh ToolBox for one request from a lane's ``tools`` config."""
    return ToolBox(tuple(names), ToolLimits(max_calls=config.max_calls, max_depth=config.max_depth,
                                            timeout_s=config.timeout_s, max_total_s=config.max_total_s,
                                            max_result_chars=config.max_result_tokens * 3,
                                            cache_ttl_s=config.cache_ttl_s), cache)


__all__ = ["TOOLS", "ToolBox", "ToolCache", "ToolError", "ToolLimits", "toolbox_for"]

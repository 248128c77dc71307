"""Build OpenAI ``chat.completion`` objects and stream chunks from an Outcome.

``message.content`` is the answer; ``message.reasoning_content`` carries the
thinking only when it is visible (the field vLLM, SGLang and DeepSeek clients
read), or its summary in summary mode.  The ``ponder`` object adds what
OpenAI has no field for: the lane, the thinking report, the cost, the
timings, what was clamped or degraded, every attempt.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ponder.outcome import answer_and_calls
from ponder.strategies.base import StrategyResult
from ponder.types import Usage

if TYPE_CHECKING:
    from ponder.outcome import Outcome


def thinking_block(result: StrategyResult) -> dict:
    rep = result.chosen.thinking_report
    return {
        "budget": rep.budget,
        "min": rep.min,
        "effort": rep.effort,
        "used": rep.used,
        "truncated": rep.truncated,
        "stopped": rep.stopped,
        "continuations": rep.continuations,
        **({"probe_tokens": rep.probe_tokens, "probes": rep.probes} if rep.probe_tokens or rep.probes else {}),
    }


def ponder_block(outcome: "Outcome") -> dict:
    plan = outcome.plan
    first = outcome.results[0] if outcome.results else None
    block: dict[str, Any] = {
        "lane": outcome.lane,
        "model": outcome.model,
        "route": plan.route,
        "strategy": plan.strategy,
        "visibility": plan.visibility,
        "thinking": thinking_block(first) if first else None,
        "cost_usd": round(outcome.cost_usd, 10),
        "timings": outcome.timings.to_dict(),
        "samples": sum(r.n_samples for r in outcome.results),
    }
    if first is not None:
        block["answer_source"] = first.chosen.answer_source
        if plan.strategy != "single":
            block["decision"] = first.decision
            block["confidence"] = first.confidence
        tools = [t for r in outcome.results for t in r.chosen.tools]
        if tools:
            block["tools"] = tools
    block.update(outcome.extra)
    return block


def message_of(result: StrategyResult, visibility: str, plan=None, salt: str = "") -> dict:
    content, calls = answer_and_calls(result, plan, salt) if plan is not None else (result.answer, [])
    msg: dict[str, Any] = {"role": "assistant", "content": content}
    if calls:
        msg["tool_calls"] = calls
    if visibility == "visible" and result.chosen.thinking:
        msg["reasoning_content"] = result.chosen.thinking
    elif visibility == "summary" and result.extra.get("summary"):
        msg["reasoning_content"] = result.extra["summary"]
    return msg


def logprobs_of(result: StrategyResult) -> dict | None:
    lps = result.chosen.answer_logprobs()
    return {"content": [t.to_openai() for t in lps], "refusal": None}


def completion_body(outcome: "Outcome") -> dict:
    """The non-streaming response body (``ponder ask --json`` prints this)."""
    choices = []
    for i, r in enumerate(outcome.results):
        choices.append({
            "index": i,
            "message": (message := message_of(r, outcome.plan.visibility, outcome.plan, f"{outcome.id}/{i}")),
            "finish_reason": "tool_calls" if message.get("tool_calls") else finish_of(r.chosen.finish_reason),
            "logprobs": logprobs_of(r) if outcome.plan.logprobs else None,
        })
    return {
        "id": outcome.id,
        "object": "chat.completion",
        "created": outcome.created,
        "model": outcome.model,
        "choices": choices,
        "usage": outcome.usage.to_openai(),
        "ponder": ponder_block(outcome),
    }


def finish_of(reason: str) -> str:
    return "length" if reason in ("length", "deadline") else "stop"


def chunk(cid: str, created: int, model: str, *, index: int = 0, delta: dict | None = None,
          finish_reason: str | None = None, usage: Usage | None = None, ponder: dict | None = None,
          choices: bool = True, logprobs: dict | None = None) -> dict:
    body: dict[str, Any] = {
        "id": cid,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [{"index": index, "delta": delta or {}, "finish_reason": finish_reason, "logprobs": logprobs}]
        if choices else [],
    }
    if usage is not None:
        body["usage"] = usage.to_openai()
    if ponder is not None:
        body["ponder"] = ponder
    return body

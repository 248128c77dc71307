"""Early exit by probing (Dynasor/certaindex style): stop thinking once the trace's answer is settled.

Reasoning models keep thinking long after they already know the answer.
Every ``probe_every`` thinking tokens the trace is asked for its answer so
far: the thinking is closed, the answer cue appended, and ``probe_tokens``
answer tokens decoded — the probe.  When ``agree`` probes in a row give the
same answer and none of them hedges ("maybe", "wait", a question), the
thinking stops there: the last probe is the answer when it finished within
its tokens, else the sample answers normally from what it thought.

It works on any engine that continues raw text (``text_completion``): the
trace is thought in segments, each continuing the same text (so an engine's
prefix cache holds the prompt and the thinking so far, the embedded engine's
and llama-server's alike), and each segment ends in its probe.  Probe tokens
are generated tokens: they are counted as thinking in ``usage`` and priced,
and ``ponder.thinking.probe_tokens`` says how many there were — never hidden.

A trace that ends its thinking on its own, reaches its budget, loops, or is
stopped, answers as it would have without probing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Any, Callable

from ponder.thinking.decisions import AnswerDelta, Event, ThinkingDelta
from ponder.thinking.extract import extract_answer
from ponder.types import Generation, ThinkingBudget, Usage

#: a probe that doubts is no vote for settling
HEDGING = re.compile(r"\?|\b(?:maybe|perhaps|possibly|not sure|unsure|might|wait|hmm|i think|let me|"
                     r"approximately|roughly|unclear|depends)\b", re.IGNORECASE)


@dataclass(frozen=True)
class EarlyExit:
    """``ponder.early_exit``: probe every ``probe_every`` thinking tokens; stop after ``agree`` equal probes."""

    probe_every: int = 64
    agree: int = 2
    probe_tokens: int = 16

    def validate(self) -> "EarlyExit":
        from ponder.errors import InvalidRequest

        if not 8 <= self.probe_every <= 100_000:
            raise InvalidRequest("early_exit.probe_every must be 8..100000 thinking tokens",
                                 param="ponder.early_exit.probe_every")
        if not 1 <= self.agree <= 16:
            raise InvalidRequest("early_exit.agree must be 1..16", param="ponder.early_exit.agree")
        if not 4 <= self.probe_tokens <= 256:
            raise InvalidRequest("early_exit.probe_tokens must be 4..256", param="ponder.early_exit.probe_tokens")
        return self

    @classmethod
    def of(cls, raw: Any) -> "EarlyExit | None":
        """From a request's or lane's ``early_exit`` (a dict, ``true`` for the defaults, ``false``/None: off)."""
        from ponder.errors import InvalidRequest

        if raw is None or raw is False:
            return None
        if raw is True:
            return cls()
        if not isinstance(raw, dict) or set(raw) - {"probe_every", "agree", "probe_tokens"}:
            raise InvalidRequest("early_exit is {probe_every, agree, probe_tokens} (or true / false)",
                                 param="ponder.early_exit")
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in raw.values()):
            raise InvalidRequest("early_exit values are integers", param="ponder.early_exit")
        return cls(**raw).validate()


def hedges(text: str) -> bool:
    return bool(HEDGING.search(text or ""))


def settled(answers: list[str | None], agree: int, same: Callable[[str, str], bool]) -> bool:
    """The last ``agree`` probes all answered (without hedging, marked None) and agree with each other."""
    if len(answers) < agree:
        return False
    last = answers[-agree:]
    return all(a is not None for a in last) and all(same(last[0], a) for a in last[1:])  # type: ignore[arg-type]


async def sample(backend: Any, spec: Any, exit_: EarlyExit, answer_kind: str,
                 on_event: Callable[[Event], None] | None = None) -> Generation:
    """One sample thought in segments, each ending in a probe; stops thinking once the probes agree."""
    from ponder.verifiers.equivalence import Equivalence

    eq = Equivalence("auto")
    budget, full_answer = spec.budget, spec.sampling.max_answer_tokens
    thinking, raw, used, probes, probe_tokens = "", "", 0, [], 0
    usage = Usage()
    tools: list = []
    segment = 0
    while True:
        cap = min(exit_.probe_every, budget.max_tokens - used)
        seg_budget = ThinkingBudget(cap, max(0, min(cap, budget.min_tokens - used)), budget.effort)
        sampling = replace(spec.sampling, max_answer_tokens=exit_.probe_tokens)
        if sampling.seed is not None and segment:
            # each segment draws on fresh randomness, as one unbroken trace would
            sampling = sampling.with_seed(sampling.seed + 7919 * segment)
        seg = replace(spec, budget=seg_budget, resume_thinking=raw if used else None, sampling=sampling)
        segment += 1

        def forward(e: Event, base: int = used) -> None:
            if on_event is not None and isinstance(e, ThinkingDelta):
                on_event(ThinkingDelta(e.text, base + e.used))

        g = await backend.sample(seg, on_event=forward)
        usage = usage + g.usage
        tools += g.tools
        thinking = _join(thinking, g.thinking)
        # the next segment continues the text exactly as generated (white space and line breaks kept)
        raw = raw + (g.raw_thinking if g.raw_thinking else g.thinking)
        used += g.usage.thinking_tokens
        rep = g.thinking_report
        natural = rep.stopped not in ("budget",) or used >= budget.max_tokens
        if g.finish_reason in ("cancelled", "deadline") or rep.stopped in ("cancelled", "deadline"):
            return _merged(g, thinking, used, usage, probe_tokens, tools, budget, rep.stopped, probes=len(probes))
        if natural:
            # the trace ended its thinking (or reached its budget, or looped): what followed is its real answer
            if g.finish_reason != "length":
                return _merged(g, thinking, used, usage, probe_tokens, tools, budget, rep.stopped, on_event,
                               probes=len(probes))
            probe_tokens += g.usage.answer_tokens
            return await _answer(backend, spec, thinking, used, usage, probe_tokens, tools, budget, rep.stopped,
                                 full_answer, on_event, probes=len(probes))
        answer = None if hedges(g.answer) else extract_answer(g.answer, kind=answer_kind)
        probes.append(answer)
        if settled(probes, exit_.agree, eq.same):
            if g.finish_reason != "length":  # the last probe said all it had to say: that is the answer
                return _merged(g, thinking, used, usage, probe_tokens, tools, budget, "settled", on_event,
                               probes=len(probes))
            probe_tokens += g.usage.answer_tokens
            return await _answer(backend, spec, thinking, used, usage, probe_tokens, tools, budget, "settled",
                                 full_answer, on_event, probes=len(probes))
        probe_tokens += g.usage.answer_tokens


async def _answer(backend, spec, thinking, used, usage, probe_tokens, tools, budget, stopped, full_answer,
                  on_event, probes: int = 0) -> Generation:
    """The sample's real answer, given the thinking it did (the probes' answers were only probes)."""
    def forward(e: Event) -> None:
        if on_event is not None and isinstance(e, AnswerDelta):
            on_event(e)

    spec = replace(spec, given_thinking=thinking, sampling=replace(spec.sampling, max_answer_tokens=full_answer))
    g = await backend.sample(spec, on_event=forward)
    usage = usage + Usage(prompt_tokens=g.usage.prompt_tokens, cached_prompt_tokens=g.usage.cached_prompt_tokens,
                          answer_tokens=g.usage.answer_tokens)
    return _merged(g, thinking, used, usage, probe_tokens, tools + g.tools, budget, stopped, probes=probes)


def _merged(g: Generation, thinking: str, used: int, usage: Usage, probe_tokens: int, tools: list,
            budget: ThinkingBudget, stopped: str, on_event=None, *, probes: int = 0) -> Generation:
    """The sample as one generation: all its thinking, its answer, every token it cost (probes as thinking)."""
    if on_event is not None and g.answer:
        on_event(AnswerDelta(g.answer))
    # probe answers are generated tokens spent on thinking control: billed as thinking, and said so
    total = Usage(prompt_tokens=usage.prompt_tokens, cached_prompt_tokens=usage.cached_prompt_tokens,
                  thinking_tokens=used + probe_tokens, answer_tokens=g.usage.answer_tokens,
                  tool_tokens=usage.tool_tokens)
    rep = replace(g.thinking_report, budget=budget.max_tokens, min=budget.min_tokens, used=used,
                  truncated=stopped == "budget", stopped=stopped, effort=budget.effort)
    rep.probe_tokens, rep.probes = probe_tokens, probes
    return replace(g, thinking=thinking, usage=total, thinking_report=rep, tools=tools)


def _join(a: str, b: str) -> str:
    if not a:
        return b
    if not b:
        return a
    return a + ("" if a[-1].isspace() or b[0].isspace() else " ") + b

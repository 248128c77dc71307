"""Model-judged scoring: an outcome scorer and a process (step) scorer.

Both ask a judge model (any lane's backend) a yes/no question and read
P(yes) from the next-token log-probabilities.  Backends that give no
log-probabilities (hosted chat APIs) are asked ``votes`` times at
temperature 1 instead, and the share of "yes" is the score.  Every judge
token is counted in the verdict's usage (and in the request's meter).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ponder.backends.base import Backend, SampleSpec
from ponder.types import Message, Sampling, ThinkingBudget, Usage
from ponder.verifiers.base import Verdict

JUDGE_SYSTEM = "You are a strict grader. Reply with exactly one word: Yes or No."


def outcome_prompt(question: str, answer: str) -> list[Message]:
    return [
        Message("system", JUDGE_SYSTEM),
        Message("user", f"Question:\n{question}\n\nProposed answer:\n{answer}\n\nIs the proposed answer correct?"),
    ]


def step_prompt(question: str, steps: list[str]) -> list[Message]:
    shown = "\n\n".join(f"Step {i + 1}: {s.strip()}" for i, s in enumerate(steps))
    return [
        Message("system", JUDGE_SYSTEM),
        Message("user", f"Question:\n{question}\n\nReasoning so far:\n{shown}\n\nIs the last step correct and useful?"),
    ]


@dataclass
class YesNoJudge:
    backend: Backend
    votes: int = 3
    threshold: float = 0.5
    meter: Any = None

    async def p_yes(self, messages: list[Message]) -> tuple[float, Usage]:
        info = self.backend.info
        if info.text_completion and info.logprobs:
            prompt = self.backend.render_chat(messages)
            lp = await self.backend.next_token_logprobs(prompt, ["Yes", "No"])
            if lp is not None:
                y, n = lp["Yes"], lp["No"]
                m = max(y, n)
                if m == float("-inf"):
                    p = 0.5
                else:
                    p = math.exp(y - m) / (math.exp(y - m) + math.exp(n - m))
                usage = Usage(prompt_tokens=self.backend.count_tokens(prompt))
                if self.meter is not None:
                    self.meter.add(usage)
                return p, usage
        usage = Usage()
        yes = 0
        for _ in range(self.votes):
            g = await self.backend.sample(SampleSpec(tuple(messages), ThinkingBudget(0),
                                                     Sampling(temperature=1.0, seed=None, max_answer_tokens=3)))
            usage = usage + g.usage
            yes += g.answer.strip().lower().startswith("yes")
        if self.meter is not None:
            self.meter.add(usage)
        return yes / self.votes, usage


@dataclass
class OutcomeJudge:
    """ORM-style: is this final answer correct?"""

    judge: YesNoJudge
    name: str = "judge"

    async def averify(self, question: str, answer: str, extracted: str | None) -> Verdict:
        p, usage = await self.judge.p_yes(outcome_prompt(question, answer))
        passed = p >= self.judge.threshold
        return Verdict(score=p, passed=passed, usage=usage,
                       feedback="" if passed else f"a grader judged this answer likely wrong (P(correct)={p:.2f})")


@dataclass
class StepJudge:
    """PRM-style: is the latest reasoning step correct?  Returns P(yes)."""

    judge: YesNoJudge
    name: str = "prm"

    async def score_steps(self, question: str, steps: list[str]) -> tuple[float, Usage]:
        return await self.judge.p_yes(step_prompt(question, steps))

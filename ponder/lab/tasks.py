"""Where the lab's items come from: reasoning-gym families, JSONL files, suites.

Every item carries its own scorer as a :class:`~ponder.verifiers.base.Verifier`,
so the same object grades the final answer and serves as the programmatic
verifier a strategy may use (``verifier: task``).  An answer counts as
correct only at full credit (score == 1.0); reasoning-gym's partial credit is
kept in the logs but never counted as a pass.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib
import importlib.util
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

from ponder.errors import ConfigError
from ponder.verifiers.base import Verdict
from ponder.verifiers.equivalence import Equivalence
from ponder.verifiers.programmatic import TaskVerifier

DEFAULT_PROMPT = "{question}\nGive only the final answer."


@dataclass
class Item:
    id: str
    task: str
    #: the difficulty bucket: the task's knobs (reasoning-gym) or a field of the JSONL line
    difficulty: str
    question: str
    expected: str
    verifier: Any = field(repr=False)
    answer_kind: str = "auto"
    metadata: dict = field(default_factory=dict, repr=False)

    @property
    def expected_sha256(self) -> str:
        return sha256_text(self.expected)


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# ---------------------------------------------------------------------------
# reasoning-gym
# ---------------------------------------------------------------------------


def parse_task_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """``name[:key=value,key=value]`` -> (name, knobs); values are YAML scalars."""
    name, _, rest = spec.partition(":")
    name = name.strip()
    knobs: dict[str, Any] = {}
    if rest.strip():
        for part in rest.split(","):
            key, eq, value = part.partition("=")
            if not eq or not key.strip():
                raise ConfigError(f"bad task knob {part!r} in {spec!r}; expected key=value", param="--task")
            knobs[key.strip()] = yaml.safe_load(value.strip())
    return name, knobs


def task_names() -> list[str]:
    import reasoning_gym

    return sorted(reasoning_gym.factory.DATASETS)


def load_task(spec: str, *, limit: int, seed: int, answer_kind: str = "auto") -> list[Item]:
    """``limit`` items of a reasoning-gym family, generated offline from ``seed``."""
    import reasoning_gym

    name, knobs = parse_task_spec(spec)
    known = task_names()
    if name not in known:
        close = difflib.get_close_matches(name, known, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else "; `ponder bench --list-tasks` shows them all"
        raise ConfigError(f"unknown task {name!r}{hint}", param="--task")
    try:
        ds = reasoning_gym.create_dataset(name, size=limit, seed=seed, **knobs)
    except Exception as exc:  # bad knobs surface as TypeError / AssertionError / ValueError
        raise ConfigError(f"task {spec!r}: {type(exc).__name__}: {exc}", param="--task") from None
    label = ",".join(f"{k}={v}" for k, v in knobs.items()) or "default"
    items = []
    for i in range(limit):
        entry = ds[i]
        items.append(Item(
            id=f"{name}[{label}]#{i}", task=name, difficulty=label, question=entry["question"],
            expected=str(entry["answer"]), verifier=TaskVerifier(ds, entry), answer_kind=answer_kind,
            metadata={"seed": seed, "index": i},
        ))
    return items


# ---------------------------------------------------------------------------
# JSONL files (GSM8K / MATH style)
# ---------------------------------------------------------------------------


def reference_answer(raw: str) -> str:
    """The gradeable part of a reference: after GSM8K's ``####``, inside MATH's last ``\\boxed{}``."""
    text = str(raw)
    if "####" in text:
        return text.rsplit("####", 1)[1].strip().replace(",", "")
    boxed = last_boxed(text)
    return boxed if boxed is not None else text.strip()


def last_boxed(text: str) -> str | None:
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    i, depth = start + len("\\boxed{"), 1
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i:j].strip()
    return None


@dataclass
class ReferenceScorer:
    """Full credit when the answer is equivalent to the reference (numeric, choice or math-verify)."""

    reference: str
    equivalence: Equivalence = field(default_factory=lambda: Equivalence("auto"))
    name: str = "reference"

    def verify(self, question: str, answer: str, extracted: str | None) -> Verdict:
        candidate = extracted if extracted is not None else answer
        ok = self.equivalence.same(candidate, self.reference)
        return Verdict(score=1.0 if ok else 0.0, passed=ok, feedback="" if ok else "the answer is not correct")


@dataclass
class HookScorer:
    """A user's ``fn(prediction, expected, item) -> float | bool``; full credit is 1.0."""

    fn: Callable[[str, str, dict], Any]
    expected: str
    raw: dict
    name: str = "custom"

    def verify(self, question: str, answer: str, extracted: str | None) -> Verdict:
        score = float(self.fn(extracted if extracted is not None else answer, self.expected, self.raw))
        return Verdict(score=score, passed=score == 1.0,
                       feedback="" if score == 1.0 else f"the scorer gave {score:g} out of 1")


def load_scorer(ref: str) -> Callable[[str, str, dict], Any]:
    """``module:function`` or ``path/to/file.py:function``."""
    target, sep, fn_name = ref.rpartition(":")
    if not sep or not target or not fn_name:
        raise ConfigError(f"--scorer wants module:function or file.py:function, got {ref!r}", param="--scorer")
    try:
        if target.endswith(".py"):
            path = Path(target)
            if not path.is_file():
                raise ConfigError(f"scorer file {target} does not exist", param="--scorer")
            spec = importlib.util.spec_from_file_location(f"ponder_scorer_{path.stem}", path)
            module = importlib.util.module_from_spec(spec)
            assert spec.loader is not None
            spec.loader.exec_module(module)
        else:
            module = importlib.import_module(target)
    except ConfigError:
        raise
    except Exception as exc:
        raise ConfigError(f"cannot load scorer {ref!r}: {type(exc).__name__}: {exc}", param="--scorer") from None
    fn = getattr(module, fn_name, None)
    if not callable(fn):
        raise ConfigError(f"scorer {ref!r}: {fn_name!r} is not a function in {target}", param="--scorer")
    return fn


@dataclass
class JsonlSpec:
    path: str
    question_field: str = "question"
    answer_field: str = "answer"
    id_field: str | None = None
    difficulty_field: str | None = None
    scorer: str | None = None
    #: what to do with an unreadable line: skip (warn with its number) or stop
    on_bad_line: str = "skip"


def load_jsonl(spec: JsonlSpec, *, limit: int | None, answer_kind: str = "auto",
               warn: Callable[[str], None] = lambda m: None) -> list[Item]:
    path = Path(spec.path)
    if not path.is_file():
        raise ConfigError(f"--data {spec.path}: no such file", param="--data")
    hook = load_scorer(spec.scorer) if spec.scorer else None
    items: list[Item] = []
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if limit is not None and len(items) >= limit:
                break
            if not line.strip():
                continue
            try:
                raw = json.loads(line)
                if not isinstance(raw, dict):
                    raise ValueError("the line is not a JSON object")
                for f in (spec.question_field, spec.answer_field):
                    if f not in raw:
                        raise ValueError(f"missing field {f!r}")
            except ValueError as exc:
                msg = f"{path}:{lineno}: {exc}"
                if spec.on_bad_line == "stop":
                    raise ConfigError(msg + " (stopping: --on-bad-line stop)", param="--data") from None
                warn(msg + " (skipped)")
                continue
            expected = reference_answer(raw[spec.answer_field])
            item_id = str(raw[spec.id_field]) if spec.id_field and spec.id_field in raw else f"{path.stem}:{lineno}"
            difficulty = str(raw.get(spec.difficulty_field, "default")) if spec.difficulty_field else "default"
            verifier = HookScorer(hook, expected, raw) if hook else ReferenceScorer(expected)
            items.append(Item(id=item_id, task=path.stem, difficulty=difficulty, question=str(raw[spec.question_field]),
                              expected=expected, verifier=verifier, answer_kind=answer_kind,
                              metadata={"line": lineno}))
    if not items:
        raise ConfigError(f"--data {spec.path}: no usable lines", param="--data")
    return items


# ---------------------------------------------------------------------------
# suites
# ---------------------------------------------------------------------------

ARITH_SMALL = "basic_arithmetic:min_terms=2,max_terms=2,min_digits=1,max_digits=2"
ARITH_HARDER = "basic_arithmetic:min_terms=3,max_terms=4,min_digits=1,max_digits=2"
ARITH_EASY = "basic_arithmetic:min_terms=2,max_terms=2,min_digits=1,max_digits=1,operators=+"
ARITH_HARD = ARITH_SMALL


@dataclass(frozen=True)
class Suite:
    name: str
    description: str
    tasks: tuple[str, ...]
    limit: int
    budgets: tuple[int, ...]
    strategies: tuple[str, ...]
    n: tuple[int, ...]
    answer_kind: str = "auto"


SUITES: dict[str, Suite] = {
    "smoke": Suite(
        "smoke", "12 two-term arithmetic items, thinking 0 and 64 tokens, single and self-consistency at N 2 and 4; "
        "a few minutes on the embedded default",
        (ARITH_SMALL,), 12, (0, 64), ("single", "self-consistency"), (2, 4), "number"),
    "standard": Suite(
        "standard", "arithmetic at two difficulties, chain sums, leg counting and symbolic GSM problems, 20 items each; "
        "thinking 0/64/256/1024; single, self-consistency, adaptive-consistency at N 1-8",
        (ARITH_SMALL, ARITH_HARDER, "chain_sum", "leg_counting", "gsm_symbolic"), 20, (0, 64, 256, 1024),
        ("single", "self-consistency", "adaptive-consistency"), (2, 4, 8), "auto"),
    "mixed": Suite(
        "mixed", "a routing workload: 20 one-digit sums (easy) and 20 two-term problems with all four operators "
        "and up to two digits (harder), no thinking vs a 64-token think; for `ponder bench routers` and `ponder tune`",
        (ARITH_EASY, ARITH_HARD), 20, (0, 64), ("single",), (1,), "number"),
}


def suite(name: str) -> Suite:
    if name not in SUITES:
        raise ConfigError(f"unknown suite {name!r}; available: {', '.join(SUITES)}", param="--suite")
    return SUITES[name]


def parse_number_list(text: str, flag: str) -> list[int]:
    out = []
    for part in text.split(","):
        part = part.strip()
        if not re.fullmatch(r"\d+", part):
            raise ConfigError(f"{flag} wants comma-separated whole numbers, got {part!r}", param=flag)
        out.append(int(part))
    return out

"""Pull a final answer out of free text.

Strategies group samples by their extracted answer, and the lab scores it, so
extraction is shared.  Order of preference: the last ``\\boxed{...}``, then an
explicit "answer:" line, then (for numeric questions) the last number.
"""

from __future__ import annotations

import re

_ANSWER_LINE = re.compile(
    r"(?:final\s+answer|the\s+answer\s+is|answer)\s*(?:is)?\s*[:=]?\s*(.+)",
    re.IGNORECASE,
)
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?(?:/\d+)?|-?\.\d+")
_CHOICE = re.compile(r"\(?\b([A-J])\b\)?")


def extract_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` (or ``\\fbox{...}``), braces balanced."""
    starts = [m.end() for m in re.finditer(r"\\(?:boxed|fbox)\s*\{", text)]
    if not starts:
        return None
    i = starts[-1]
    depth = 1
    j = i
    while j < len(text) and depth:
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
        j += 1
    if depth:
        return None
    return text[i : j - 1].strip()


def extract_answer_line(text: str) -> str | None:
    """Text after the last "Answer:" / "final answer is" marker, first line only."""
    found = None
    for m in _ANSWER_LINE.finditer(text):
        found = m.group(1)
    if found is None:
        return None
    line = found.strip().splitlines()[0].strip() if found.strip() else ""
    line = line.strip("*").strip()
    line = re.sub(r"[.。]$", "", line).strip()
    return line or None


def extract_last_number(text: str) -> str | None:
    """The last number in the text, with thousands separators removed."""
    nums = _NUMBER.findall(text)
    if not nums:
        return None
    return normalize_number(nums[-1])


def normalize_number(s: str) -> str:
    s = s.replace(",", "").strip()
    if re.fullmatch(r"-?\d+\.0+", s):
        s = s.split(".")[0]
    if s in ("-0",):
        s = "0"
    return s


def extract_choice(text: str) -> str | None:
    """A multiple-choice letter: from "answer: (C)" or a lone letter."""
    line = extract_answer_line(text) or extract_boxed(text) or text.strip()
    bare = line.strip().strip("().").strip()
    if len(bare) == 1 and bare.upper() in "ABCDEFGHIJ":
        return bare.upper()
    m = _CHOICE.search(line)
    return m.group(1).upper() if m else None


def extract_answer(text: str, *, kind: str = "auto") -> str | None:
    """Best-effort final answer.

    ``kind``: ``auto`` (boxed > answer line > last number > whole short text),
    ``number`` (a number is required), ``choice`` (a letter A-J), ``text``
    (boxed > answer line > the stripped text).
    """
    if kind == "choice":
        return extract_choice(text)
    boxed = extract_boxed(text)
    line = extract_answer_line(text)
    if kind == "number":
        for cand in (boxed, line, text):
            if cand:
                n = extract_last_number(cand)
                if n is not None:
                    return n
        return None
    if boxed:
        return boxed
    if line:
        return line
    if kind == "text":
        stripped = text.strip()
        return stripped or None
    n = extract_last_number(text)
    if n is not None:
        return n
    stripped = text.strip()
    return stripped if stripped and len(stripped) <= 200 else None


_RESULT_CUE = re.compile(r"(final answer|the answer|answer is|answer:|result|therefore|thus|so the|equals|=|\bis\b)",
                         re.IGNORECASE)
_TAGS = re.compile(r"</?think>|<\|[^|>]{1,40}\|>")


def strip_tags(text: str) -> str:
    """Text without think tags or chat-template tokens."""
    return _TAGS.sub("", text)


def last_stated_result(thinking: str) -> str | None:
    """The last result a thinking trace states, as a short line.

    Used when a model answers inside its think and writes nothing (or only
    tags) after it: a boxed answer wins; else the last line that states a
    result ("... is 12", "= 12", "Answer: 12") and holds a number or a short
    phrase; else the last line with a number.  ``None`` for an empty trace.
    """
    text = strip_tags(thinking or "").strip()
    if not text:
        return None
    boxed = extract_boxed(text)
    if boxed:
        return boxed
    lines = [ln.strip(" *-#>\t") for ln in re.split(r"\n+", text) if ln.strip(" *-#>\t")]
    sentences: list[str] = []
    for ln in lines:
        sentences += [s.strip() for s in re.split(r"(?<=[.!?])\s+(?=[A-Z(])", ln) if s.strip()]
    for s in reversed(sentences):
        if _RESULT_CUE.search(s) and _NUMBER.search(s):
            return s[:300]
    for s in reversed(sentences):
        if _NUMBER.search(s):
            return s[:300]
    for s in reversed(sentences):
        if _RESULT_CUE.search(s) and len(s) <= 200:
            return s
    return None

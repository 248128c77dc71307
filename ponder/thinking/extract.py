"""Pull a final answer out of free text.

Strategies group samples by their extracted answer and the lab scores it, so
extraction is shared, and it is tested against real outputs of the shipped
models (``tests/fixtures/extraction/``).  Order of preference:

1. the last ``\\boxed{...}``;
2. the last explicit statement: "final answer is X", "the answer to ... is
   X", "Answer: X", "X is the final answer", "the result is X";
3. the last number (for numeric questions) — or, for text, a short reply.

Numbers are normalized: thousands separators and trailing zeros go,
``\\frac{a}{b}`` becomes ``a/b``, currency signs and units are dropped.  A
think tag or a chat-template token is never an answer.
"""

from __future__ import annotations

import re

from ponder.thinking.formats import FORMATS

_TAGS = re.compile("|".join(re.escape(t) for f in FORMATS.values() for t in (f.open, f.close))
                   + r"|</?answer>|<\|[^|>]{1,40}\|>|<｜[^｜]{1,40}｜>")
_ENUM = re.compile(r"(?m)^\s*(?:\d{1,2}[.)]|[-*•])\s+")
_NUMBER = re.compile(r"(?<![\w.])[-−]?\$?\d{1,3}(?:,\d{3})+(?:\.\d+)?(?![\d,])|(?<![\w.])[-−]?\$?\d+(?:\.\d+)?(?:/\d+)?"
                     r"|(?<![\w.])[-−]?\.\d+")
_FRAC = re.compile(r"\\[dt]?frac\s*\{\s*(-?\d+)\s*\}\s*\{\s*(-?\d+)\s*\}")
_CHOICE = re.compile(r"\(?\b([A-J])\b\)?")
_LATEX_WRAP = re.compile(r"^\$+|\$+$|^\\\(|\\\)$|^\\\[|\\\]$")
_TEXT_CMD = re.compile(r"\\(?:text|mathrm|textbf|mathbf)\s*\{([^{}]*)\}")

#: explicit answer statements, strongest first; the captured group is the answer
_VERB = r"(?:is|are|was|equals|will\s+be|would\s+be|should\s+be)"
_STATEMENTS = [
    re.compile(r"(?:final\s+answer|the\s+answer|answer)\b[^.\n:=]{0,80}?\s" + _VERB + r"\s*:?\s*([^\n]+)",
               re.IGNORECASE),
    re.compile(r"(?:final\s+answer|answer|result|total)\s*(?:is\s*)?[:=]\s*([^\n]+)", re.IGNORECASE),
    re.compile(r"(?:^|[\n.!?]\s*)([^\n.!?]{1,60}?)\s+(?:is|are|was)\s+the\s+(?:correct\s+|final\s+)?"
               r"(?:answer|result|total)(?=\s*(?:[.!,;]|$|to\b|for\b))", re.IGNORECASE),
    re.compile(r"(?m)^\s*####\s*([^\n]+)"),
    re.compile(r"\b(?:the\s+)?(?:result|total|sum|difference|product|quotient)\b[^.\n:=]{0,40}?\s"
               r"(?:is|are|was|equals)\s*:?\s*([^\n]+)", re.IGNORECASE),
    re.compile(r"\bthere\s+(?:are|is|were)\s+(?:a\s+total\s+of\s+)?(-?\d[\d,]*(?:\.\d+)?)\s+[A-Za-z ]{0,30}?"
               r"\bin\s+total\b", re.IGNORECASE),
]


def strip_tags(text: str) -> str:
    """Text without think tags or chat-template tokens."""
    return _TAGS.sub("", text)


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
    return text[i: j - 1].strip()


def _clean(s: str) -> str:
    s = s.strip().strip("*_`").strip()
    s = _TEXT_CMD.sub(r"\1", s)
    s = _LATEX_WRAP.sub("", s).strip()
    s = re.sub(r"[.。;,!]+$", "", s).strip()
    s = s.strip("*_` ").strip()
    m = re.fullmatch(r"\(([^()\s]{1,12})\)", s)  # "(C)" -> "C"
    return m.group(1) if m else s


#: statements up to this index say "the answer is"; later ones only "the total/result is"
_STRONG = 4


def _statement(text: str) -> str | None:
    """The text of the last explicit answer statement ("the answer is X" beats "the total is X")."""
    for group in (_STATEMENTS[:_STRONG], _STATEMENTS[_STRONG:]):
        best: tuple[int, str] | None = None
        for pat in group:
            for m in pat.finditer(text):
                # the statement ends with its sentence ("... = 42 legs. This is because ...")
                got = _clean(re.split(r"(?<!\d)[.!?](?:\s|$)|\.\s+(?=[A-Z])", m.group(1).split("\n")[0])[0])
                if got and (best is None or m.start(1) >= best[0]):
                    best = (m.start(1), got)
        if best:
            return best[1]
    return None


def extract_answer_line(text: str) -> str | None:
    """The answer of the last explicit answer statement ("final answer is X", "Answer: X", "X is the answer")."""
    return _statement(strip_tags(text))


def normalize_number(s: str) -> str:
    s = s.replace("−", "-").replace("$", "").replace(",", "").strip()
    if re.fullmatch(r"-?\d+\.\d*?0+", s):
        s = s.rstrip("0").rstrip(".")
    if re.fullmatch(r"-?0+(\.0*)?", s):
        s = "0"
    if s.startswith("-") and s[1:] == "0":
        s = "0"
    return s


def extract_last_number(text: str) -> str | None:
    """The last number in the text (``\\frac{a}{b}`` as a/b; list markers such as "1." are not numbers)."""
    text = _ENUM.sub(" ", _FRAC.sub(r"\1/\2", text))
    nums = _NUMBER.findall(text)
    if not nums:
        return None
    return normalize_number(nums[-1])


def _numberish(s: str) -> str | None:
    """The number a short candidate states ("12", "$1,200", "12 legs", "x = 4"), else None."""
    t = _FRAC.sub(r"\1/\2", s)
    nums = _NUMBER.findall(t)
    if not nums:
        return None
    words = re.findall(r"[A-Za-z]+", re.sub(r"\\[A-Za-z]+", "", t))
    if len(nums) == 1 and len(words) <= 4:
        return normalize_number(nums[0])
    lead = re.match(r"\s*[\"'(]?\s*(" + _NUMBER.pattern + r")\s*[\"')]?\s*(?:,|$|[A-Za-z]+\b(?!\s*[-+*/×=]))", t)
    if lead and "=" not in t.split(",")[0]:
        # "11, which is the total ..." or "12 legs in total": the leading number is the answer
        return normalize_number(lead.group(1))
    # an equation: the value after the last '='
    if "=" in t:
        tail = _NUMBER.findall(t.rsplit("=", 1)[1])
        if tail:
            return normalize_number(tail[-1])
    return None


def extract_choice(text: str) -> str | None:
    """A multiple-choice letter: from "answer: (C)", a boxed letter, or a lone letter."""
    text = strip_tags(text)
    line = extract_boxed(text) or _statement(text) or text.strip()
    bare = line.strip().strip("().*").strip()
    if len(bare) == 1 and bare.upper() in "ABCDEFGHIJ":
        return bare.upper()
    m = _CHOICE.search(line)
    return m.group(1).upper() if m else None


#: an answer statement with no value after it ("The final answer is .", "Answer:"): no answer, and so no vote
_BARE_STATEMENT = re.compile(r"^\W*(?:so,?\s+|therefore,?\s+|thus,?\s+)?(?:the\s+|my\s+|this\s+)?"
                             r"(?:final\s+|correct\s+)?(?:answer|result|total)\s*(?:is|=|:)?\W*$", re.IGNORECASE)


def bare_statement(text: str) -> bool:
    """An answer statement with nothing stated ("The final answer is .")."""
    return bool(_BARE_STATEMENT.match(strip_tags(text or "").strip()))


def extract_answer(text: str, *, kind: str = "auto") -> str | None:
    """Best-effort final answer.

    ``kind``: ``auto`` (boxed > statement > last number > a short reply),
    ``number`` (a number is required), ``choice`` (a letter A-J), ``text``
    (boxed > statement > the stripped text).
    """
    text = strip_tags(text or "")
    if not text.strip():
        return None
    if kind == "choice":
        return extract_choice(text)
    boxed = extract_boxed(text)
    statement = _statement(text)
    if kind == "number":
        if boxed:
            # a boxed expression that was never evaluated ("\\boxed{-4 - 7 - (-9)}") states no number
            return _numberish(boxed)
        if statement:
            n = _numberish(statement)
            if n is not None:
                return n
        return extract_last_number(text)
    for cand in (boxed, statement):
        if cand:
            return _numberish(cand) or _clean(cand)
    if _BARE_STATEMENT.match(text.strip()):
        return None
    if kind == "text":
        stripped = _clean(text)
        return stripped or None
    n = extract_last_number(text)
    if n is not None:
        return n
    stripped = _clean(text)
    return stripped if stripped and len(stripped) <= 80 and len(stripped.split()) <= 12 else None


def answer_like(text: str) -> bool:
    """Does a reply state anything an extractor could take as an answer?

    A long paragraph with no number, no boxed value and no answer statement
    ("This is calculated by combining the numbers in order...") is not.
    """
    t = strip_tags(text or "").strip()
    if not t:
        return False
    if extract_boxed(t) or _statement(t) or _NUMBER.search(_FRAC.sub(r"\1/\2", t)):
        return True
    return len(t) <= 80 and len(t.split()) <= 12


def last_stated_result(thinking: str) -> str | None:
    """The last result a thinking trace states, as a short line.

    Used when a model answers inside its think and writes nothing (or only
    tags, or prose with no answer in it) after it: a boxed value wins; else
    the last explicit statement ("the final answer is 12"); else the last
    sentence that holds a number; ``None`` when the trace states nothing.
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
    # a fragment the trace was cut in ("... * 3 months =") states nothing yet
    while sentences and re.search(r"[=+\-*/×÷:(]\s*$", sentences[-1]):
        sentences.pop()
    for s in reversed(sentences):
        if _statement(s) is not None and _NUMBER.search(s):
            return _clean(s)[:300]
    for s in reversed(sentences):
        if _NUMBER.search(_FRAC.sub(r"\1/\2", s)):
            return _clean(s)[:300]
    for s in reversed(sentences):
        if _statement(s) is not None and len(s) <= 200:
            return _clean(s)
    return None


def has_explicit_result(thinking: str) -> bool:
    """The trace states a result on its own terms: a boxed value or an answer statement with a number."""
    text = strip_tags(thinking or "")
    if extract_boxed(text):
        return True
    st = _statement(text)
    return bool(st and _NUMBER.search(st))


def explicit_answer(text: str) -> bool:
    """The reply commits to an answer: a boxed value, an answer statement, or just a short value ("19.", "72 legs")."""
    t = strip_tags(text or "").strip()
    if not t:
        return False
    if extract_boxed(t) or _statement(t):
        return True
    return len(t.split()) <= 4 and bool(_NUMBER.search(_FRAC.sub(r"\1/\2", t)))

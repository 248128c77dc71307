"""Backend kinds, registered with what they can do.

A lane names its kind (``backend: llama_cpp | openai``); everything outside
this package asks the kind a question — does it have a capability, which
model does it serve, what identifies its model in a lab run — and never
compares the kind's name.  Adding an engine means registering one
:class:`BackendKind` here.

Capabilities (strings, so config errors and ``ponder strategies`` can name them):

* ``text_completion`` — continues raw text: exact thinking control, step-level search, model judges
* ``grammar`` — constrains the answer with a GBNF grammar (structured output built by ponder)
* ``response_format`` — passes an OpenAI ``response_format`` through to the engine
* ``builtin_tools`` — runs ponder's tools inside the thinking (pause, call, continue)
* ``local_model`` — loads a model file in this process (``ponder ask --model PATH`` picks it)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from ponder.backends.base import Backend

CAPABILITIES = ("text_completion", "grammar", "response_format", "builtin_tools", "local_model")


@dataclass(frozen=True)
class BackendKind:
    name: str
    #: builds the engine of a lane (the lane is a :class:`ponder.config.LaneConfig`)
    build: Callable[[Any], Backend]
    #: what every lane of this kind can do
    capabilities: frozenset[str]
    #: the names a client may pin a lane of this kind by (besides the lane's own name)
    labels: Callable[[Any], tuple[str, ...]]
    #: the model a lane serves (answer-cache keys, ledger rows)
    model_id: Callable[[Any], str | None]
    #: what identifies the model in a lab run (file and sha256, or URL and name)
    provenance: Callable[[Any], dict]
    #: a config error about a lane of this kind, or None
    check: Callable[[Any], str | None] = lambda lane: None
    #: capabilities a particular lane adds by its own settings
    lane_capabilities: Callable[[Any], frozenset[str]] = field(default=lambda lane: frozenset())
    #: does a lane of this kind learn its capabilities from its engine (``capabilities: auto``)?
    probes: Callable[[Any], bool] = field(default=lambda lane: False)


KINDS: dict[str, BackendKind] = {}
#: what probed engines turned out to offer, by engine settings (filled when a probing lane's engine is built):
#: two lanes on one engine share its answer; a lane of the same name elsewhere (another URL) is probed anew
PROBED: dict[str, frozenset[str]] = {}

#: lane settings that do not make a different engine
PER_REQUEST_SETTINGS = {"name", "effort", "strategy", "params", "answer_tokens", "prices", "fallbacks", "retries",
                        "retry_backoff_s", "tools"}


def engine_key(lane: Any) -> str:
    """What makes two lanes' engines different (not their names, efforts, strategies, prices or fallbacks)."""
    return repr(sorted(lane.model_dump(exclude=PER_REQUEST_SETTINGS).items()))


def register_backend(kind: BackendKind) -> BackendKind:
    if kind.name in KINDS:
        raise ValueError(f"backend kind {kind.name!r} registered twice")
    unknown = set(kind.capabilities) - set(CAPABILITIES)
    if unknown:
        raise ValueError(f"backend kind {kind.name!r}: unknown capabilities {sorted(unknown)}")
    KINDS[kind.name] = kind
    return kind


def kind_of(lane: Any) -> BackendKind:
    try:
        return KINDS[lane.backend]
    except KeyError:
        raise ValueError(f"unknown backend {lane.backend!r}; known: {', '.join(sorted(KINDS))}") from None


def capabilities(lane: Any) -> frozenset[str]:
    kind = kind_of(lane)
    probed = PROBED.get(engine_key(lane), frozenset()) if kind.probes(lane) else frozenset()
    return kind.capabilities | kind.lane_capabilities(lane) | probed


def record_probe(lane: Any, backend: Backend) -> None:
    """Remember what a probing lane's engine offers (planning asks :func:`lane_has`)."""
    if kind_of(lane).probes(lane):
        PROBED[engine_key(lane)] = backend.capabilities()


def unprobed(lanes: Any) -> list:
    """The lanes whose engines must be built before their capabilities are known."""
    return [lane for lane in lanes if kind_of(lane).probes(lane) and engine_key(lane) not in PROBED]


def lane_has(lane: Any, capability: str) -> bool:
    """Can this lane's engine do ``capability`` (one of :data:`CAPABILITIES`)?"""
    if capability not in CAPABILITIES:
        raise ValueError(f"unknown capability {capability!r}")
    return capability in capabilities(lane)


def build_backend(lane: Any) -> Backend:
    return kind_of(lane).build(lane)


# -- the embedded engine -------------------------------------------------------------------


def _build_llama(lane: Any) -> Backend:
    from ponder.backends.llama_cpp import LlamaCppBackend

    return LlamaCppBackend(lane.model, n_ctx=lane.n_ctx, kv_cells=lane.kv_cells, max_sequences=lane.max_sequences,
                           n_threads=lane.n_threads, flash_attn=lane.flash_attn, name=lane.name)


def _llama_labels(lane: Any) -> tuple[str, ...]:
    from ponder.backends.models import model_label

    return tuple(x for x in (lane.model, model_label(lane.model)) if x)


def _llama_provenance(lane: Any) -> dict:
    from ponder.backends.models import file_sha256, resolve_model
    from ponder.errors import PonderError

    try:
        path = resolve_model(lane.model)
        return {"backend": lane.backend, "file": path.name, "sha256": file_sha256(path)}
    except PonderError as exc:
        return {"backend": lane.backend, "error": exc.message}


register_backend(BackendKind(
    name="llama_cpp", build=_build_llama,
    capabilities=frozenset({"text_completion", "grammar", "builtin_tools", "local_model"}),
    labels=_llama_labels, model_id=lambda lane: lane.model, provenance=_llama_provenance,
))


# -- OpenAI-compatible upstreams -----------------------------------------------------------


def _build_openai(lane: Any) -> Backend:
    from ponder.backends.openai_compat import OpenAICompatBackend

    if lane.capabilities == "auto":
        from ponder.backends.probe import text_engine_or_none

        engine = text_engine_or_none(lane)
        if engine is not None:
            return engine
    return OpenAICompatBackend.from_lane(lane)


register_backend(BackendKind(
    name="openai", build=_build_openai, capabilities=frozenset(),
    labels=lambda lane: tuple(x for x in (lane.model, lane.upstream_model) if x),
    model_id=lambda lane: lane.upstream_model,
    provenance=lambda lane: {"backend": lane.backend, "base_url": lane.base_url or lane.base_urls,
                             "model": lane.upstream_model},
    check=lambda lane: None if (lane.base_url or lane.base_urls) and not (lane.base_url and lane.base_urls) else
    f"backend {lane.backend!r} needs base_url or base_urls (one of them)",
    lane_capabilities=lambda lane: frozenset({"response_format"}) if lane.response_format else frozenset(),
    probes=lambda lane: lane.capabilities == "auto",
))

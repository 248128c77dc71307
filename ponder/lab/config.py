"""One flat, validated configuration per lab run (the grid and its data).

A run is the product models x budgets x strategies x N over a set of items.
The whole :class:`BenchConfig` is written to ``run.json`` so ``--resume``
continues exactly the run that was started, and ``results.json`` repeats it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from ponder.errors import ConfigError
from ponder.strategies import REGISTRY, build_params, count_param, get_strategy, pooled
from ponder.thinking.budget import EFFORT_ORDER


@dataclass(frozen=True)
class Point:
    """One configuration of the grid."""

    model: str
    budget: str  # "think=64" or "effort=low"
    strategy: str
    n: int
    #: built-in tools of this configuration, "+"-joined ("" = none)
    tools: str = ""
    #: early exit by probing, "EVERYxAGREE" ("64x2": probe every 64 thinking tokens, stop after 2 agree; "" = off)
    early_exit: str = ""
    #: a parameter variant of the strategy ("threshold=0.75,round_size=2"; "" = the run's --param)
    variant: str = ""

    @property
    def key(self) -> str:
        return (f"{self.model}|{self.budget}|{self.strategy}|n={self.n}" + (f"|tools={self.tools}" if self.tools else "")
                + (f"|exit={self.early_exit}" if self.early_exit else "")
                + (f"|{self.variant}" if self.variant else ""))

    def early_exit_option(self) -> dict | None:
        if not self.early_exit:
            return None
        every, _, agree = self.early_exit.partition("x")
        return {"probe_every": int(every), "agree": int(agree or 2)}

    def as_dict(self) -> dict:
        d = {"key": self.key, "model": self.model, "budget": self.budget, "strategy": self.strategy, "n": self.n}
        if self.tools:
            d["tools"] = self.tools
        if self.early_exit:
            d["early_exit"] = self.early_exit
        if self.variant:
            d["variant"] = self.variant
        return d


@dataclass
class BenchConfig:
    tasks: list[str] = field(default_factory=list)
    data: str | None = None
    question_field: str = "question"
    answer_field: str = "answer"
    id_field: str | None = None
    difficulty_field: str | None = None
    scorer: str | None = None
    on_bad_line: str = "skip"
    suite: str | None = None
    #: model names / GGUF paths, or lane names of ``config_path``
    models: list[str] = field(default_factory=list)
    config_path: str | None = None
    efforts: list[str] | None = None
    budgets: list[int] | None = None
    strategies: list[str] = field(default_factory=lambda: ["single"])
    n: list[int] = field(default_factory=lambda: [1])
    #: extra strategy parameters: {"best-of-n": {"verifier": "task"}}
    params: dict[str, dict[str, Any]] = field(default_factory=dict)
    limit: int = 20
    seed: int = 0
    concurrency: int = 1
    temperature: float = 0.7
    answer_tokens: int = 32
    answer_kind: str = "auto"
    prompt: str = "{question}\nGive only the final answer."
    latency_slo_s: float | None = None
    min_accuracy: float | None = None
    #: built-in tools swept as a dimension besides no tools: e.g. ["python", "calculator", "python+calculator"]
    tools: list[str] = field(default_factory=list)
    #: early exit swept as a dimension besides none: "EVERYxAGREE" entries, e.g. ["32x2", "64x2"]
    early_exit: list[str] = field(default_factory=list)
    #: parameter variants per strategy, each its own configuration on the same pooled draws:
    #: {"adaptive-consistency": [{"threshold": 0.75}, {"threshold": 0.9, "round_size": 2}]}
    variants: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    #: alternatives kept per generated token (0: automatic — 5 when a confidence strategy is in the grid,
    #: so every pooled draw carries what DeepConf's token confidence needs)
    top_logprobs: int = 0

    def logprobs_k(self) -> int:
        if self.top_logprobs:
            return self.top_logprobs
        return 5 if any(s.startswith("confidence-") or s == "deepconf-online" for s in self.strategies) else 0

    def validate(self) -> None:
        if not self.tasks and not self.data:
            raise ConfigError("nothing to run: give --suite, --task or --data", param="--task")
        from ponder.tools import TOOLS

        for entry in self.tools:
            for t in entry.split("+"):
                if t.strip() not in (*TOOLS, "none", ""):
                    raise ConfigError(f"unknown tool {t.strip()!r}; built-in tools are {', '.join(TOOLS)} "
                                      f"(join with + to give both)", param="--tools")
        for e in self.early_exit:
            every, sep, agree = e.partition("x")
            if not (every.isdigit() and (not sep or agree.isdigit())):
                raise ConfigError(f"--early-exit entries are EVERYxAGREE (like 64x2), got {e!r}", param="--early-exit")
            from ponder.strategies.probe import EarlyExit

            try:
                EarlyExit.of({"probe_every": int(every), "agree": int(agree or 2)})
            except Exception as exc:
                raise ConfigError(f"--early-exit {e}: {exc}", param="--early-exit") from None
        if self.efforts is not None and self.budgets is not None:
            raise ConfigError("give --efforts or --budgets, not both", param="--budgets")
        for e in self.efforts or []:
            if e not in EFFORT_ORDER:
                raise ConfigError(f"unknown effort {e!r}; choose from {', '.join(EFFORT_ORDER)}", param="--efforts")
        for b in self.budgets or []:
            if b < 0:
                raise ConfigError(f"budgets must be >= 0, got {b}", param="--budgets")
        if not self.strategies:
            raise ConfigError("give at least one strategy", param="--strategies")
        for s in self.strategies:
            if s not in REGISTRY:
                raise ConfigError(f"unknown strategy {s!r}; available: {', '.join(sorted(REGISTRY))}",
                                  param="--strategies")
        checks = [(s, raw) for s, raw in self.params.items()]
        checks += [(s, {**self.params.get(s, {}), **v}) for s, vs in self.variants.items() for v in vs]
        for s, raw in checks:
            if s not in REGISTRY:
                raise ConfigError(f"--param names unknown strategy {s!r}", param="--param")
            cp = count_param(s)
            try:
                build_params(get_strategy(s), {**raw, **({cp: max(self.n or [1])} if cp else {})}, 1024)
            except Exception as exc:
                raise ConfigError(f"--param for {s}: {exc}", param="--param") from None
        if not self.n or any(k < 1 for k in self.n):
            raise ConfigError("--n wants whole numbers >= 1", param="--n")
        if self.limit < 1:
            raise ConfigError("--limit must be >= 1", param="--limit")
        if self.concurrency < 1:
            raise ConfigError("--concurrency must be >= 1", param="--concurrency")
        if not 0 <= self.temperature <= 2:
            raise ConfigError("--temperature must be in [0, 2]", param="--temperature")
        if self.on_bad_line not in ("skip", "stop"):
            raise ConfigError("--on-bad-line is skip or stop", param="--on-bad-line")
        if "{question}" not in self.prompt:
            raise ConfigError("--prompt must contain {question}", param="--prompt")
        if self.min_accuracy is not None and not 0 <= self.min_accuracy <= 1:
            raise ConfigError("--min-accuracy is a share in [0, 1]", param="--min-accuracy")

    # -- the grid ------------------------------------------------------------
    def budget_labels(self) -> list[str]:
        if self.efforts is not None:
            return [f"effort={e}" for e in self.efforts]
        return [f"think={b}" for b in (self.budgets if self.budgets is not None else [0])]

    def ns_for(self, strategy: str) -> list[int]:
        return sorted(set(self.n)) if count_param(strategy) else [1]

    def points(self, model: str) -> list[Point]:
        """Every configuration for one model, largest N first (so a pool is filled in one go)."""
        out = []
        for e in ["", *self.early_exit]:
            for t in self.tool_sets():
                for b in self.budget_labels():
                    for s in self.strategies:
                        for n in sorted(self.ns_for(s), reverse=True):
                            for v in self.variants.get(s) or [{}]:
                                out.append(Point(model, b, s, n, t, e, variant_label(v)))
        return out

    def tool_sets(self) -> list[str]:
        """The tools dimension: always the run without tools, then each ``--tools`` entry ("a+b" = both)."""
        sets = [""]
        for entry in self.tools:
            names = "+".join(sorted({t.strip() for t in entry.split("+") if t.strip() and t.strip() != "none"}))
            if names and names not in sets:
                sets.append(names)
        return sets

    def strategy_params(self, point: Point) -> dict[str, Any]:
        raw = dict(self.params.get(point.strategy, {}))
        raw.update(parse_variant(point.variant))
        cp = count_param(point.strategy)
        if cp:
            raw[cp] = point.n
        return raw

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "BenchConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def variant_label(params: dict[str, Any]) -> str:
    return ",".join(f"{k}={params[k]}" for k in sorted(params))


def parse_variant(label: str) -> dict[str, Any]:
    import yaml

    out: dict[str, Any] = {}
    for part in filter(None, label.split(",")):
        k, _, v = part.partition("=")
        out[k] = yaml.safe_load(v)
    return out


def is_pooled(strategy: str) -> bool:
    """Its samples are independent seeded draws: the lab draws them once per (item, model, budget)."""
    return strategy in pooled()


def build_bench_config(opts: dict) -> BenchConfig:
    """A BenchConfig from command-line options; an absent option is an unset flag."""
    from ponder.lab.tasks import parse_number_list, suite

    def csv(value: str | None) -> list[str] | None:
        if value is None:
            return None
        return [v.strip() for v in value.split(",") if v.strip()]

    cfg = BenchConfig()
    if opts.get("suite"):
        s = suite(opts.get("suite"))
        cfg.suite = s.name
        cfg.tasks = list(s.tasks)
        cfg.limit = s.limit
        cfg.budgets = list(s.budgets)
        cfg.strategies = list(s.strategies)
        cfg.n = list(s.n)
        cfg.answer_kind = s.answer_kind
    if opts.get("tasks"):
        cfg.tasks = list(opts.get("tasks"))
    for key in ("data", "question_field", "answer_field", "id_field", "difficulty_field", "scorer", "on_bad_line",
                "config_path", "limit", "seed", "concurrency", "temperature", "answer_tokens", "answer_kind"):
        if opts.get(key) is not None:
            setattr(cfg, key, opts[key])
    if opts.get("latency_slo") is not None:
        cfg.latency_slo_s = opts.get("latency_slo")
    if opts.get("min_accuracy") is not None:
        cfg.min_accuracy = opts.get("min_accuracy")
    if opts.get("models"):
        cfg.models = csv(opts.get("models")) or []
    if opts.get("efforts") and opts.get("budgets"):
        raise ConfigError("give --efforts or --budgets, not both", param="--budgets")
    if opts.get("efforts"):
        cfg.efforts, cfg.budgets = csv(opts.get("efforts")), None
    if opts.get("budgets"):
        cfg.budgets, cfg.efforts = parse_number_list(opts.get("budgets"), "--budgets"), None
    if opts.get("strategies"):
        cfg.strategies = csv(opts.get("strategies")) or []
    if opts.get("ns"):
        cfg.n = parse_number_list(opts.get("ns"), "--n")
    if opts.get("params"):
        cfg.params = parse_strategy_params(opts.get("params"))
    if opts.get("tools") is not None:
        cfg.tools = csv(opts.get("tools")) or []
    if opts.get("early_exit") is not None:
        cfg.early_exit = csv(opts.get("early_exit")) or []
    return cfg


def parse_strategy_params(raw) -> dict[str, dict]:
    import yaml

    out: dict[str, dict] = {}
    for item in raw:
        key, eq, value = item.partition("=")
        strategy, dot, name = key.partition(".")
        if not eq or not dot or not name:
            raise ConfigError(f"{item!r} is not STRATEGY.KEY=VALUE (e.g. best-of-n.verifier=task)", param="--param")
        out.setdefault(strategy, {})[name] = yaml.safe_load(value)
    return out

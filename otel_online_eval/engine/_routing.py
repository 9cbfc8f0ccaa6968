"""Routes: the rules that select spans of one name and parent kind, cached for the hot path."""

from __future__ import annotations

from collections.abc import Sequence

from otel_online_eval.metrics import Tally
from otel_online_eval.rules import Rule
from otel_online_eval.sampling import FULL

__all__ = ["Route", "Router"]

_ROUTE_CACHE_LIMIT = 4096


class Route:
    """The rules that select spans of one (name, parent kind), and a hot-path shortcut.

    ``bound`` is the largest sampling bound among the route's rules that use the shared hash;
    a span whose hash is at or above it cannot be sampled by any of them. Rules with their own
    seed or a callable sampler make it FULL (they decide on the workers).

    A trace rule is in every route: each span of a trace it samples is buffered, whatever the
    span's name (its ``apply_to`` picks the span that anchors the evaluation, not the spans).
    ``span_rules`` and ``trace_rules`` split ``rules`` by scope.

    The counters: ``seen`` (bumped by the front door for every span of the route),
    ``submitted`` (spans handed to the engine: the rest were sampled out by ``bound``), and
    ``ignored`` (submitted spans that are not to be evaluated: eval spans in the sidecar).
    """

    __slots__ = (
        "bound",
        "ignored",
        "inline",
        "rules",
        "seen",
        "span_rules",
        "submitted",
        "trace_rules",
    )

    def __init__(self, rules: tuple[Rule, ...]) -> None:
        self.rules = rules
        self.span_rules = tuple(rule for rule in rules if not rule.is_trace)
        self.trace_rules = tuple(rule for rule in rules if rule.is_trace)
        self.seen = Tally()
        self.submitted = Tally()
        self.ignored = Tally()
        # Buffering a span for a trace rule awaits nothing: only span rules decide this.
        self.inline = all(rule.inline for rule in self.span_rules)
        bound = 0
        for rule in rules:
            # A session rule samples by its key, known only once its trace is assembled.
            own = rule.salt or rule.sampling_is_callable or rule.is_session
            bound = max(bound, FULL if own else rule.bound)
        self.bound = bound


class Router:
    """Finds the route of a span by name and parent kind; caches up to 4096 names per kind."""

    def __init__(self, rules: Sequence[Rule]) -> None:
        self.rules = tuple(rules)
        self.rules_by_name = {rule.name: rule for rule in self.rules}
        self._interned: dict[tuple[int, ...], Route] = {}
        self.cache: tuple[dict[str, Route], dict[str, Route], dict[str, Route]] = ({}, {}, {})

    def route(self, name: str, parent: int) -> Route:
        """The route for a span (slow path; the caller tries ``cache[parent]`` first)."""
        key = tuple(
            i for i, r in enumerate(self.rules) if r.is_trace or r.apply_to.selects(name, parent)
        )
        route = self._interned.get(key)
        if route is None:
            route = self._interned.setdefault(key, Route(tuple(self.rules[i] for i in key)))
        cache = self.cache[parent]
        if len(cache) < _ROUTE_CACHE_LIMIT:
            cache[name] = route
        return route

    def routes(self) -> list[Route]:
        return list(self._interned.values())

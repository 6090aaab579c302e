"""A batch of model requests, summed up: what the budget step charges and the record keeps.

A `BatchTally` takes every request of a batch (an Anthropic Message Batch's ``params``, a line
of an OpenAI batch input file), each parsed by the same estimator as a single model call
(request.py, legacy.py), and keeps, per model:

- the request count and the sum of input estimates;
- the output caps as ``(cap per output, outputs per request) -> requests`` (``cap`` None: the
  request sets none, the budget's ``default_output`` applies): every output the batch asks for
  is reserved in full (nothing is clamped by ``max_output_reserve``: a batch is settled only
  when its results are read through the proxy, which may never happen);
- a histogram of the input estimates (quarter powers of two, each bucket counted at its lower
  bound), so a refund for requests known to be unused (a cancelled batch's ``request_counts``)
  can be computed without ever exceeding what those requests were charged.

Bounded: at most ``MAX_MODELS`` models (more: the batch is refused as malformed), at most
``MAX_CAPS`` distinct output caps per model (more: caps are rounded up to a power of two,
which only raises the charge, and the summary is marked ``coarse``: no refunds from counts).
A uniform sample of at most ``SAMPLE`` prompts (all of them in smaller batches) is kept for
the template tracker and the linker.
"""

from __future__ import annotations

import math
import os
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from .request import ParsedRequest

__all__ = ["MAX_MODELS", "SAMPLE", "BatchSummary", "BatchTally", "ModelPart", "Prompt",
           "k_smallest", "part_of"]

MAX_MODELS = 32
MAX_CAPS = 64
SAMPLE = 32
HIST_STEPS = 16  # histogram buckets per doubling (a lower bound within 4.4 %)


@dataclass(frozen=True, slots=True)
class ModelPart:
    """The requests of one model in a batch."""

    model: str | None
    requests: int
    input_tokens: int
    outputs: tuple[tuple[int | None, int, int], ...]  # (cap per output, outputs, requests)
    inputs_hist: tuple[tuple[int, int], ...]  # (bucket, requests)

    def output_tokens(self, default: int, cap_to: int | None = None) -> int:
        """Output tokens asked for (a missing cap counts ``default``), each output capped at
        ``cap_to`` when given."""
        total = 0
        for cap, outs, n in self.outputs:
            c = default if cap is None else cap
            if cap_to is not None:
                c = min(c, cap_to)
            total += c * outs * n
        return total

    def input_values(self) -> list[tuple[int, int]]:
        """(lower bound of an input estimate, requests), from the histogram."""
        return [(_lower(b), n) for b, n in self.inputs_hist]

    def output_values(self, default: int) -> list[tuple[int, int]]:
        """(outputs asked for by one request, requests)."""
        return [((default if c is None else c) * o, n) for c, o, n in self.outputs]


def k_smallest(values: Iterable[tuple[int, int]], k: int) -> int:
    """The sum of the ``k`` smallest of ``values`` given as (value, how many)."""
    total = 0
    for v, n in sorted(values):
        take = min(n, k)
        total += v * take
        k -= take
        if k <= 0:
            break
    return total


def part_of(model: str | None, models: Iterable[str | None]) -> str | bool | None:
    """Which of a batch's ``models`` a result naming ``model`` belongs to: the same name, or
    the longest one it extends (an alias resolved to a dated snapshot: ``gpt-4o`` ->
    ``gpt-4o-2024-08-06``). False when none fits."""
    names = list(models)
    if model in names:
        return model
    best: str | bool | None = False
    for m in names:
        if m and model and model.startswith(m) and model[len(m):len(m) + 1] in ("-", "@", ":") \
                and (best is False or len(m) > len(best or "")):
            best = m
    if best is False and len(names) == 1 and model is None:
        return names[0]
    return best


def _bucket(v: int) -> int:
    return int(math.log2(v + 1) * HIST_STEPS) if v > 0 else 0


def _lower(b: int) -> int:
    """The smallest value of bucket ``b`` (never above any value counted in it)."""
    if b <= 0:
        return 0
    return max(0, math.ceil(2 ** (b / HIST_STEPS) - 1 - 1e-9))


@dataclass(frozen=True, slots=True)
class BatchSummary:
    """A batch's requests, per model (see the module doc). Plain data: the facts of a batch
    submission carry it, the budget step reads it, the batch record keeps it."""

    requests: int
    parts: tuple[ModelPart, ...]
    errors: int = 0  # requests the estimator found fault with (still charged)
    coarse: bool = False

    @property
    def input_tokens(self) -> int:
        return sum(p.input_tokens for p in self.parts)

    def output_tokens(self, default: int = 0) -> int:
        return sum(p.output_tokens(default) for p in self.parts)

    @property
    def models(self) -> tuple[str | None, ...]:
        return tuple(p.model for p in self.parts)

    @property
    def model(self) -> str | None:
        """The model when every request names the same one, else None."""
        return self.parts[0].model if len(self.parts) == 1 else None

    def to_json(self) -> dict[str, Any]:
        """JSON form (decision log, batch record); `from_json` reads it back."""
        return {"requests": self.requests, "errors": self.errors, "coarse": self.coarse,
                "models": [{"model": p.model, "requests": p.requests,
                            "input_tokens": p.input_tokens,
                            "outputs": [list(o) for o in p.outputs],
                            "inputs_hist": [list(h) for h in p.inputs_hist]}
                           for p in self.parts]}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> BatchSummary:
        """Read `to_json` back (raises KeyError / TypeError / ValueError on a broken one)."""
        parts = tuple(ModelPart(
            m["model"], int(m["requests"]), int(m["input_tokens"]),
            tuple((None if c is None else int(c), int(o), int(n))
                  for c, o, n in m.get("outputs") or ()),
            tuple((int(b), int(n)) for b, n in m.get("inputs_hist") or ()),
        ) for m in d["models"])
        return cls(int(d["requests"]), parts, int(d.get("errors") or 0),
                   bool(d.get("coarse")))


@dataclass(frozen=True, slots=True)
class Prompt:
    """One sampled prompt (what the template tracker and prompt patterns read)."""

    system_text: str
    last_user_text: str


class _Part:
    __slots__ = ("hist", "input", "outputs", "requests")

    def __init__(self) -> None:
        self.requests = self.input = 0
        self.outputs: dict[tuple[int | None, int], int] = {}
        self.hist: dict[int, int] = {}


class BatchTally:
    """Adds up a batch's parsed requests (see the module doc). ``add`` returns an error
    message when the batch can no longer be summed up (too many models)."""

    def __init__(self, sample: int = SAMPLE, rng: Callable[[int], int] | None = None) -> None:
        self.requests = 0
        self.errors = 0
        self.coarse = False
        self.sample_size = sample
        self.sample: list[Prompt] = []
        self._parts: dict[str | None, _Part] = {}
        # seeded from the OS: a caller cannot tell which of its requests are sampled
        self._rand = rng or random.Random(os.urandom(16)).randrange

    def add(self, p: ParsedRequest) -> str | None:
        part = self._parts.get(p.model)
        if part is None:
            if len(self._parts) >= MAX_MODELS:
                return f"a batch may name at most {MAX_MODELS} different models"
            part = self._parts[p.model] = _Part()
        self.requests += 1
        if p.error is not None:
            self.errors += 1
        part.requests += 1
        part.input += p.input_tokens_est
        b = _bucket(p.input_tokens_est)
        part.hist[b] = part.hist.get(b, 0) + 1
        key = (p.max_output, max(1, p.choices))
        if key not in part.outputs and len(part.outputs) >= MAX_CAPS and key[0] is not None:
            self.coarse = True
            key = (1 << max(0, key[0] - 1).bit_length(), key[1])
        part.outputs[key] = part.outputs.get(key, 0) + 1
        self._sample(p)
        return None

    def _sample(self, p: ParsedRequest) -> None:
        if not (p.system_text or p.last_user_text):
            return
        prompt = Prompt(p.system_text, p.last_user_text)
        if len(self.sample) < self.sample_size:
            self.sample.append(prompt)
            return
        j = self._rand(self.requests)  # reservoir sampling: every request equally likely
        if j < self.sample_size:
            self.sample[j] = prompt

    @property
    def sampled(self) -> bool:
        """Whether the sample is a part of the prompts (False: it holds all of them)."""
        return self.requests > self.sample_size

    def summary(self) -> BatchSummary:
        parts = tuple(ModelPart(
            model, p.requests, p.input,
            tuple(sorted(((c, o, n) for (c, o), n in p.outputs.items()),
                         key=lambda x: (x[0] is None, x[0] or 0, x[1]))),
            tuple(sorted(p.hist.items())),
        ) for model, p in self._parts.items())
        return BatchSummary(self.requests, parts, self.errors, self.coarse)

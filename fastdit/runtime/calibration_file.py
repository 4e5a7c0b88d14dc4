"""A calibration: per layer and head, the setting chosen for a quality target, as a small JSON file.

The file says what it is for (the model id, a fingerprint of its denoisers' configs, the latent grid, the
step count and the kernel block) and what was chosen: the dense warm-up, and per layer its method (or dense)
with each head's options, measured error, recall and density. ``fastdit.apply(pipe, calibration=...)``
turns it into per-layer plans for the engine; a file made for another architecture is refused.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import reprlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import torch

from fastdit.runtime.config import LayerPlan, check_block_size
from fastdit.runtime.files import write_text

__all__ = ["HeadChoice", "LayerChoice", "Calibration", "load_calibration", "fingerprint", "check_target", "FORMAT",
           "METRICS", "ALLOCATIONS"]

FORMAT = "fastdit-calibration/1"
# what the target bounds: the relative L2 error of the sampled output rows, or the attention mass outside
METRICS = ("rel_l2", "mass")
ALLOCATIONS = ("budget", "cap")


def check_target(target: Any, metric: Any, allocation: Any) -> None:
    """A ``ValueError`` unless ``target`` is a finite number >= 0 and ``metric``/``allocation`` are known (checked
    before a calibration measures anything, and again in every file that claims them)."""
    _check_number("target", target)
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {', '.join(METRICS)}, got {_short(metric)}")
    if allocation not in ALLOCATIONS:
        raise ValueError(f"allocation must be one of {', '.join(ALLOCATIONS)}, got {_short(allocation)}")


def _short(value: Any) -> str:
    """``repr`` cut short: a hostile file's value may be a megabyte of nested lists."""
    return reprlib.repr(value)


def _check_number(name: str, value: Any, *, integer: bool = False, low: float = 0, high: float = math.inf) -> None:
    """A ``ValueError`` unless ``value`` is a finite number (an int when ``integer``) in ``[low, high]``."""
    kinds = int if integer else (int, float)
    if (isinstance(value, bool) or not isinstance(value, kinds) or isinstance(value, float) and not math.isfinite(value)
            or not low <= value <= high):
        kind = "an int" if integer else "a finite number"
        bound = f">= {low}" if high == math.inf else f"in [{low}, {high}]"
        raise ValueError(f"{name} must be {kind} {bound}, got {_short(value)}")


def _check_type(name: str, value: Any, kinds: type | tuple[type, ...], what: str) -> None:
    if not isinstance(value, kinds):
        raise ValueError(f"{name} must be {what}, got {type(value).__name__}")


def fingerprint(models: Iterable[tuple[str, torch.nn.Module]]) -> str:
    """A short hash of each denoiser's name, class and public config (weights are not part of it: a fine-tune
    of the same architecture has the same fingerprint, so the model id is recorded too)."""
    parts = []
    for name, model in models:
        config = dict(getattr(model, "config", {}) or {})
        public = {k: v for k, v in config.items() if not k.startswith("_")}
        parts.append([name, type(model).__name__, public])
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _plain(value: Any) -> Any:
    """JSON-ready copy of an options value (tuples become lists)."""
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    return value


@dataclass(frozen=True)
class HeadChoice:
    """One head's setting (``options=None``: dense) and what it measured: the worst relative L2 error of the
    sampled output rows and the lowest recall over the measured steps it runs sparse, and its density."""

    options: dict[str, Any] | None
    error: float = 0.0
    recall: float = 1.0
    density: float = 1.0

    def __post_init__(self) -> None:
        _check_type("options", self.options, (dict, type(None)), "a mapping or null")
        for name in ("error", "recall", "density"):
            _check_number(name, getattr(self, name))


@dataclass(frozen=True)
class LayerChoice:
    """One self-attention layer of denoiser ``model``: ``method`` (``"dense"``: the whole layer) per head."""

    model: str
    layer: int
    method: str
    heads: tuple[HeadChoice, ...] = ()

    def __post_init__(self) -> None:
        _check_type("model", self.model, str, "a string")
        _check_number("layer", self.layer, integer=True)
        _check_type("method", self.method, str, "a string")

    @property
    def density(self) -> float:
        return sum(h.density for h in self.heads) / len(self.heads) if self.heads else 1.0

    def plan(self) -> LayerPlan:
        return LayerPlan.create(self.method, [h.options for h in self.heads])


@dataclass
class Calibration:
    """The result of :func:`fastdit.calibrate`; ``save``/``load`` it, or pass it to ``fastdit.apply``.

    ``dense_steps`` of ``schedule`` denoising steps run dense (applied as that share of a run's steps);
    ``expected_density`` is the mean share of dense attention work over every step and layer, as
    ``fastdit.stats(...).mean_density()`` reports it; ``seconds`` is the time the measuring took and
    ``dense_seconds`` one dense generation's, when known.
    """

    model: str | None
    fingerprint: str
    grid: tuple[int, int, int]
    block_size: int
    target: float
    metric: str
    schedule: int
    dense_steps: int
    layers: tuple[LayerChoice, ...]
    expected_density: float
    allocation: str = "cap"
    measured_steps: tuple[int, ...] = ()
    methods: tuple[str, ...] = ()
    prompts: tuple[str, ...] = ()
    rows: int = 0
    seconds: float = 0.0
    dense_seconds: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # every value a run divides by, converts or compares is checked here, not where it first breaks
        _check_type("model", self.model, (str, type(None)), "a string or null")
        _check_type("fingerprint", self.fingerprint, str, "a string")
        if len(self.grid) != 3:
            raise ValueError(f"grid must be 3 sizes (frames, height, width), got {_short(self.grid)}")
        for size in self.grid:
            _check_number("each grid size", size, integer=True, low=1)
        check_block_size(self.block_size)
        check_target(self.target, self.metric, self.allocation)
        _check_number("schedule", self.schedule, integer=True, low=1)
        _check_number("dense_steps", self.dense_steps, integer=True, high=self.schedule)
        _check_number("expected_density", self.expected_density)
        for step in self.measured_steps:
            _check_number("each measured step", step, integer=True)
        for name in ("methods", "prompts"):
            for value in getattr(self, name):
                _check_type(f"each of {name}", value, str, "a string")
        _check_number("rows", self.rows, integer=True)
        _check_number("seconds", self.seconds)
        if self.dense_seconds is not None:
            _check_number("dense_seconds", self.dense_seconds)
        _check_type("extra", self.extra, dict, "a mapping")

    # ---------------------------------------------------------------- use
    def plans(self) -> dict[tuple[str, int], LayerPlan]:
        """``(denoiser, layer) -> LayerPlan`` for the engine (options validated by their methods)."""
        return {(c.model, c.layer): c.plan() for c in self.layers}

    @property
    def dense_share(self) -> float:
        """The warm-up as a share of the steps, so a run with another step count keeps its proportion."""
        return self.dense_steps / self.schedule

    @property
    def main_method(self) -> str:
        """The method most sparse layers use (``"dense"`` when none is sparse)."""
        sparse = [c.method for c in self.layers if c.method != "dense"]
        return max(dict.fromkeys(sparse), key=sparse.count) if sparse else "dense"

    def check_model(self, models: list[tuple[str, torch.nn.Module]], heads: dict[tuple[str, int], int]) -> None:
        """Refuse a model this calibration was not made for: another architecture, or layers and heads that
        don't match (``heads``: the attention heads of every patched ``(denoiser, layer)``)."""
        found = fingerprint(models)
        if found != self.fingerprint:
            raise ValueError(f"this calibration was made for {self.model or 'another model'} (config fingerprint "
                             f"{self.fingerprint}); this model's fingerprint is {found}: calibrate it with "
                             "fastdit.calibrate / `fastdit calibrate`")
        chosen = {(c.model, c.layer): c for c in self.layers}
        missing = sorted(set(heads) - set(chosen))
        if missing:
            raise ValueError(f"the calibration has no setting for layer(s) {', '.join(f'{m}.{i}' for m, i in missing)}")
        for key, n in heads.items():
            choice = chosen[key]
            if choice.method != "dense" and len(choice.heads) not in (1, n):
                raise ValueError(f"the calibration gives {len(choice.heads)} head settings for {key[0]}.{key[1]}, "
                                 f"which has {n} heads")

    # ---------------------------------------------------------------- files
    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["layers"] = [{"model": c.model, "layer": c.layer, "method": c.method, "density": c.density,
                           "heads": [{**dataclasses.asdict(h), "options": None if h.options is None
                                      else {k: _plain(v) for k, v in h.options.items()}} for h in c.heads]}
                          for c in self.layers]
        return {"format": FORMAT, **{k: _plain(v) if isinstance(v, tuple) else v for k, v in data.items()
                                     if k != "layers"}, "layers": data["layers"]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Calibration":
        """The calibration a JSON file's object describes; a ``ValueError`` names the first field that is
        missing, of the wrong kind (a list where a mapping belongs) or out of range (infinite, zero steps)."""
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ValueError(f"not a fastdit calibration (expected \"format\": \"{FORMAT}\")")
        try:
            layers = tuple(_layer(i, c) for i, c in enumerate(_items("layers", data["layers"])))
            fields = {f.name for f in dataclasses.fields(cls)}
            values = {k: v for k, v in data.items() if k in fields and k != "layers"}
            for key in ("grid", "measured_steps", "methods", "prompts"):
                if key in values:
                    values[key] = tuple(_items(key, values[key]))
            calibration = cls(layers=layers, **values)
        except KeyError as err:
            raise ValueError(f"malformed calibration: no {err}") from None
        except (TypeError, ValueError) as err:
            raise ValueError(f"malformed calibration: {err}") from None
        calibration.plans()  # every method and option is checked now, not at the first sparse layer
        return calibration

    def save(self, path: str | os.PathLike) -> Path:
        """Write the JSON file (atomically: a failed write leaves no partial file)."""
        write_text(json.dumps(self.to_dict(), indent=1) + "\n", path)
        return Path(path)

    def summary(self) -> str:
        sparse = [c for c in self.layers if c.method != "dense"]
        heads = sum(len(c.heads) for c in sparse)
        dense_heads = sum(h.options is None for c in sparse for h in c.heads)
        methods = sorted({c.method for c in sparse})
        spent = "RMS over heads" if self.allocation == "budget" else "every head"
        return (f"target {self.metric} <= {self.target:g} ({spent}): {self.dense_steps} of {self.schedule} steps "
                f"dense, "
                f"{len(self.layers) - len(sparse)} of {len(self.layers)} layers dense, {dense_heads} of {heads} "
                f"heads of sparse layers dense; methods: {', '.join(methods) or 'none'}; expected density "
                f"{self.expected_density:.3f}")


def _items(name: str, value: Any) -> list[Any]:
    _check_type(name, value, list, "a list")
    return value


def _layer(index: int, data: Any) -> LayerChoice:
    """One entry of a file's ``layers`` (its position named in any error)."""
    where = f"layers[{index}]"
    _check_type(where, data, dict, "a mapping")
    try:
        heads = _items("heads", data.get("heads", []))
        for h in heads:
            _check_type("each of heads", h, dict, "a mapping")
        return LayerChoice(data["model"], data["layer"], data["method"], tuple(HeadChoice(**h) for h in heads))
    except KeyError as err:
        raise ValueError(f"{where} has no {err}") from None
    except (TypeError, ValueError) as err:
        raise ValueError(f"{where}: {err}") from None


def load_calibration(source: "str | os.PathLike | Calibration") -> Calibration:
    """A :class:`Calibration` from a path to its JSON file (or the object itself)."""
    if isinstance(source, Calibration):
        return source
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(f"calibration must be a path or a fastdit Calibration, got {type(source).__name__}")
    path = Path(source)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ValueError(f"calibration file {str(path)!r} does not exist") from None
    except RecursionError:  # arrays nested thousands deep: no calibration looks like that
        raise ValueError(f"can't read calibration file {str(path)!r}: its JSON is nested too deeply") from None
    except (OSError, ValueError) as err:  # ValueError: also JSON's own (bad UTF-8, an int of 5000 digits)
        raise ValueError(f"can't read calibration file {str(path)!r}: {err}") from None
    return Calibration.from_dict(data)

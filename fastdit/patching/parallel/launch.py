"""Start context parallelism for a patched (or to-be-patched) model: the process group and diffusers' config.

``torchrun --nproc-per-node N`` sets ``RANK``, ``WORLD_SIZE`` and ``MASTER_ADDR``; :func:`init_distributed`
joins that group (NCCL on GPUs, gloo on CPUs). :func:`enable_context_parallel` then calls diffusers'
``enable_parallelism`` with a ``ContextParallelConfig`` of the kind asked for. diffusers resolves the device of
the mesh as ``rank % torch.accelerator.device_count()``, which divides by zero on a machine without an
accelerator; there (CPU runs are correctness demonstrations) that one call is answered with 1 while the mesh
is built.

Every rank runs the same computation on its share of the sequence and meets the others in each attention
call: ranks started with different settings would wait on collectives that never match (a hang) or compute a
video that is neither's. :func:`agree` exchanges a digest of each setting at start and refuses a mismatch on
every rank; :func:`all_finished` holds the writer until every rank is done.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import re
from typing import Any, Iterator

import torch

__all__ = ["parse_parallel", "init_distributed", "enable_context_parallel", "is_main_process", "parallelize", "agree",
           "all_finished"]

KINDS = ("ulysses", "ring")


def parse_parallel(text: str) -> tuple[str, int]:
    """``"ulysses=4"`` → ``("ulysses", 4)``; a ``ValueError`` naming what is allowed otherwise."""
    match = re.fullmatch(r"\s*(\w+)\s*=\s*(\d+)\s*", text or "")
    if match is None or match.group(1) not in KINDS or int(match.group(2)) < 2:
        raise ValueError(f"--parallel takes ulysses=N or ring=N with N >= 2, got {text!r}")
    return match.group(1), int(match.group(2))


def init_distributed() -> int:
    """Join the process group torchrun describes (once); returns this process's rank. On CUDA each rank
    takes the GPU of its local rank."""
    import torch.distributed as dist

    if not dist.is_initialized():
        if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
            raise RuntimeError("context parallelism needs one process per rank: launch with "
                               "torchrun --nproc-per-node N -m fastdit ...")
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        dist.init_process_group(backend)
    return dist.get_rank()


def is_main_process() -> bool:
    """Rank 0 of an initialised process group, or a process without one (it writes the outputs)."""
    import torch.distributed as dist

    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


@contextlib.contextmanager
def _accelerator_count_at_least_one() -> Iterator[None]:
    """diffusers computes ``rank % torch.accelerator.device_count()``: on a CPU-only machine, answer 1."""
    if torch.accelerator.device_count() > 0:
        yield
        return
    original = torch.accelerator.device_count
    torch.accelerator.device_count = lambda: 1
    try:
        yield
    finally:
        torch.accelerator.device_count = original


def enable_context_parallel(model: torch.nn.Module, kind: str, degree: int, anything: bool | None = None,
                            cp_plan: dict | None = None) -> None:
    """``model.enable_parallelism`` with ``kind`` (``"ulysses"`` or ``"ring"``) over ``degree`` ranks
    (``cp_plan``: where to split and gather, for a model diffusers gives no ``_cp_plan``).

    ``anything`` lets the sequence (and, for Ulysses, the heads) split unevenly (diffusers' "anything"
    variants), so any resolution runs; by default it is on except over gloo, whose ``all_gather`` (diffusers'
    gather of the output) needs equal shards: CPU runs take token counts the ranks divide. Ulysses over a head
    count the ranks don't divide (the bundled model's 3 heads on 2 ranks) always takes the "anything" variant,
    which pads the heads; a diffusers without it is refused, naming the head count.
    """
    import torch.distributed as dist
    from diffusers import ContextParallelConfig

    if kind not in KINDS:
        raise ValueError(f"context parallelism is ulysses or ring, got {kind!r}")
    if not dist.is_initialized() or dist.get_world_size() != degree:
        found = dist.get_world_size() if dist.is_initialized() else 1
        raise ValueError(f"{kind}={degree} needs {degree} processes (torchrun --nproc-per-node {degree}), "
                         f"this run has {found}")
    uneven = sorted({h for h in _head_counts(model) if h % degree}) if kind == "ulysses" else []
    if anything is None:
        anything = dist.get_backend() != "gloo" or bool(uneven)
    fields = {f.name for f in dataclasses.fields(ContextParallelConfig)}
    if uneven and (not anything or "ulysses_anything" not in fields):
        has = "ulysses_anything" in fields
        why = "without ulysses_anything" if has else "(this diffusers has no ulysses_anything)"
        raise ValueError(f"ulysses={degree} can't split {type(model).__name__}'s {uneven[0]} attention heads "
                         f"{degree} ways {why}; use ring={degree} or a degree that divides {uneven[0]}")
    options = {f"{kind}_degree": degree, f"{kind}_anything": anything}
    with _accelerator_count_at_least_one():
        model.enable_parallelism(config=ContextParallelConfig(**options), cp_plan=cp_plan)


def _head_counts(model: torch.nn.Module) -> set[int]:
    """The head counts of ``model``'s attention modules (diffusers' attention classes call them ``heads``)."""
    return {m.heads for m in model.modules() if isinstance(getattr(m, "heads", None), int) and m.heads > 0}


def parallelize(pipe: object, spec: str) -> tuple[str, int]:
    """For the CLI's ``--parallel KIND=N``: join torchrun's process group and put every denoiser fastdit
    patches in ``pipe`` under context parallelism (before ``apply``, which takes the config over). Returns
    ``(kind, degree)``; a ``ValueError`` names what is wrong."""
    from fastdit.patching.components import denoisers

    kind, degree = parse_parallel(spec)
    init_distributed()
    for _, model in denoisers(pipe):
        enable_context_parallel(model, kind, degree)
    return kind, degree


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=repr).encode()).hexdigest()


def agree(settings: dict[str, Any]) -> None:
    """Refuse, on every rank, a run whose ranks were started with different ``settings`` (name -> a value whose
    JSON, or ``repr`` where it has none, says everything that shapes the computation). Each rank sends the
    others one digest per setting and a short view of its value, so the exchange is small whatever the setting
    (a long prompt, a calibration) and the error names the settings that differ and what each rank had.

    Args:
        settings: this rank's settings by the name the error shows (a flag, ``"call"``).

    Raises:
        ValueError: the ranks disagree; the message names each differing setting per rank.
    """
    import torch.distributed as dist

    mine = {name: (_digest(value), _shorten(value)) for name, value in settings.items()}
    ranks: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(ranks, mine)
    names = sorted(set().union(*ranks))
    differ = [name for name in names if len({r.get(name, (None,))[0] for r in ranks}) > 1]
    if differ:
        dist.destroy_process_group()  # every rank found the same mismatch: leave the group before exiting

        def views(name: str) -> str:
            return ", ".join(f"rank {i}: {r.get(name, (None, 'unset'))[1]}" for i, r in enumerate(ranks))

        raise ValueError("the ranks were started with different settings; every rank of --parallel needs the "
                         "same: " + "; ".join(f"{name} ({views(name)})" for name in differ))


def _shorten(value: Any, limit: int = 60) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=repr)
    return text if len(text) <= limit else f"{text[:limit - 12]}... ({_digest(value)[:8]})"


def all_finished() -> None:
    """Wait until every rank has finished its run (a rank that fails ends the launch first, so the writer
    never writes a result the others did not finish)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()

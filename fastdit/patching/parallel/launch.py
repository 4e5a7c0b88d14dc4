"""Start context parallelism for a patched (or to-be-patched) model: the process group and diffusers' config.

``torchrun --nproc-per-node N`` sets ``RANK``, ``WORLD_SIZE`` and ``MASTER_ADDR``; :func:`init_distributed`
joins that group (NCCL on GPUs, gloo on CPUs). :func:`enable_context_parallel` then calls diffusers'
``enable_parallelism`` with a ``ContextParallelConfig`` of the kind asked for. diffusers resolves the device of
the mesh as ``rank % torch.accelerator.device_count()``, which divides by zero on a machine without an
accelerator; there (CPU runs are correctness demonstrations) that one call is answered with 1 while the mesh
is built.
"""

from __future__ import annotations

import contextlib
import os
import re
from typing import Iterator

import torch

__all__ = ["parse_parallel", "init_distributed", "enable_context_parallel", "is_main_process", "parallelize"]

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
    gather of the output) needs equal shards: CPU runs take token counts the ranks divide.
    """
    import torch.distributed as dist
    from diffusers import ContextParallelConfig

    if kind not in KINDS:
        raise ValueError(f"context parallelism is ulysses or ring, got {kind!r}")
    if not dist.is_initialized() or dist.get_world_size() != degree:
        found = dist.get_world_size() if dist.is_initialized() else 1
        raise ValueError(f"{kind}={degree} needs {degree} processes (torchrun --nproc-per-node {degree}), "
                         f"this run has {found}")
    if anything is None:
        anything = dist.get_backend() != "gloo"
    options = {f"{kind}_degree": degree, f"{kind}_anything": anything}
    with _accelerator_count_at_least_one():
        model.enable_parallelism(config=ContextParallelConfig(**options), cp_plan=cp_plan)


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

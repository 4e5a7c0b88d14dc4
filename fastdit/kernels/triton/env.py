"""How the Triton kernels run here: in Triton's CPU interpreter or compiled, and the opt-in Hopper paths.

Every Triton module of fastdit reads these flags from here (the forward, backward and pooling kernels all
need them), decided once when the kernels are first imported.
"""

from __future__ import annotations

import os

import triton

__all__ = ["INTERPRETED", "USE_TMA", "USE_WS"]


@triton.jit
def _probe():
    pass


INTERPRETED: bool = not isinstance(_probe, triton.runtime.JITFunction)
"""True when Triton's CPU interpreter runs the kernels (``TRITON_INTERPRET=1`` when they were imported)."""

USE_TMA: bool = os.environ.get("FASTDIT_TRITON_TMA", "0") == "1"
"""Read Q/K/V through TMA tensor descriptors on Hopper (``FASTDIT_TRITON_TMA=1``; off by default until timed
on a GPU: it compiles green, fewer registers, but one barrier more per tile)."""
USE_WS: bool = os.environ.get("FASTDIT_TRITON_WS", "0") == "1"
"""Warp-specialize the level-0 loop on Hopper (``FASTDIT_TRITON_WS=1``, implies TMA; off by default: it
compiles green for sm_90 but has not run on a GPU yet). Layouts with pyramid levels keep the pipelined loop."""

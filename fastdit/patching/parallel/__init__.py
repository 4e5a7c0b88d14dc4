"""fastdit under diffusers' context parallelism: ``config.py`` (which config a processor runs under),
``dispatch.py`` (sending a call to Ulysses or ring), ``ulysses.py``, ``ring.py``, ``shards.py`` (sequence
shards and their token orders) and ``launch.py`` (``torchrun`` set-up for the command line)."""

from fastdit.patching.parallel.config import hand_back, parallel_config
from fastdit.patching.parallel.dispatch import parallel_attention

__all__ = ["parallel_config", "parallel_attention", "hand_back"]

"""Finding and loading the pipeline a user names (``loading.py``: the bundled sample, a local folder or a hub
id), checking a call against the model's limits before it runs (``limits.py``), and the bundled sample itself
(``tiny-wan/``, package data: fastdit's Wan model trained on the procedural toy world)."""

"""Dummy denoisers, text encoders and pipelines with random weights, for tests and benchmarks: the real diffusers
classes at toy width (``wan.py``, ``video.py``, ``image.py``, ``text_encoders.py``), and real models'
published configs at full size (``configs.py``, for ``fastdit bench e2e``). Their outputs are noise."""

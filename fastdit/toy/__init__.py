"""The procedural toy world and the bundled sample trained on it.

``world/`` renders clips of coloured shapes with grammar prompts and reads them back (the detector);
``recipe.py`` is the sample's architecture and training recipe; ``training.py`` the shared training steps
(flow matching loss, clip encoding); ``train_sample.py`` trains the sample (``python -m
fastdit.toy.train_sample RUN``), ``make_sample.py`` installs it as the bundled model; ``train_lora.py``
fine-tunes a LoRA of it on longer clips under sparse attention.
"""

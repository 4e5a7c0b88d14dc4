"""Tools for running a pipeline and reporting it: ``run.py`` (one timed pipeline call, dense or sparse, with a
fresh seed), ``caches.py`` (diffusers' step caches by name), ``compare.py`` (dense vs sparse, same prompt and
seed), ``media.py`` (videos, images and labelled panels), ``metrics.py`` (PSNR, SSIM), ``pictures.py`` (the
picture of a block layout) and ``report.py`` (JSON + markdown reports with the environment)."""

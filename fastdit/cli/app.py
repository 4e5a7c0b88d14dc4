"""Start the web demo: the same prompt and seed, dense and sparse, side by side, with time, speedup,
PSNR/SSIM and a picture of the attention layout (needs the `app` extra: pip install 'fastdit[app]')."""

from __future__ import annotations

import argparse

from . import CLIError
from .common import resolve_device


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="tiny",
                        help="'tiny' (bundled random-weight model), a local diffusers folder, or a hub id")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--share", action="store_true", help="also open a public Gradio share link")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))


def run(args: argparse.Namespace) -> int:
    try:
        import gradio  # noqa: F401
    except ImportError:
        raise CLIError("the web demo needs gradio: pip install 'fastdit[app]'") from None
    from ..app.session import DemoSession
    from ..app.ui import build_demo
    from ..pipelines.loading import ModelError

    if not 0 < args.port < 65536:
        raise CLIError(f"--port must be between 1 and 65535, got {args.port}")
    try:
        session = DemoSession(args.model, device=resolve_device(args.device))
    except (ModelError, ValueError) as err:
        raise CLIError(str(err)) from None
    demo = build_demo(session)
    print(f"fastdit app: serving {session.source.location} on http://{args.host}:{args.port}", flush=True)
    demo.launch(server_name=args.host, server_port=args.port, share=args.share, show_error=True, quiet=True)
    return 0

"""Start the web demo: the same prompt and seed, dense and sparse, side by side, with time, speedup,
PSNR/SSIM and a picture of the attention layout (needs the `app` extra: pip install 'fastdit[app]').

The address is checked before the model loads (a host that isn't this machine's and a port in use are told
apart). The page's videos live in one temporary folder per process, removed when the server stops (Ctrl-C or
SIGTERM) or fails to start; Gradio's own copies are deleted after an hour and at shutdown; uploads are off.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import signal
import socket
import tempfile
from typing import Iterator

from fastdit.cli import CLIError
from fastdit.cli.common import check_calibration, resolve_device

# Gradio deletes its cached copies of the page's videos every FREQUENCY seconds once they are AGE seconds old
CACHE_CLEANUP = (600, 3600)  # (frequency, age)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="sample",
                        help="'sample' (the bundled toy-world model), a local diffusers folder, or a hub id")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--share", action="store_true", help="also open a public Gradio share link")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--calibration", metavar="PATH",
                        help="a calibration file from `fastdit calibrate`: offered as the method 'calibrated'")
    parser.add_argument("--reuse-calibration", action="store_true",
                        help="run the calibration on other video sizes than it was made for (with a warning)")


def check_address(host: str, port: int) -> None:
    """One line for each way the server can't listen on ``host:port`` (Gradio reports them all as "cannot
    find empty port")."""
    if not 0 < port < 65536:
        raise CLIError(f"--port must be between 1 and 65535, got {port}")
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except (socket.gaierror, UnicodeError) as err:
        raise CLIError(f"--host {host!r} is not an address or a name this machine can resolve "
                       f"({getattr(err, 'strerror', None) or err})") from None
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server does: TIME_WAIT is free
        try:
            probe.bind(address)
        except OSError as err:
            if err.errno == errno.EADDRINUSE:
                raise CLIError(f"port {port} on {host} is in use (another app?); choose another with --port") \
                    from None
            if err.errno == errno.EADDRNOTAVAIL:
                raise CLIError(f"--host {host!r} is not an address of this machine") from None
            if err.errno == errno.EACCES:
                raise CLIError(f"port {port} needs privileges on this machine; use --port 1024 or above") from None
            raise CLIError(f"can't listen on {host}:{port} ({err.strerror})") from None


@contextlib.contextmanager
def _sigterm_stops_server() -> Iterator[None]:
    """``kill`` (SIGTERM) stops the server as Ctrl-C does, so the temporary folder is removed on the way out."""

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run(args: argparse.Namespace) -> int:
    try:
        import gradio  # noqa: F401
    except ImportError:
        raise CLIError("the web demo needs gradio: pip install 'fastdit[app]'") from None
    check_address(args.host, args.port)
    if args.calibration is not None:
        check_calibration(args.calibration)
    elif args.reuse_calibration:
        raise CLIError("--reuse-calibration needs --calibration PATH")
    from fastdit.app.session import DemoSession
    from fastdit.app.ui import build_demo
    from fastdit.models.loading import ModelError

    with _sigterm_stops_server(), tempfile.TemporaryDirectory(prefix="fastdit-app-") as video_dir:
        try:
            session = DemoSession(args.model, device=resolve_device(args.device), calibration=args.calibration,
                                  reuse_calibration=args.reuse_calibration)
        except (ModelError, ValueError) as err:
            raise CLIError(str(err)) from None
        demo = build_demo(session, video_dir, delete_cache=CACHE_CLEANUP)
        print(f"fastdit app: serving {session.source.location} on http://{args.host}:{args.port}", flush=True)
        try:  # the demo takes no files: uploads of any size are refused
            demo.launch(server_name=args.host, server_port=args.port, share=args.share, show_error=True, quiet=True,
                        max_file_size=0)
        except OSError as err:  # the port was taken between the check and the launch
            raise CLIError(f"can't listen on {args.host}:{args.port} ({err})") from None
    return 0

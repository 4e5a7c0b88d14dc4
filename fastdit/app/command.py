"""Start the web demo: the same prompt and seed, dense and sparse, side by side, with time, speedup,
PSNR/SSIM and a picture of the attention layout (needs the `app` extra: pip install 'fastdit[app]').

The address is checked before the model loads (a host that isn't this machine's and a port in use are told
apart). The page's videos live in one temporary folder per process, removed when the server stops (Ctrl-C or
SIGTERM) or fails to start; Gradio's own copies are deleted after an hour and at shutdown; uploads are off,
except a bounded image for image-to-video models.

The demo has no accounts of its own: served beyond this machine (``--host 0.0.0.0``, ``--share``) without
``--auth``/``--auth-file`` (Gradio's login page), anyone who reaches it can use the model, and it says so.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import ipaddress
import math
import signal
import socket
import sys
import tempfile
from pathlib import Path
from typing import Iterator

from fastdit.cli import CLIError
from fastdit.cli.common import check_calibration, resolve_device

# Gradio deletes its cached copies of the page's videos every FREQUENCY seconds once they are AGE seconds old
CACHE_CLEANUP = (600, 3600)  # (frequency, age)
MAX_IMAGE_BYTES = 20 * 1024 * 1024  # the largest upload an image-to-video model's page takes


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="sample",
                        help="'sample' (the bundled toy-world model), a local diffusers folder, or a hub id")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--share", action="store_true", help="also open a public Gradio share link")
    parser.add_argument("--auth", action="append", default=[], metavar="USER:PASSWORD",
                        help="ask for this login (repeatable); other users of this machine can see it in the "
                             "process list: prefer --auth-file")
    parser.add_argument("--auth-file", metavar="PATH",
                        help="ask for one of the logins in this file: a USER:PASSWORD per line (# comments)")
    parser.add_argument("--time-limit", type=float, default=None, metavar="SECONDS",
                        help="stop a Generate that runs longer, so the next users don't wait for it "
                             "(default: 10 minutes)")
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


def _login(text: str, where: str) -> tuple[str, str]:
    user, colon, password = text.partition(":")
    if not colon or not user.strip() or not password:
        raise CLIError(f"{where} must be USER:PASSWORD with neither empty")
    return user.strip(), password


def read_logins(auth: list[str], auth_file: str | None) -> list[tuple[str, str]]:
    """The ``(user, password)`` pairs of ``--auth`` and ``--auth-file`` (a password is never echoed back).

    Args:
        auth: ``USER:PASSWORD`` strings.
        auth_file: a file of such lines; blank lines and lines starting with ``#`` are skipped.

    Returns:
        The logins, empty when neither was given.
    """
    logins = [_login(text, "--auth") for text in auth]
    if auth_file is not None:
        try:
            lines = Path(auth_file).read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as err:
            raise CLIError(f"--auth-file: can't read {auth_file} ({getattr(err, 'strerror', None) or err})") \
                from None
        found = [_login(line.strip(), f"--auth-file {auth_file} line {number}")
                 for number, line in enumerate(lines, 1) if line.strip() and not line.lstrip().startswith("#")]
        if not found:
            raise CLIError(f"--auth-file {auth_file} has no USER:PASSWORD line")
        logins += found
    return logins


def _local_only(host: str) -> bool:
    """Whether ``host`` is a loopback address (only this machine can connect)."""
    try:
        return all(ipaddress.ip_address(info[4][0]).is_loopback
                   for info in socket.getaddrinfo(host, None, type=socket.SOCK_STREAM))
    except (socket.gaierror, UnicodeError, ValueError):
        return False


def exposure_warning(host: str, share: bool, logins: list[tuple[str, str]]) -> str | None:
    """The warning for a demo served beyond this machine without a login, else ``None``.

    Args:
        host: the address the server listens on.
        share: whether a public Gradio share link is opened too.
        logins: the logins the page asks for.

    Returns:
        One line for the operator, or ``None`` when only this machine can reach the page or a login is asked.
    """
    if logins:
        return None
    where = []
    if share:
        where.append("anyone with the public --share link")
    if not _local_only(host):
        where.append("every machine that can reach " + ("any address of this one" if host in ("0.0.0.0", "::")
                                                         else host))
    if not where:
        return None
    return (f"the demo has no password and serves {' and '.join(where)}: they can run the model on this "
            "machine; add --auth-file PATH (USER:PASSWORD lines) or --auth USER:PASSWORD")


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
    logins = read_logins(args.auth, args.auth_file)
    if args.time_limit is not None and not (math.isfinite(args.time_limit) and args.time_limit > 0):
        raise CLIError(f"--time-limit must be a number of seconds > 0, got {args.time_limit}")
    if args.calibration is not None:
        check_calibration(args.calibration)
    elif args.reuse_calibration:
        raise CLIError("--reuse-calibration needs --calibration PATH")
    from fastdit.app.session import TIME_LIMIT_S, DemoSession
    from fastdit.app.ui import build_demo
    from fastdit.models.loading import ModelError

    with _sigterm_stops_server(), tempfile.TemporaryDirectory(prefix="fastdit-app-") as video_dir:
        try:
            session = DemoSession(args.model, device=resolve_device(args.device), calibration=args.calibration,
                                  reuse_calibration=args.reuse_calibration,
                                  time_limit_s=args.time_limit or TIME_LIMIT_S)
        except (ModelError, ValueError) as err:
            raise CLIError(str(err)) from None
        demo = build_demo(session, video_dir, delete_cache=CACHE_CLEANUP)
        print(f"fastdit app: serving {session.source.location} on http://{args.host}:{args.port}", flush=True)
        warning = exposure_warning(args.host, args.share, logins)
        if warning is not None:
            print(f"fastdit app: warning: {warning}", file=sys.stderr, flush=True)
        try:  # uploads are refused, except an image-to-video model's image
            demo.launch(server_name=args.host, server_port=args.port, share=args.share, show_error=True, quiet=True,
                        auth=logins or None, max_file_size=MAX_IMAGE_BYTES if session.image_input else 0)
        except OSError as err:  # the port was taken between the check and the launch
            raise CLIError(f"can't listen on {args.host}:{args.port} ({err})") from None
    return 0

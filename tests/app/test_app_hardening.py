"""The web demo under hostile use: start-up errors are one line before the model loads, disk use is bounded
(one temporary folder per process, removed at exit; Gradio's copies cleaned; uploads refused), a seed out of
range is a readable message, and the page names the model without a path of the machine it runs on."""

from __future__ import annotations

import dataclasses
import os
import signal
import socket
import tempfile
import types
from pathlib import Path

import pytest

gradio_client = pytest.importorskip("gradio_client", reason="the app extra (gradio) is not installed")
httpx = pytest.importorskip("httpx")

from fastdit.app import command as app_cli  # noqa: E402
from fastdit.app.session import DemoRequest, DemoSession  # noqa: E402
from fastdit.cli import main  # noqa: E402
from fastdit.models.loading import sample_dir  # noqa: E402
from tests.app.server import demo_request, free_port, start_app  # noqa: E402

SMALL = {"method": "radial", "frames": 5, "size": 64, "steps": 1}  # the cheapest request the page accepts


@pytest.fixture
def no_model_load(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("the model was loaded before the start-up check")

    monkeypatch.setattr(DemoSession, "__init__", fail)


def test_a_busy_port_is_one_line_before_the_model_loads(capsys, no_model_load):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["app", "--port", str(port)]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"fastdit app: error: port {port} on 127.0.0.1 is in use (another app?); choose another with --port"]


@pytest.mark.parametrize("host,message", [
    ("no-such-host.invalid", "--host 'no-such-host.invalid' is not an address or a name this machine can resolve"),
    ("192.0.2.1", "--host '192.0.2.1' is not an address of this machine"),  # TEST-NET-1: never local
])
def test_a_bad_host_is_one_line_and_not_called_a_port_problem(capsys, no_model_load, host, message):
    assert main(["app", "--host", host, "--port", str(free_port())]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and "port" not in lines[0].split(": error: ")[1], lines


def test_a_failed_launch_leaves_no_temporary_folder(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr(app_cli, "check_address", lambda host, port: None)  # lose the race to another server
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        assert main(["app", "--port", str(busy.getsockname()[1])]) == 2
    assert "can't listen on 127.0.0.1" in capsys.readouterr().err
    assert list(tmp_path.glob("fastdit-app-*")) == []


def test_the_page_keeps_only_the_newest_videos(tmp_path):
    session = DemoSession("sample")
    result = session.generate(DemoRequest(prompt="a red ball", method="radial", frames=5, height=64, width=64,
                                          steps=1))
    requests = [dataclasses.replace(result) for _ in range(10)]  # ten results, each written under its own name
    for request in requests:
        session.write_videos(request, tmp_path)
    assert len(list(tmp_path.glob("*.mp4"))) == 8
    with pytest.raises(ValueError, match=r"seed must be a whole number from 0 to 2\*\*64 - 1, got 118059"):
        session.check(DemoRequest(prompt="a red ball", method="radial", seed=2**70))


def test_a_running_app_bounds_its_disk_use_and_cleans_up_on_sigterm(tmp_path):
    temp, cache = tmp_path / "tmp", tmp_path / "gradio"
    temp.mkdir()
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False", "TMPDIR": str(temp),
           "GRADIO_TEMP_DIR": str(cache), "OMP_NUM_THREADS": "1"}
    proc = start_app(port, env)
    try:
        assert len(list(temp.glob("fastdit-app-*"))) == 1  # one folder for this process's videos
        url = f"http://127.0.0.1:{port}"
        upload = httpx.post(f"{url}/gradio_api/upload", files={"files": ("big.bin", b"x" * 10_000)})
        assert upload.status_code == 413  # the demo takes no files
        page = httpx.get(f"{url}/config").text
        assert "`sample`" in page and str(sample_dir()) not in page  # no path of this machine on the page

        client = gradio_client.Client(url + "/", verbose=False)
        _, dense, sparse, *_ = client.predict(*demo_request(3, **SMALL), api_name="/generate")
        assert Path(dense["video"] if isinstance(dense, dict) else dense).is_file()
        with pytest.raises(Exception, match=r"seed must be a whole number from 0 to 2\*\*64 - 1"):
            client.predict(*demo_request(2**70, **SMALL), api_name="/generate")
        assert list(cache.rglob("*.mp4"))  # Gradio's copies of the page's videos
    finally:
        proc.send_signal(signal.SIGTERM)
        output = proc.communicate(timeout=60)[0]
    assert proc.returncode == 0, output
    assert list(temp.glob("fastdit-app-*")) == []
    assert list(cache.rglob("*.mp4")) == []  # delete_cache: Gradio removes its copies at shutdown


@pytest.mark.parametrize("argv,message", [
    (["--auth", "alice"], "--auth must be USER:PASSWORD with neither empty"),
    (["--auth", ":secret"], "--auth must be USER:PASSWORD with neither empty"),
    (["--auth-file", "{missing}"], "--auth-file: can't read {missing} (No such file or directory)"),
    (["--auth-file", "{logins}"], "--auth-file {logins} line 3 must be USER:PASSWORD with neither empty"),
    (["--time-limit", "nan"], "--time-limit must be a number of seconds > 0, got nan"),
    (["--time-limit", "0"], "--time-limit must be a number of seconds > 0, got 0.0"),
])
def test_a_bad_login_or_time_limit_is_one_line_before_the_model_loads(tmp_path, capsys, no_model_load, argv,
                                                                       message):
    logins = tmp_path / "logins"
    logins.write_text("# the demo's users\nalice:s3cret\nbob-without-password\n")
    names = {"missing": str(tmp_path / "nope"), "logins": str(logins)}
    assert main(["app", "--port", str(free_port()), *(a.format(**names) for a in argv)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == [f"fastdit app: error: {message.format(**names)}"]


@pytest.fixture
def fake_launch(monkeypatch):
    """The app's start-up up to ``launch``, with the model and the page replaced: what launch was given."""
    launched = {}

    class Page:
        def launch(self, **kwargs):
            launched.update(kwargs)

    class Session:
        def __init__(self, *args, **kwargs):
            self.source = types.SimpleNamespace(location="sample")
            self.image_input = None
            launched["time_limit_s"] = kwargs["time_limit_s"]

    monkeypatch.setattr("fastdit.app.session.DemoSession", Session)
    monkeypatch.setattr("fastdit.app.ui.build_demo", lambda *args, **kwargs: Page())
    return launched


def test_serving_every_interface_without_a_login_warns_and_a_login_is_asked_for(tmp_path, capsys, fake_launch):
    assert main(["app", "--host", "0.0.0.0", "--port", str(free_port())]) == 0
    err = capsys.readouterr().err
    assert "fastdit app: warning: the demo has no password and serves every machine that can reach any address " \
           "of this one" in err and "--auth-file PATH" in err
    assert fake_launch["auth"] is None and fake_launch["time_limit_s"] == 600
    assert fake_launch["max_file_size"] == 0  # a text-to-video page takes no uploads

    logins = tmp_path / "logins"
    logins.write_text("alice:s3cret:with:colons\n\n")
    assert main(["app", "--host", "0.0.0.0", "--port", str(free_port()), "--auth-file", str(logins), "--auth",
                 "bob:pw", "--time-limit", "30"]) == 0
    assert "warning" not in capsys.readouterr().err
    assert fake_launch["auth"] == [("bob", "pw"), ("alice", "s3cret:with:colons")]
    assert fake_launch["time_limit_s"] == 30


@pytest.mark.parametrize("host,share,warned", [("127.0.0.1", False, False), ("localhost", False, False),
                                              ("127.0.0.1", True, True), ("0.0.0.0", False, True)])
def test_only_a_page_beyond_this_machine_is_warned_about(host, share, warned):
    assert (app_cli.exposure_warning(host, share, []) is not None) == warned
    assert app_cli.exposure_warning(host, share, [("alice", "pw")]) is None

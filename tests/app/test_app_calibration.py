"""The demo offers a calibration (``fastdit app --calibration``) as the method ``calibrated``."""

from __future__ import annotations

import pytest

from fastdit.app.session import CALIBRATED, DemoRequest, DemoSession
from fastdit.calibration import calibrate

pytestmark = pytest.mark.usefixtures("one_thread")
SIZE = {"frames": 5, "height": 64, "width": 64, "steps": 2}


def test_calibrated_runs_the_calibration_and_is_refused_without_one(tmp_path):
    plain = DemoSession("sample")
    call = {"num_frames": 5, "height": 64, "width": 64, "num_inference_steps": 2}
    path = calibrate(plain.pipe, "a red ball", target=0.5, methods=("radial", "grat"), call=call,
                     block_size=16).save(tmp_path / "cal.json")
    with pytest.raises(ValueError, match="without a calibration"):
        plain.check(DemoRequest("a red ball", CALIBRATED, **SIZE))

    session = DemoSession("sample", calibration=path)
    result = session.generate(DemoRequest("a red ball", CALIBRATED, **SIZE))
    assert result.metrics["method"] == "calibrated (rel_l2 <= 0.5)"
    assert result.metrics["density"] < 1
    with pytest.raises(ValueError, match="calibrated on a 2x8x8 latent grid"):
        session.generate(DemoRequest("a red ball", CALIBRATED, **{**SIZE, "width": 96}))

"""One patched model, two threads (issue 39, 12c): the per-call grid and step are the model's, so a call that
starts while another thread's runs is refused with a clear error, never mixed into it; one thread after another
is fine. A deep copy of a patched model is refused: its ``remove()`` could not restore it."""

from __future__ import annotations

import copy
import threading

import pytest
import torch

import fastdit
from fastdit.dummy.wan import dummy_wan_transformer


def _inputs(frames: int, size: int):
    g = torch.Generator().manual_seed(0)
    return (torch.randn(1, 16, frames, size, size, generator=g), torch.tensor([500]),
            torch.randn(1, 7, 32, generator=g))


def _run(model, inputs) -> torch.Tensor:
    with torch.no_grad():
        return model(*inputs, return_dict=False)[0]


@pytest.fixture
def model():
    model = dummy_wan_transformer(num_layers=2, patch_size=(1, 1, 1))
    fastdit.apply(model, "radial", preset=None, block_size=16, dense_steps=0)
    yield model
    fastdit.remove(model)


def test_a_call_from_another_thread_while_one_runs_is_refused(model):
    big, small = _inputs(4, 8), _inputs(2, 8)
    alone = _run(model, big)
    errors: list[BaseException] = []

    def other_thread():
        try:
            _run(model, small)
        except BaseException as err:  # noqa: BLE001 - the test looks at it
            errors.append(err)

    def meanwhile(module, args):  # inside the first thread's forward, the second thread calls the same model
        thread = threading.Thread(target=other_thread)
        thread.start()
        thread.join()

    hook = model.blocks[0].register_forward_pre_hook(meanwhile)
    try:
        during = _run(model, big)
    finally:
        hook.remove()
    assert len(errors) == 1 and isinstance(errors[0], RuntimeError)
    assert "running in another thread" in str(errors[0])
    assert torch.equal(during, alone)  # the first call was not disturbed
    assert fastdit.stats(model).sparse_fraction() > 0

    thread = threading.Thread(target=other_thread)  # one after another: fine
    thread.start()
    thread.join()
    assert len(errors) == 1


def test_a_deep_copy_of_a_patched_model_is_refused(model):
    with pytest.raises(TypeError, match="can't be deep-copied: fastdit.remove it"):
        copy.deepcopy(model)
    fastdit.remove(model)
    twin = copy.deepcopy(model)
    assert torch.equal(_run(twin, _inputs(2, 8)), _run(model, _inputs(2, 8)))

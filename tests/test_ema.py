"""training.ema.WeightEMA: timm's warm-up EMA, the same numbers and state layout as the AveragedModel it replaced."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel

import mobilenets
from mobilenets.training.ema import WeightEMA

DECAY = 0.9


def _averaged_model(model: nn.Module) -> AveragedModel:
    """The loop's EMA before WeightEMA (AveragedModel, use_buffers, the same warm-up)."""

    def update(ema_params, params, num_averaged):
        if not ema_params[0].is_floating_point():
            torch._foreach_copy_(ema_params, params)
            return
        t = float(num_averaged)
        torch._foreach_lerp_(ema_params, params, 1.0 - min(DECAY, (1.0 + t) / (10.0 + t)))

    return AveragedModel(model, multi_avg_fn=update, use_buffers=True)


def _train_steps(model: nn.Module, emas, steps: int, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(steps):
        model.train()
        loss = model(torch.randn(4, 3, 32, 32, generator=g)).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        for ema in emas:
            ema.update_parameters(model)


def test_same_average_and_state_as_averaged_model():
    torch.manual_seed(0)
    model = mobilenets.create_model("mobilenet_v3_small", width=0.35, num_classes=5)
    ours, theirs = WeightEMA(model, DECAY), _averaged_model(model)
    _train_steps(model, (ours, theirs), 6, seed=1)
    assert ours.state_dict().keys() == theirs.state_dict().keys()  # module.* and n_averaged
    for key, value in theirs.state_dict().items():
        assert torch.equal(ours.state_dict()[key], value), key
    assert int(ours.n_averaged) == 6 and ours.n_averaged.device.type == "cpu"


def test_resumes_from_an_averaged_model_state():
    """A run saved with AveragedModel's EMA state resumes with WeightEMA and goes on as it would have."""
    torch.manual_seed(0)
    model = mobilenets.create_model("mobilenet_v3_small", width=0.35, num_classes=5)
    theirs = _averaged_model(model)
    _train_steps(model, (theirs,), 3, seed=1)
    ours = WeightEMA(model, DECAY)
    ours.load_state_dict(theirs.state_dict())
    _train_steps(model, (ours, theirs), 3, seed=2)
    for key, value in theirs.state_dict().items():
        assert torch.equal(ours.state_dict()[key], value), key


def test_first_update_copies_then_warms_up():
    model = nn.Linear(2, 1, bias=False)
    ema = WeightEMA(model, DECAY)
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema.update_parameters(model)
    assert torch.equal(ema.module.weight, model.weight)  # t = 0: a copy
    with torch.no_grad():
        model.weight.fill_(3.0)
    ema.update_parameters(model)  # t = 1: decay min(0.9, 2 / 11)
    assert ema.module.weight[0, 0].item() == pytest.approx(1.0 + (1 - 2 / 11) * 2.0)
    assert not any(p.requires_grad for p in ema.module.parameters())


@pytest.mark.parametrize("decay", [-0.1, 1.0, float("nan")])
def test_decay_out_of_range(decay):
    with pytest.raises(ValueError, match="decay"):
        WeightEMA(nn.Linear(2, 1), decay)

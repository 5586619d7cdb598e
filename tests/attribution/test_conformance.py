"""Properties every registered attribution method must have (run over the registry)."""

from __future__ import annotations

import pytest
import torch

from brainmaps.attribution import create_method, get_method, list_methods
from brainmaps.exceptions import ConfigError, ShapeError
from brainmaps.models import create_model

GRID = (22, 22, 22)
#: Options that keep the slow methods to a second or so on these tiny inputs.
FAST = {
    "meaningful_perturbation": {"max_iter": 5},
    "occlusion": {"window_mm": 40.0, "stride_mm": 40.0},
    "smoothgrad": {"n_samples": 4},
    "integrated_gradients": {"n_steps": 4},
}
EXPECTED = {
    "cam",
    "grad_cam",
    "gradient",
    "guided_backprop",
    "hires_cam",
    "integrated_gradients",
    "layer_cam",
    "lrp",
    "meaningful_perturbation",
    "occlusion",
    "smoothgrad",
}


def _model(method: str) -> torch.nn.Module:
    torch.manual_seed(0)
    name = "gap_cnn" if method == "cam" else "xin2019"
    model = create_model(name, input_shape=GRID, channels=[2, 4, 4])
    with torch.no_grad():  # non-trivial BatchNorm statistics
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm3d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return model


def _inputs(n: int = 2) -> torch.Tensor:
    gen = torch.Generator().manual_seed(1)
    return torch.randn((n, 1, *GRID), generator=gen)


def _make(method: str, model):
    return create_method(method, model, **FAST.get(method, {}))


def _hook_count(model) -> int:
    return sum(
        len(m._forward_hooks)
        + len(m._forward_pre_hooks)
        + len(m._backward_hooks)
        + len(getattr(m, "_backward_pre_hooks", {}))
        for m in model.modules()
    )


def test_registry_has_every_method():
    assert EXPECTED <= set(list_methods())


def test_unknown_method_names_the_choices():
    with pytest.raises(ConfigError, match="grad_cam"):
        get_method("gradcam++")


#: Every registered method is checked, plus the expected ones (a missing one fails).
@pytest.fixture(params=sorted(EXPECTED | set(list_methods())))
def method(request):
    if request.param not in list_methods():
        pytest.fail(f"{request.param} is not registered")
    return request.param


def test_shape_finite_and_deterministic(method):
    model, x = _model(method), _inputs()
    first = _make(method, model).attribute(x, target=1)
    again = _make(method, model).attribute(x, target=1)
    assert first.shape == (2, *GRID)
    assert torch.isfinite(first).all()
    assert first.abs().sum() > 0, "an all-zero map explains nothing"
    torch.testing.assert_close(first, again)


def test_batch_of_one_equals_batch_of_two(method):
    model, x = _model(method), _inputs()
    both = _make(method, model).attribute(x, target=1)
    single = _make(method, model).attribute(x[1:], target=1)
    torch.testing.assert_close(both[1:], single, rtol=1e-4, atol=1e-6)


def test_model_left_unchanged(method):
    model, x = _model(method), _inputs(1)
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    grads = [p.requires_grad for p in model.parameters()]
    hooks = _hook_count(model)
    _make(method, model).attribute(x, target=0)
    assert all(m.training for m in model.modules())
    assert [p.requires_grad for p in model.parameters()] == grads
    assert _hook_count(model) == hooks
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, before[k], rtol=0, atol=0)
    assert all(p.grad is None for p in model.parameters())


def test_hooks_removed_after_an_exception(method):
    model, x = _model(method), _inputs(1)
    explainer = _make(method, model)
    hooks = _hook_count(model)

    def explode(*_args):
        raise RuntimeError("boom")

    fc = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
    handle = fc.register_forward_hook(explode)
    try:
        with pytest.raises(RuntimeError, match="boom"):
            explainer.attribute(x, target=0)
    finally:
        handle.remove()
    assert _hook_count(model) == hooks
    assert not model.training or all(m.training for m in model.modules())
    assert all(p.requires_grad for p in model.parameters())


def test_targets_predicted_true_and_index_agree(method):
    model, x = _model(method), _inputs()
    with torch.no_grad():
        model.eval()
        predicted = model(x).argmax(dim=1)
    by_name = _make(method, model).attribute(x, target="predicted")
    by_index = _make(method, model).attribute(x, target=predicted)
    by_label = _make(method, model).attribute(x, target="true", labels=predicted.tolist())
    torch.testing.assert_close(by_name, by_index)
    torch.testing.assert_close(by_name, by_label)


def test_bad_inputs_and_targets_are_clear():
    model = _model("gradient")
    explainer = get_method("gradient")(model)
    with pytest.raises(ShapeError, match=r"\(N, C, X, Y, Z\)"):
        explainer.attribute(torch.zeros(22, 22, 22))
    with pytest.raises(ConfigError, match="out of range"):
        explainer.attribute(_inputs(1), target=5)
    with pytest.raises(ConfigError, match="labels="):
        explainer.attribute(_inputs(1), target="true")
    with pytest.raises(ConfigError, match="unknown option"):
        create_method("gradient", model, colour="red")

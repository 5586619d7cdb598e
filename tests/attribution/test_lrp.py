"""LRP: conservation, a literal per-layer oracle, BatchNorm folding, pooling rules."""

from __future__ import annotations

import copy
import itertools

import numpy as np
import pytest
import torch
from torch import nn

from brainmaps.attribution._lrp_graph import Layer, fold_batchnorm
from brainmaps.attribution.base import create_method, get_method
from brainmaps.attribution.lrp import LRP
from brainmaps.exceptions import ConfigError
from brainmaps.models import create_model

GRID = (22, 26, 22)
RULES = ["epsilon", "alpha1beta0", "alpha2beta1"]
FIRST = [None, "zb", "flat", "wsquare"]


def _x(n=2, shape=GRID, channels=1, seed=1):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn((n, channels, *shape), generator=gen)


def _randomize_bn(model, shift=True):
    """Non-trivial BatchNorm statistics (zero shift if ``shift`` is False)."""
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm3d | nn.BatchNorm1d):
                n = m.num_features
                m.running_var.copy_(torch.rand(n, generator=gen) * 1.5 + 0.5)
                m.weight.copy_(torch.rand(n, generator=gen) + 0.5)
                m.running_mean.copy_((torch.rand(n, generator=gen) - 0.5) * 0.4 * shift)
                m.bias.copy_((torch.rand(n, generator=gen) - 0.5) * 0.2 * shift)
    return model


def _bias_free(model):
    """Zero every bias and BatchNorm shift so that conservation must hold exactly."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv3d | nn.Linear) and m.bias is not None:
                m.bias.zero_()
    return _randomize_bn(model, shift=False)


def _xin(bias_free=False):
    torch.manual_seed(0)
    model = create_model("xin2019", input_shape=GRID, channels=[4, 8, 8])
    return _bias_free(model) if bias_free else _randomize_bn(model)


class TinyGap(nn.Module):
    """conv-BN-ReLU-maxpool, conv-BN-ReLU, GAP, flatten, linear (bias-free)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.features = nn.Sequential(
            nn.Conv3d(1, 4, 3, bias=False),
            nn.BatchNorm3d(4),
            nn.ReLU(),
            nn.MaxPool3d(2),
            nn.Conv3d(4, 6, 3, padding=1, bias=False),
            nn.BatchNorm3d(6),
            nn.ReLU(),
            nn.AdaptiveAvgPool3d(1),
            nn.Flatten(),
            nn.Linear(6, 2, bias=False),
        )
        _randomize_bn(self, shift=False)

    def forward(self, x):
        return self.features(x)


def _logits(model, x):
    with torch.no_grad():
        return copy.deepcopy(model).eval().double()(x.double())


# -- conservation ----------------------------------------------------------------------


@pytest.mark.parametrize(("rule", "first"), list(itertools.product(RULES, FIRST)))
def test_relevance_sums_to_the_logit_on_a_bias_free_xin2019(rule, first):
    model, x = _xin(bias_free=True), _x()
    maps = LRP(model, rule=rule, first_layer_rule=first, epsilon=1e-12, dtype="float64")
    relevance = maps.attribute(x, target=[1, 0])
    logits = _logits(model, x)
    expected = torch.stack([logits[0, 1], logits[1, 0]])
    assert maps.attribute(x[:1], target=1).dtype == torch.float64
    torch.testing.assert_close(relevance.sum(dim=(1, 2, 3)), expected, rtol=1e-4, atol=1e-9)


@pytest.mark.parametrize("rule", RULES)
def test_relevance_sums_to_the_logit_on_a_gap_network(rule):
    model, x = TinyGap(), _x(shape=(12, 10, 11))
    relevance = LRP(model, rule=rule, epsilon=1e-12, dtype=torch.float64).attribute(x, target=1)
    torch.testing.assert_close(
        relevance.sum(dim=(1, 2, 3)), _logits(model, x)[:, 1], rtol=1e-4, atol=1e-9
    )


def test_registered_gap_cnn_conserves_relevance():
    model = _bias_free(create_model("gap_cnn", input_shape=(12, 12, 12), channels=[3, 4]))
    x = _x(shape=(12, 12, 12))
    relevance = create_method("lrp", model, epsilon=1e-12, dtype="float64").attribute(x, target=0)
    torch.testing.assert_close(
        relevance.sum(dim=(1, 2, 3)), _logits(model, x)[:, 0], rtol=1e-4, atol=1e-9
    )
    assert get_method("lrp") is LRP


def test_biases_absorb_relevance_but_float32_matches_float64():
    model, x = _xin(), _x()
    exact = LRP(model, dtype="float64").attribute(x, target=1)
    single = LRP(model).attribute(x, target=1)
    assert single.dtype == torch.float32
    torch.testing.assert_close(single.double(), exact, rtol=1e-3, atol=1e-3 * exact.abs().max())


# -- a literal oracle: explicit matrices and loops -------------------------------------


class ConvPoolLinear(nn.Module):
    """conv(2->2, 2x2x2, bias) -> ReLU -> overlapping maxpool(2, stride 1) -> linear(3)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(3)
        self.conv = nn.Conv3d(2, 2, 2)
        self.relu = nn.ReLU()
        self.pool = nn.MaxPool3d(2, stride=1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(16, 3)
        with torch.no_grad():
            self.conv.bias.copy_(torch.tensor([0.3, -0.2]))
            self.fc.bias.copy_(torch.tensor([0.1, -0.3, 0.2]))

    def forward(self, x):
        return self.fc(self.flatten(self.pool(self.relu(self.conv(x)))))


def _conv_matrix(w, in_shape):
    """Dense matrix ``M[j, i]`` and connectivity ``C[j, i]`` of a valid 3D convolution."""
    c_out, c_in, k = w.shape[0], w.shape[1], w.shape[2]
    out_shape = (c_out, *(s - k + 1 for s in in_shape[1:]))
    m = np.zeros((int(np.prod(out_shape)), int(np.prod(in_shape))))
    c = np.zeros_like(m)
    for o, x, y, z in itertools.product(*map(range, out_shape)):
        j = np.ravel_multi_index((o, x, y, z), out_shape)
        for ci, dx, dy, dz in itertools.product(range(c_in), range(k), range(k), range(k)):
            i = np.ravel_multi_index((ci, x + dx, y + dy, z + dz), in_shape)
            m[j, i] += w[o, ci, dx, dy, dz]
            c[j, i] = 1.0
    return m, c, out_shape


def _stab(z, eps):
    return z + eps if z >= 0 else z - eps


def _dense_rule(rule, a, m, c, b, relevance, eps):
    """One layer's rule, written out per output neuron ``j``."""
    out = np.zeros_like(a)
    for j in range(m.shape[0]):
        z = a * m[j]
        if rule == "epsilon":
            out += z / _stab(z.sum() + b[j], eps) * relevance[j]
        elif rule.startswith("alpha"):
            alpha, beta = {"alpha1beta0": (1, 0), "alpha2beta1": (2, 1)}[rule]
            pos, neg = np.maximum(z, 0), np.minimum(z, 0)
            zp, zn = pos.sum() + max(b[j], 0), neg.sum() + min(b[j], 0)
            out += (alpha * pos / _stab(zp, eps) - beta * neg / _stab(zn, eps)) * relevance[j]
        else:
            share = {
                "zb": z - a.min() * np.maximum(m[j], 0) - a.max() * np.minimum(m[j], 0),
                "flat": c[j],
                "wsquare": m[j] ** 2,
            }[rule]
            out += share / _stab(share.sum(), eps) * relevance[j]
    return out


def _maxpool_oracle(a, relevance_out, k=2):
    """Winner takes all over every (overlapping, stride-1) window, by explicit loops."""
    relevance = np.zeros_like(a)
    for ch, x, y, z in itertools.product(*map(range, relevance_out.shape)):
        window = a[ch, x : x + k, y : y + k, z : z + k]
        dx, dy, dz = np.unravel_index(np.argmax(window), window.shape)
        relevance[ch, x + dx, y + dy, z + dz] += relevance_out[ch, x, y, z]
    return relevance


def _oracle(model, x, target, rule, first, eps):
    w, b = (p.detach().double().numpy() for p in (model.conv.weight, model.conv.bias))
    fw, fb = (p.detach().double().numpy() for p in (model.fc.weight, model.fc.bias))
    m, c, conv_shape = _conv_matrix(w, x.shape)
    a0 = x.reshape(-1)
    a1 = np.maximum(m @ a0 + b.repeat(int(np.prod(conv_shape[1:]))), 0).reshape(conv_shape)
    pooled = np.zeros((2, *(s - 1 for s in conv_shape[1:])))
    for ch, i, j, k in itertools.product(*map(range, pooled.shape)):
        pooled[ch, i, j, k] = a1[ch, i : i + 2, j : j + 2, k : k + 2].max()
    logits = fw @ pooled.reshape(-1) + fb
    top = np.zeros(3)
    top[target] = logits[target]
    r_pool = _dense_rule(rule, pooled.reshape(-1), fw, np.ones_like(fw), fb, top, eps)
    r_act = _maxpool_oracle(a1, r_pool.reshape(pooled.shape))
    conv_bias = b.repeat(int(np.prod(conv_shape[1:])))
    r_in = _dense_rule(first or rule, a0, m, c, conv_bias, r_act.reshape(-1), eps)
    return r_in.reshape(x.shape).sum(axis=0)


@pytest.mark.parametrize(
    ("rule", "first"),
    [(r, None) for r in RULES] + [("epsilon", f) for f in FIRST[1:]] + [("alpha2beta1", "zb")],
)
def test_matches_a_literal_per_layer_oracle(rule, first):
    model, x = ConvPoolLinear().eval(), _x(shape=(4, 4, 4), channels=2, seed=4)
    eps = 0.01  # large enough that the stabiliser's handling is checked too
    maps = LRP(model, rule=rule, first_layer_rule=first, epsilon=eps, dtype="float64")
    result = maps.attribute(x, target=[2, 0])
    for n, target in enumerate([2, 0]):
        expected = _oracle(model, x[n].double().numpy(), target, rule, first, eps)
        np.testing.assert_allclose(result[n].numpy(), expected, rtol=1e-9, atol=1e-12)


def test_epsilon_rule_matches_captum_on_xin2019_with_batchnorm():
    """Captum's LRP (rules attached by hand to its Conv3d/BN layers) agrees with ours."""
    from captum.attr import LRP as CaptumLRP
    from captum.attr._utils.lrp_rules import EpsilonRule

    model, x = _xin().double().eval(), _x().double()
    ours = LRP(model, epsilon=1e-9).attribute(x, target=1)

    class Flatten(nn.Module):  # captum cannot hook a shape-changing leaf module
        def __init__(self):
            super().__init__()
            self.unused = nn.Identity()
            self.unused.rule = EpsilonRule()

        def forward(self, t):
            return t.flatten(1)

    reference = copy.deepcopy(model)
    for m in reference.modules():
        if isinstance(m, nn.Conv3d | nn.BatchNorm3d):
            m.rule = EpsilonRule()  # BN as its own layer equals BN folded into the conv
    reference.classifier.flatten = Flatten()
    theirs = CaptumLRP(reference).attribute(x.clone().requires_grad_(), target=1).sum(dim=1)
    torch.testing.assert_close(ours, theirs.detach(), rtol=0, atol=1e-6 * ours.abs().max())


# -- BatchNorm folding -----------------------------------------------------------------


def test_folded_batchnorm_equals_the_unfolded_forward_and_leaves_the_model_alone():
    torch.manual_seed(2)
    conv, bn = nn.Conv3d(2, 3, 3), _randomize_bn(nn.BatchNorm3d(3)).eval()
    before = [t.clone() for t in (conv.weight, conv.bias, bn.weight, bn.bias, bn.running_mean)]
    weight, bias = fold_batchnorm(conv.weight, conv.bias, bn)
    x = _x(shape=(6, 5, 7), channels=2).double()
    with torch.no_grad():
        expected = copy.deepcopy(nn.Sequential(conv, bn)).double()(x)
    torch.testing.assert_close(nn.functional.conv3d(x, weight, bias), expected)
    after = (conv.weight, conv.bias, bn.weight, bn.bias, bn.running_mean)
    assert all(torch.equal(a, b) for a, b in zip(before, after, strict=True))

    linear, bn1 = nn.Linear(5, 4, bias=False), _randomize_bn(nn.BatchNorm1d(4)).eval()
    weight, bias = fold_batchnorm(linear.weight, None, bn1)
    v = torch.randn(3, 5, dtype=torch.float64)
    with torch.no_grad():
        expected = copy.deepcopy(nn.Sequential(linear, bn1)).double()(v)
    torch.testing.assert_close(v @ weight.T + bias, expected)


def test_batchnorm_must_follow_a_convolution():
    model = nn.Sequential(
        nn.Conv3d(1, 2, 3), nn.ReLU(), nn.BatchNorm3d(2), nn.Flatten(), nn.Linear(2 * 27, 2)
    )
    with pytest.raises(ConfigError, match=r"BatchNorm3d '2' follows '1'"):
        LRP(model).attribute(_x(shape=(5, 5, 5)), target=0)
    model = nn.Sequential(
        nn.Conv3d(1, 2, 3),
        nn.BatchNorm3d(2, track_running_stats=False),
        nn.Flatten(),
        nn.Linear(2 * 27, 2),
    )
    with pytest.raises(ConfigError, match="track_running_stats"):
        LRP(model).attribute(_x(shape=(5, 5, 5)), target=0)


# -- pooling, localisation, signs -------------------------------------------------------


def test_max_pooling_sends_all_relevance_to_the_winner_of_each_window():
    # overlapping 2x2x2 windows at stride 1; a sum readout gives each window relevance =
    # its max, so voxel i receives a_i times the number of windows it wins
    model = nn.Sequential(nn.MaxPool3d(2, stride=1), nn.Flatten(), nn.Linear(64, 1, bias=False))
    nn.init.ones_(model[2].weight)
    x = torch.rand(1, 1, 5, 5, 5, generator=torch.Generator().manual_seed(0))
    x[0, 0, 2, 2, 2] = 5.0  # wins all 8 windows that contain it
    relevance = LRP(model, epsilon=1e-12, dtype="float64").attribute(x, target=0)[0]
    wins = np.zeros((5, 5, 5))
    for i, j, k in itertools.product(range(4), repeat=3):
        window = x[0, 0, i : i + 2, j : j + 2, k : k + 2].numpy()
        dx, dy, dz = np.unravel_index(np.argmax(window), window.shape)
        wins[i + dx, j + dy, k + dz] += 1
    np.testing.assert_allclose(relevance.numpy(), x[0, 0].double().numpy() * wins, rtol=1e-10)
    assert relevance[2, 2, 2] == pytest.approx(40.0)
    assert (relevance[torch.from_numpy(wins) == 0] == 0).all()


@pytest.mark.parametrize("rule", RULES)
def test_a_model_reading_one_cube_puts_its_relevance_in_that_cube(rule):
    torch.manual_seed(0)
    shape, cube = (12, 12, 12), (slice(3, 9),) * 3
    model = nn.Sequential(
        nn.Conv3d(1, 3, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 12**3, 2)
    )
    with torch.no_grad():
        readout = torch.zeros(3, *shape)
        readout[(slice(None), *cube)] = torch.rand(3, 6, 6, 6) + 0.5
        model[3].weight[1] = readout.reshape(-1)
    x = _x(n=1, shape=shape)
    relevance = LRP(model, rule=rule, epsilon=1e-12, dtype="float64").attribute(x, target=1)[0]
    grown = torch.zeros(shape, dtype=torch.bool)
    grown[2:10, 2:10, 2:10] = True  # the cube plus the 3x3x3 kernel's reach
    inner = torch.zeros(shape, dtype=torch.bool)
    inner[cube] = True
    assert relevance[~grown].abs().max() == 0
    assert relevance[inner].abs().sum() > 0.5 * relevance.abs().sum()


def test_alpha1beta0_relevance_has_the_sign_of_the_logit():
    model, x = _xin(), _x()
    with torch.no_grad():
        model.classifier.fc.bias += torch.tensor([-2.0, 2.0])  # logit 0 < 0 < logit 1
    logits = _logits(model, x)
    assert (logits[:, 0] < 0).all() and (logits[:, 1] > 0).all()
    alpha1beta0 = LRP(model, rule="alpha1beta0", dtype="float64")
    positive = alpha1beta0.attribute(x, target=1)
    assert positive.min() >= 0 and positive.max() > 0
    negative = alpha1beta0.attribute(x, target=0)
    assert negative.max() <= 0 and negative.min() < 0
    epsilon = LRP(model, dtype="float64").attribute(x, target=1)
    assert epsilon.min() < 0 < epsilon.max()  # the epsilon rule shows evidence against too


def test_regression_output_and_reshape_in_forward():
    class Reshaping(nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(1)
            self.conv, self.relu, self.fc = nn.Conv3d(1, 2, 3), nn.ReLU(), nn.Linear(54, 1)

        def forward(self, x):
            return self.fc(self.relu(self.conv(x)).view(x.shape[0], -1)).squeeze(1)

    model = _bias_free(Reshaping()).double()
    flat = nn.Sequential(model.conv, model.relu, nn.Flatten(), model.fc)
    x = _x(shape=(5, 5, 5)).double()
    ours = LRP(model, epsilon=1e-12).attribute(x)
    torch.testing.assert_close(ours, LRP(flat, epsilon=1e-12).attribute(x))
    with torch.no_grad():
        expected = model.eval()(x)
    torch.testing.assert_close(ours.sum(dim=(1, 2, 3)), expected, rtol=1e-6, atol=1e-12)
    assert ours.abs().sum() > 0


# -- cost: the model runs once per call ---------------------------------------------------


def _count_calls(model, method, x, target):
    """``method.attribute(x, target)``, returning the batch size of every call of the
    whole model and how often each of its leaf modules was called."""
    whole, leaves = [], {}

    def on_model(_module, args, _output):
        whole.append(args[0].shape[0])

    def on_leaf(module, _args, _output):
        leaves[module] = leaves.get(module, 0) + 1

    handles = [model.register_forward_hook(on_model)]
    handles += [m.register_forward_hook(on_leaf) for m in model.modules() if m is not model]
    try:
        method.attribute(x, target=target)
    finally:
        for handle in handles:
            handle.remove()
    return whole, leaves


@pytest.mark.parametrize("target", ["predicted", 0])
@pytest.mark.parametrize(
    ("name", "options", "grid"),
    [
        ("mrinet", {"channels": [3, 4, 5], "hidden": 6, "n_classes": 1}, (9, 10, 8)),
        ("sfcn", {"channels": [3, 4, 5], "n_classes": 1}, (8, 10, 8)),
        ("xin2019", {"channels": [4, 8, 8]}, GRID),
    ],
)
def test_one_call_runs_the_model_once_on_one_sample(name, options, grid, target):
    """The model itself runs once per ``attribute`` call, on the first sample (the layer
    trace): ``target="predicted"`` takes the replay's outputs instead of a forward pass
    of its own, and the batch goes through the replay of the layer chain only."""
    torch.manual_seed(0)
    model = create_model(name, input_shape=grid, **options)
    method = LRP(model, rule="composite", epsilon=0.1)
    whole, leaves = _count_calls(model, method, _x(n=3, shape=grid), target)
    assert whole == [1]
    assert set(leaves.values()) == {1}
    assert _hooks(model) == 0


def test_a_batch_gives_each_sample_its_own_map_and_leaves_the_input_alone():
    """Per-sample maps equal the maps of the samples alone (nothing reused in place
    leaks between samples or calls), and neither the input nor the model is changed;
    the model starts with a ReLU and a max pooling, which must not overwrite it."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.ReLU(), nn.MaxPool3d(2), nn.Conv3d(1, 3, 3, padding=1), nn.ReLU(),
        nn.MaxPool3d(2, stride=1), nn.Conv3d(3, 2, 3), nn.ReLU(), nn.Flatten(),
        nn.Linear(2 * 2 * 3 * 2, 1),
    )  # fmt: skip
    x = _x(n=3, shape=(10, 12, 10))
    before, state = x.clone(), {k: v.clone() for k, v in model.state_dict().items()}
    for rule in ("composite", "epsilon", "alpha2beta1"):
        method = LRP(model, rule=rule, epsilon=0.1, dtype="float64")
        batch = method.attribute(x, keep_channels=True)
        alone = torch.cat([method.attribute(x[i : i + 1], keep_channels=True) for i in range(3)])
        torch.testing.assert_close(batch, alone, rtol=1e-10, atol=1e-12)
        assert torch.equal(x, before)
        assert batch.data_ptr() != x.data_ptr()
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


@pytest.mark.parametrize("rule", [*RULES, "composite"])
def test_grouped_convolutions_conserve_relevance(rule):
    """Grouped convolutions (whose weights cannot be stacked, so each part of a rule is a
    map of its own), in the input layer (signed inputs) and after a ReLU."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv3d(2, 4, 3, padding=1, groups=2, bias=False), nn.ReLU(),
        nn.Conv3d(4, 4, 3, groups=2, bias=False), nn.ReLU(), nn.Flatten(),
        nn.Linear(4 * 4**3, 1, bias=False),
    )  # fmt: skip
    x = _x(n=2, shape=(6, 6, 6), channels=2)
    relevance = LRP(model, rule=rule, epsilon=1e-12, dtype="float64").attribute(x)
    torch.testing.assert_close(
        relevance.sum(dim=(1, 2, 3)), _logits(model, x)[:, 0], rtol=1e-6, atol=1e-10
    )


@pytest.mark.parametrize(
    "geometry",
    [
        {"stride": 2},
        {"stride": (2, 1, 3), "padding": (0, 1, 2), "dilation": (1, 2, 1)},
        {"padding": 1, "groups": 2},
        {"padding": "same", "dilation": 2},
        {"padding": "valid", "stride": 2},
    ],
)
def test_layer_transpose_is_the_input_gradient_of_its_convolution(geometry):
    """The transposed map of the relevance pass equals autograd's input gradient (the
    usual LRP trick it replaces), with strides that leave inputs unread at the far end."""
    torch.manual_seed(0)
    conv = nn.Conv3d(4, 6, 3, **geometry).double()
    keys = ("stride", "padding", "dilation", "groups")
    layer = Layer(
        "conv", "conv", conv.weight.detach(), None, conv={k: getattr(conv, k) for k in keys}
    )
    a = torch.randn(2, 4, 10, 9, 11, dtype=torch.float64, requires_grad=True)
    z = layer.apply(a, conv.weight.detach())
    s = torch.randn_like(z)
    (expected,) = torch.autograd.grad(z, a, s)
    got = layer.transpose(s, a.detach(), conv.weight.detach())
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    linear = Layer("linear", "fc", torch.randn(3, 5, dtype=torch.float64))
    v = torch.randn(4, 5, dtype=torch.float64, requires_grad=True)
    t = torch.randn(4, 3, dtype=torch.float64)
    (expected,) = torch.autograd.grad(linear.apply(v, linear.weight), v, t)
    torch.testing.assert_close(linear.transpose(t, v.detach(), linear.weight), expected)


def test_predicted_target_is_the_argmax_of_the_logits():
    model, x = _xin(), _x(n=4)
    with torch.no_grad():
        margin = model.eval()(x).diff(dim=1)[:, 0].sort().values
        model.classifier.fc.bias[1] -= margin[1:3].mean()  # two samples of each class
        predicted = model(x).argmax(dim=1)
    assert sorted(predicted.tolist()) == [0, 0, 1, 1]
    maps = LRP(model, dtype="float64")
    torch.testing.assert_close(maps.attribute(x), maps.attribute(x, target=predicted))


# -- errors and model safety ------------------------------------------------------------


class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.fc = nn.Conv3d(1, 1, 3, padding=1), nn.Linear(125, 2)

    def forward(self, x):
        return self.fc((self.conv(x) + x).flatten(1))


def _hooks(model):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


@pytest.mark.parametrize(
    ("model", "message"),
    [
        (nn.Sequential(nn.Conv3d(1, 1, 3), nn.ELU(), nn.Flatten(), nn.Linear(27, 2)), "ELU"),
        (Residual(), "sequential.*'fc'"),
        (nn.Sequential(nn.Flatten(), nn.Linear(125, 2), nn.Softmax(dim=1)), "Softmax"),
        (
            nn.Sequential(
                nn.Conv3d(1, 1, 3, padding=1, padding_mode="reflect"),
                nn.Flatten(),
                nn.Linear(125, 2),
            ),
            "padding_mode",
        ),
    ],
)
def test_unsupported_networks_raise_a_clear_error_and_leave_no_hooks(model, message):
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ConfigError, match=message):
        LRP(model).attribute(_x(shape=(5, 5, 5)), target=0)
    assert _hooks(model) == 0
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_functional_softmax_on_the_output_is_rejected():
    class Probabilities(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(8, 2)

        def forward(self, x):
            return torch.softmax(self.fc(x.flatten(1)), dim=1)

    with pytest.raises(ConfigError, match="model's output is not the output of module 'fc'"):
        LRP(Probabilities()).attribute(_x(shape=(2, 2, 2)), target=0)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"rule": "gamma"}, "option rule"),
        ({"rule": "alpha2beta2"}, "a - b = 1"),
        ({"rule": "zb"}, "pass it as first_layer_rule"),
        ({"first_layer_rule": "w2"}, "first_layer_rule"),
        ({"epsilon": 0.0}, "epsilon"),
        ({"epsilon": True}, "epsilon"),
        ({"bounds": (0, 1)}, "only used by first_layer_rule='zb'"),
        ({"first_layer_rule": "zb", "bounds": (1, 0)}, "lowest < highest"),
        ({"dtype": "float16"}, "dtype"),
        ({"alpha": 2}, "unknown option"),
    ],
)
def test_invalid_options_name_the_option(options, message):
    with pytest.raises(ConfigError, match=message):
        create_method("lrp", _xin(), **options)


def test_zb_bounds_must_contain_the_inputs():
    model, x = _xin(bias_free=True), _x()
    with pytest.raises(ConfigError, match="bounds"):
        LRP(model, first_layer_rule="zb", bounds=(-1, 1)).attribute(x, target=0)
    relevance = LRP(
        model, first_layer_rule="zb", bounds=(-10, 10), dtype="float64", epsilon=1e-12
    ).attribute(x, target=0)
    torch.testing.assert_close(
        relevance.sum(dim=(1, 2, 3)), _logits(model, x)[:, 0], rtol=1e-4, atol=1e-9
    )

import pytest
import torch

from marr import QuantSpec, rtn_quantize
from marr.grid import find_params, group_index


def test_asymmetric_params_follow_reference_convention():
    w = torch.tensor([[-1.0, 0.5, 2.0], [0.2, 0.4, 0.6]])
    scale, zero = find_params(w, QuantSpec(3, fp16_scales=False))
    # row 0: range [-1, 2]; row 1: range widened to include 0 -> [0, 0.6]
    torch.testing.assert_close(scale, torch.tensor([3 / 7, 0.6 / 7]))
    torch.testing.assert_close(zero, torch.tensor([round(7 / 3), 0.0]))


def test_symmetric_zero_is_mid_range():
    w = torch.tensor([[-1.0, 0.5, 2.0]])
    scale, zero = find_params(w, QuantSpec(4, sym=True, fp16_scales=False))
    torch.testing.assert_close(scale, torch.tensor([4 / 15]))
    assert zero.item() == 8


def test_all_zero_row_gets_unit_range():
    scale, zero = find_params(torch.zeros(1, 4), QuantSpec(2, fp16_scales=False))
    assert scale.item() == pytest.approx(2 / 3) and zero.item() == 2


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("group_size", [None, 32, 48])
@pytest.mark.parametrize("sym", [False, True])
def test_rtn_codes_in_range_and_dequantize_exactly(bits, group_size, sym):
    W = torch.randn(16, 80, generator=torch.Generator().manual_seed(bits))
    r = rtn_quantize(W, QuantSpec(bits, group_size, sym))
    assert r.codes.dtype == torch.uint8 and int(r.codes.max()) <= 2**bits - 1
    assert torch.equal(r.dequantize(), r.weight)
    assert r.scales.shape == (QuantSpec(bits, group_size).n_groups(80), 16)
    # fp16-exact scales
    assert torch.equal(r.scales.half().float(), r.scales)
    # rounding error is at most half a step
    step = r.scales[r.g_idx.long()].T
    assert ((r.weight - W).abs() <= step / 2 + 1e-6).sum() >= 0.95 * W.numel()


def test_last_group_may_be_shorter():
    assert QuantSpec(3, 128).n_groups(576) == 5
    g = group_index(576, QuantSpec(3, 128))
    assert int((g == 4).sum()) == 64


def test_mse_shrinks_range_and_lowers_error():
    W = torch.randn(64, 256, generator=torch.Generator().manual_seed(0))
    W[:, 0] = 6.0  # one outlier column widens the min/max range
    plain = rtn_quantize(W, QuantSpec(3))
    mse = rtn_quantize(W, QuantSpec(3, mse=True))
    assert (mse.scales <= plain.scales + 1e-7).all()
    err = lambda r: (r.weight - W).abs().pow(2.4).sum()
    assert err(mse) < err(plain)


@pytest.mark.parametrize("bad", [{"bits": 1}, {"bits": 9}, {"bits": 3, "group_size": 0}, {"bits": 3.5}])
def test_invalid_specs_name_the_field(bad):
    with pytest.raises(ValueError, match="QuantSpec"):
        QuantSpec(**bad)

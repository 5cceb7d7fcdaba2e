"""Property-based tests: grid and packing round trips, and the params parser under random mutations."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from marr.engine.config import ConfigError
from marr.grid import QuantSpec, dequantize, group_index
from marr.packing import pack_bits, packed_length, unpack_bits
from marr.params import validate_params
from marr.result import rtn_quantize
from tests.params_fixture import valid_params

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ------------------------------------------------------------------------------------- grid
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(d_out=st.integers(1, 12), d_in=st.integers(1, 70), bits=st.integers(2, 8),
       group=st.one_of(st.none(), st.integers(1, 80)), sym=st.booleans(), mse=st.booleans(),
       scale=st.sampled_from([1e-4, 1.0, 1e3]), seed=st.integers(0, 2**16))
def test_grid_round_trip(d_out, d_in, bits, group, sym, mse, scale, seed):
    g = torch.Generator().manual_seed(seed)
    W = scale * torch.randn(d_out, d_in, generator=g)
    if seed % 5 == 0:
        W[:, seed % d_in] = 0  # an all-zero column
    spec = QuantSpec(bits, group, sym, mse)
    result = rtn_quantize(W, spec)
    assert result.codes.dtype == torch.uint8 and int(result.codes.max()) <= spec.maxq
    assert result.scales.shape == (spec.n_groups(d_in), d_out) == result.zeros.shape
    assert torch.equal(result.g_idx, group_index(d_in, spec))
    assert int(result.zeros.min()) >= 0 and int(result.zeros.max()) <= spec.maxq
    assert torch.equal(result.zeros, result.zeros.round())
    assert torch.isfinite(result.weight).all() and (result.scales > 0).all()
    assert torch.equal(dequantize(result.codes, result.scales, result.zeros, result.g_idx), result.weight)
    # asymmetric grids without the mse range search: at most one step (half a step of rounding, or
    # the clamp at a range end moved by the integer zero point). Symmetric grids follow the GPTQ
    # reference, whose range for an all-non-negative row is [0, xmax] with the zero point in the
    # middle of the codes, so they clip far more and are not bounded here.
    step = result.scales[result.g_idx.long()].T
    if not (mse or sym):
        assert ((result.weight - W).abs() <= step * 1.001 + 1e-7 * scale).all()


# ---------------------------------------------------------------------------------- packing
@FAST
@given(bits=st.integers(1, 8), n=st.integers(0, 200), m=st.integers(1, 5), dim=st.sampled_from([0, 1]),
       seed=st.integers(0, 2**16))
def test_bit_packing_round_trip(bits, n, m, dim, seed):
    g = torch.Generator().manual_seed(seed)
    values = torch.randint(0, 1 << bits, (n, m) if dim == 0 else (m, n), generator=g)
    words = pack_bits(values, bits, dim=dim)
    assert words.dtype == torch.int32
    assert words.shape[dim] == packed_length(n, bits) == math.ceil(n * bits / 32)
    assert torch.equal(unpack_bits(words, bits, n, dim=dim).long(), values)


@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                HealthCheck.function_scoped_fixture])
@given(bits=st.sampled_from([2, 3, 4, 8]), group=st.sampled_from([None, 32, 64]), sym=st.booleans(),
       act_order=st.booleans(), fmt=st.sampled_from(["gptq", "gptq_v2"]))
def test_gptq_checkpoint_round_trip(tmp_path_factory, bits, group, sym, act_order, fmt):
    from marr.packing import pack_gptq, unpack
    from tests.packing_fixtures import PROVENANCE, quantize_model, tiny_llama

    assume(not (fmt == "gptq" and not sym and bits == 8))  # v1 stores zero - 1: unsigned 8-bit zeros can underflow
    model = tiny_llama()
    states = quantize_model(model, QuantSpec(bits, group, sym), act_order=act_order)
    folder = pack_gptq(model, states, tmp_path_factory.mktemp("ckpt") / "m", provenance=PROVENANCE,
                       checkpoint_format=fmt)
    _, loaded = unpack(folder, model=tiny_llama(seed=1))
    for name, state in states.items():
        assert torch.equal(loaded[name].weight, state.weight), name


# ---------------------------------------------------------------------- params parser fuzzing
def paths(node, prefix=()):
    """Every (path, value) of a nested dict/list."""
    yield prefix, node
    if isinstance(node, dict):
        for k, v in node.items():
            yield from paths(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from paths(v, prefix + (i,))


ALL_PATHS = [p for p, _ in paths(valid_params()) if p]

junk = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-10**12, 10**12), st.floats(allow_nan=True, allow_infinity=True),
              st.text(max_size=12), st.sampled_from(["llm", "vit", "tiny:llama", "hf:./x", "marr", "pid", "-1",
                                                     "float16", "cuda", "tiny-llm", "gptq-w3", "timm:a@b"])),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)),
    max_leaves=6)

mutation = st.tuples(st.sampled_from(ALL_PATHS), st.sampled_from(["delete", "replace", "add_key", "perturb"]), junk)


def apply(params: dict, path: tuple, action: str, value) -> None:
    parent = params
    for key in path[:-1]:
        parent = parent[key]
    last = path[-1]
    if action == "delete":
        del parent[last]
    elif action == "replace":
        parent[last] = value
    elif action == "add_key":
        target = parent[last]
        if isinstance(target, dict):
            target[str(value)[:8]] = value
        else:
            parent[last] = {"x": value}
    else:  # perturb a number: out of range, negative, huge, fractional
        old = parent[last]
        if isinstance(old, (int, float)) and not isinstance(old, bool):
            parent[last] = -old if value is None else old * 1e9 + 0.5
        else:
            parent[last] = value


def lookup(params: dict, path: tuple) -> bool:
    node = params
    for key in path:
        if isinstance(node, dict) and key in node or isinstance(node, list) and isinstance(key, int) and key < len(node):
            node = node[key]
        else:
            return False
    return True


@settings(max_examples=300, deadline=None)
@given(mutations=st.lists(mutation, min_size=1, max_size=3))
def test_mutated_params_fail_only_with_config_error(mutations):
    params = valid_params()
    for path, action, value in mutations:
        if lookup(params, path):
            apply(params, path, action, value)
    try:
        validate_params(params)
    except ConfigError as exc:
        assert ":" in str(exc)  # "<key path>[=<value>]: <what is allowed>"
    # any other exception type fails the test


@settings(max_examples=40, deadline=None)
@given(bits=st.integers(2, 8), group=st.one_of(st.just(-1), st.integers(1, 4096)), kp=st.floats(0, 100),
       alpha_min=st.floats(-2, 0.5), width=st.floats(0.01, 3), tol=st.floats(1e-12, 1),
       method=st.sampled_from(["rtn", "gptq", "gptaq", "qep", "marr"]), windows=st.integers(1, 10**6))
def test_valid_params_pass(bits, group, kp, alpha_min, width, tol, method, windows):
    params = copy.deepcopy(valid_params())
    params["configs"]["fuzzed"] = {"method": method, "bits": bits, "group_size": group,
                                   "pid": {"kp": kp, "alpha_min": alpha_min, "alpha_max": alpha_min + width,
                                           "tol": tol}}
    params["models"]["tiny-llm"]["calibration"]["windows"] = windows
    validate_params(params)


@pytest.mark.parametrize("text", ["", "- a\n- b\n", "models: 3\n", "configs: {a: [1, 2]}\n",
                                  "llm_models: tiny\n", "models: {x: {kind: llm, source: null}}\n"])
def test_odd_yaml_documents_fail_with_config_error(text, tmp_path):
    from stages.common import read_params

    (tmp_path / "params.yaml").write_text(text)
    if text in ("",):
        assert read_params(tmp_path / "params.yaml") == {}  # an empty file is a valid (empty) pipeline
        return
    with pytest.raises(ConfigError):
        read_params(tmp_path / "params.yaml")

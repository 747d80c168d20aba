"""Channels of a TensorFlow graph's tensors, for the groups of a grouped ``Conv2D``
(:func:`filterdb.readers.graph.input_channels`; the real graphs are in
test_reader_savedmodel.py and test_reader_tfjs.py, against the Keras original)."""
from __future__ import annotations

import pytest

from filterdb.readers.graph import conv2d_groups, input_channels


def _walk(edges, tensor, known):
    return input_channels(tensor, edges.get, known)


def test_through_channel_preserving_ops_to_a_conv():
    edges = {"bias": ("BiasAdd", ["conv", "b"]), "bn": ("FusedBatchNormV3", ["bias", "g", "m"]),
             "relu": ("Relu6", ["bn"]), "pool": ("MaxPool", ["relu"]),
             "b": ("Const", []), "g": ("Const", []), "m": ("Const", [])}
    assert _walk(edges, "pool", {"conv": 6}) == 6


def test_a_residual_add_past_a_channel_padding():
    """BlazeNet's shortcut pads the channels (16 -> 32): the walk takes the conv branch."""
    edges = {"add": ("AddV2", ["pad", "c2"]), "pad": ("Pad", ["pool", "p"]),
             "pool": ("MaxPool", ["c1"]), "p": ("Const", [])}
    assert _walk(edges, "add", {"c1": 16, "c2": 32}) == 32


def test_a_constant_first_input_is_passed_over():
    edges = {"scale": ("Const", []), "mul": ("Mul", ["scale", "act"]), "act": ("Sigmoid", ["c"])}
    assert _walk(edges, "mul", {"c": 12}) == 12


@pytest.mark.parametrize("op", ["ConcatV2", "Reshape", "Transpose", "Placeholder", "MatMul", "Pad",
                                "MirrorPad"])
def test_unknown_where_an_op_may_change_the_channels(op):
    edges = {"x": (op, ["c", "c"])}
    assert _walk(edges, "x", {"c": 6}) is None


def test_a_cycle_ends():
    edges = {"a": ("Identity", ["b"]), "b": ("Identity", ["a"])}
    assert _walk(edges, "a", {}) is None


@pytest.mark.parametrize("channels, kernel_in, groups", [
    (6, 3, 2), (512, 16, 32), (8, 8, 1), (7, 3, 1), (2, 3, 1), (None, 3, 1), (6, 0, 1)])
def test_groups_from_channels(channels, kernel_in, groups):
    assert conv2d_groups(channels, kernel_in) == groups

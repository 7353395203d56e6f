"""The plain-data codec of the judge boundary, tested without any sandbox."""

from __future__ import annotations

import math
import struct
from collections import Counter, OrderedDict, namedtuple

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trl_grpo_plus.rewards.sandbox.protocol import (MAX_DEPTH, MalformedData, NotPlainData, decode_plain,
                                                    encode_plain)

scalars = (st.none() | st.booleans() | st.integers() | st.integers(min_value=-(2**200), max_value=2**200)
           | st.floats(allow_nan=True) | st.complex_numbers(allow_nan=True) | st.text() | st.binary())
# dict keys and set elements without NaN: NaN != NaN, so no container could be compared
hashable_scalars = (st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
                    | st.complex_numbers(allow_nan=False) | st.text() | st.binary())
hashables = st.recursive(hashable_scalars, lambda inner: st.tuples(inner, inner) | st.frozensets(inner, max_size=4),
                         max_leaves=12)
values = st.recursive(
    scalars,
    lambda inner: (st.lists(inner, max_size=5) | st.tuples(inner, inner)
                   | st.dictionaries(hashables, inner, max_size=4) | st.sets(hashables, max_size=4)
                   | st.frozensets(hashables, max_size=4)),
    max_leaves=30,
)


def same(a, b) -> bool:
    """Equal with the exact same type at every level (NaN equals NaN, the sign of 0.0 counts)."""
    if type(a) is not type(b):
        return False
    if type(a) is float:
        return (math.isnan(a) and math.isnan(b)) or (a == b and math.copysign(1, a) == math.copysign(1, b))
    if type(a) is complex:
        return same(a.real, b.real) and same(a.imag, b.imag)
    if type(a) in (list, tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if type(a) is dict:
        return len(a) == len(b) and all(k in b and same(v, b[k]) for k, v in a.items())
    return a == b


@settings(max_examples=300, deadline=None)
@given(values)
def test_round_trip_gives_back_an_equal_value_of_the_exact_same_type(value):
    assert same(decode_plain(encode_plain(value)), value)


def test_the_type_of_every_element_survives():
    value = [True, 1, 1.0, 1 + 0j, "1", b"1", (1,), {1: frozenset({1})}, {1}, None]
    back = decode_plain(encode_plain(value))
    assert [type(x) for x in back] == [bool, int, float, complex, str, bytes, tuple, dict, set, type(None)]
    assert type(back[7][1]) is frozenset


class MyInt(int):
    def __eq__(self, other):
        return True

    __hash__ = int.__hash__


class Anything:
    pass


@pytest.mark.parametrize("value, where", [
    (MyInt(3), "value: a test_sandbox_protocol.MyInt"),
    ([1, {"k": [Anything()]}], "value[1]['k'][0]: a test_sandbox_protocol.Anything"),
    (Counter("ab"), "value: a collections.Counter"),
    (OrderedDict(a=1), "value: a collections.OrderedDict"),
    (namedtuple("P", "x")(1), "value: a test_sandbox_protocol.P"),
    (lambda: 1, "value: a function"),
    (bytearray(b"x"), "value: a bytearray"),
])
def test_values_that_are_not_plain_data_are_refused_with_where_and_what(value, where):
    with pytest.raises(NotPlainData) as info:
        encode_plain(value)
    assert str(info.value).startswith(where), str(info.value)
    assert "only None, bool, int, float, complex, str, bytes" in str(info.value)


def test_a_container_that_holds_itself_or_nests_too_deep_is_refused():
    loop = []
    loop.append(loop)
    with pytest.raises(NotPlainData, match="deeper than"):
        encode_plain(loop)
    deep = 0
    for _ in range(MAX_DEPTH + 1):
        deep = [deep]
    with pytest.raises(NotPlainData, match="deeper than"):
        encode_plain(deep)
    fine = 0
    for _ in range(MAX_DEPTH):
        fine = [fine]
    assert decode_plain(encode_plain(fine)) == fine


def test_a_value_over_the_size_bound_is_refused():
    with pytest.raises(NotPlainData, match="passes 1000 bytes"):
        encode_plain(["x" * 600, "y" * 600], max_bytes=1000)


@pytest.mark.parametrize("data, message", [
    (b"", "no tag"),
    (b"Q", "unknown tag"),
    (b"\x80\x04\x95", "unknown tag"),                              # a pickle is not a message
    (b"s" + struct.pack(">I", 10) + b"abc", "truncated"),
    (b"l" + struct.pack(">I", 2**31) + b"N", "claims 2147483648 items"),  # no allocation from a lie
    (b"S" + struct.pack(">I", 1) + b"l" + struct.pack(">I", 0), "cannot be a dict key or set element"),
    (b"d" + struct.pack(">I", 1) + b"d" + struct.pack(">I", 0) + b"N", "cannot be a dict key or set element"),
    (b"s" + struct.pack(">I", 1) + b"\xff", "bad UTF-8"),
    (b"NN", "1 trailing bytes"),
    (b"H" + bytes(9) + b"s" + bytes(4), "unknown tag"),             # handles only where the caller allows them
    (b"l" + struct.pack(">I", 1) * 1 + b"l\x00\x00\x00\x01" * (MAX_DEPTH + 1), "deeper than"),
])
def test_malformed_messages_are_refused(data, message):
    with pytest.raises(MalformedData, match=message):
        decode_plain(data)


def test_handles_cross_only_through_the_callbacks():
    obj = Anything()
    data = encode_plain([1, obj], handle=lambda o: (7, 1, "thing"))
    assert decode_plain(data, handle=lambda ref, flags, name: ("handle", ref, flags, name)) == [1, ("handle", 7, 1, "thing")]
    with pytest.raises(MalformedData):
        decode_plain(data)


def test_convert_stands_in_plain_values_for_subclasses():
    data = encode_plain({"c": Counter("aab")}, convert=lambda x: dict(x) if isinstance(x, dict) else x)
    back = decode_plain(data)
    assert back == {"c": {"a": 2, "b": 1}} and type(back["c"]) is dict

"""The layered label map of a zone snapshot behaves exactly like a plain dict, and
older snapshots never change when newer ones are made from them."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controparte.dns import zone as zone_module
from controparte.dns.zone import Node, Nodes

labels = st.sampled_from([f"l{i}".encode() for i in range(40)])
present = st.tuples(st.just(b"\xc0\x00\x02\x01"), st.none(), st.integers(1, 65535))
nodes = st.one_of(st.none(), present)
batches = st.lists(st.dictionaries(labels, nodes, max_size=8), max_size=30)


@pytest.mark.parametrize("overlay_max", [1, 4, 4096])
@settings(max_examples=150, deadline=None)
@given(initial=st.dictionaries(labels, present), steps=batches)
def test_layered_map_equals_a_plain_dict(
    overlay_max: int,
    initial: dict[bytes, Node],
    steps: list[dict[bytes, Node | None]],
) -> None:
    saved = zone_module.OVERLAY_MAX
    zone_module.OVERLAY_MAX = overlay_max
    try:
        current = Nodes(dict(initial))
        model = dict(initial)
        history: list[tuple[Nodes, dict[bytes, Node]]] = [(current, dict(model))]
        for changes in steps:
            current = current.with_changes(changes)
            for label, node in changes.items():
                if node is None:
                    model.pop(label, None)
                else:
                    model[label] = node
            history.append((current, dict(model)))
        for snapshot, expected in history:  # every version still reads as it was made
            assert dict(snapshot) == expected
            assert len(snapshot) == len(expected)
            assert sorted(snapshot) == sorted(expected)
            for label in [f"l{i}".encode() for i in range(40)]:
                assert snapshot.get(label) == expected.get(label)
                assert (label in snapshot) == (label in expected)
    finally:
        zone_module.OVERLAY_MAX = saved


def test_missing_label_raises_key_error() -> None:
    removed = Nodes({b"a": (None, None, 1)}).with_changes({b"a": None})
    with pytest.raises(KeyError):
        removed[b"a"]
    assert removed.get(b"a", "default") == "default"

"""The item table keeps items column by column: every item must come back equal, through
removal and compaction too, and the index's byte estimate must stay close to what it holds."""

from __future__ import annotations

import tracemalloc
from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from memvault.retrieval.embed import HashingEmbedder, normalise
from memvault.retrieval.index import Filters, UserIndex
from memvault.retrieval.items import Codes, Item, ItemTable
from memvault.retrieval.lexical import BM25Index

NOW = datetime(2023, 6, 14, 15, 0, 7, 123456, tzinfo=UTC)

ODD_ITEMS = [
    Item(
        type="turn", id="t1", text="Caf\u00e9 au lait \U0001f375 and a lone \ud800 surrogate",
        created_at=NOW, session_id="s1", seq=3, role="assistant", speaker="Ann", channel="ai",
        agent_id="helper", rev=7, metadata={"image_caption": "a cup", "n": [1, 2]},
    ),
    Item(
        type="memory", id="m1", text="", created_at=NOW.astimezone(timezone(timedelta(hours=-7))),
        kind="fact", tier="core", tags=("tea", "morning"), importance=0.8125, access_count=12,
        pinned=True, superseded=True, expires_at=NOW + timedelta(days=30, microseconds=1),
    ),
    Item(
        type="memory", id="m2", text="naive times", created_at=datetime(2024, 3, 31, 2, 30),
        expires_at=datetime(2030, 1, 1, 0, 0, 0, 999999, tzinfo=ZoneInfo("Europe/Paris")),
    ),
    Item(type="memory", id="m3", text="epoch", created_at=datetime(1970, 1, 1, tzinfo=UTC)),
]  # fmt: skip


def test_items_come_back_equal_with_every_field() -> None:
    table = ItemTable()
    for item in ODD_ITEMS:
        table.append(item)
    for slot, item in enumerate(ODD_ITEMS):
        back = table.get(slot)
        assert back == item
        assert back.created_at.tzinfo == item.created_at.tzinfo
        assert back.created_at.isoformat() == item.created_at.isoformat()
        assert back.key == item.key


def test_a_batch_of_slots_comes_back_in_the_order_asked() -> None:
    table = ItemTable()
    for item in ODD_ITEMS:
        table.append(item)
    order = [2, 0, 3, 1, 0]
    assert table.get_many(order) == [ODD_ITEMS[slot] for slot in order]
    assert table.get_many([]) == []


def test_an_empty_metadata_dict_is_not_shared_between_items() -> None:
    table = ItemTable()
    table.append(Item(type="turn", id="t1", text="hi", created_at=NOW))
    first, second = table.get(0), table.get(0)
    assert first.metadata == {} and first.metadata is not second.metadata


def _vectors(count: int) -> np.ndarray:
    rng = np.random.default_rng(3)
    return normalise(rng.normal(size=(count, 32)).astype(np.float32))


def _turns(count: int) -> list[Item]:
    return [
        Item(
            type="turn", id=f"t{n}", text=f"turn {n} about topic{n % 7}",
            created_at=NOW - timedelta(minutes=count - n), session_id=f"s{n // 5}", seq=n % 5,
            role="user", speaker=("Ann", "Bo")[n % 2], channel="ai",
        )
        for n in range(count)
    ]  # fmt: skip


def _held(index: UserIndex, slots: int) -> dict[str, Item]:
    """The live items among the first `slots` slots, by id; a removed slot must refuse."""
    held = {}
    for slot in range(slots):
        try:
            item = index.item(slot)
        except KeyError:
            continue
        held[item.id] = item
    return held


def test_removal_and_compaction_keep_every_live_item_and_filter_right() -> None:
    index = UserIndex(HashingEmbedder(32))
    turns = _turns(40)
    index.add(turns, _vectors(40))
    index.add(ODD_ITEMS[1:], _vectors(3))
    gone = {f"t{n}" for n in range(0, 40, 3)} | {"m2"}
    index.remove([("turn", i) for i in gone] + [("memory", "m2"), ("memory", "unknown")])
    live = {item.id: item for item in turns + ODD_ITEMS[1:] if item.id not in gone}
    assert _held(index, 100) == live
    compacted = index.compacted()
    assert len(compacted) == len(live) and compacted.dead == 0
    assert _held(compacted, len(live)) == live
    mask = compacted.allowed(Filters(tags=frozenset({"tea"})))
    assert mask is not None
    assert [compacted.item(s).id for s in np.flatnonzero(mask).tolist()] == []  # m1 is superseded
    mask = compacted.allowed(Filters(session_id="s1"))
    assert mask is not None
    assert sorted(compacted.item(s).id for s in np.flatnonzero(mask).tolist()) == ["t5", "t7", "t8"]


def test_a_batch_with_a_removed_slot_is_refused() -> None:
    index = UserIndex(HashingEmbedder(32))
    index.add(_turns(6), _vectors(6))
    index.remove([("turn", "t2")])  # session s0 keeps t0, t1, t3, t4 at their slots
    assert [item.id for item in index.items([5, 0, 4])] == ["t5", "t0", "t4"]
    for slots in ([5, 2], [2], [6], [-1]):
        with pytest.raises(KeyError):
            index.items(slots)


def test_a_replaced_item_comes_back_as_rewritten() -> None:
    index = UserIndex(HashingEmbedder(32))
    index.add(ODD_ITEMS[1:2], _vectors(1))
    rewritten = Item(type="memory", id="m1", text="now coffee", created_at=NOW, tags=("tea",))
    index.add([rewritten], _vectors(1))
    assert len(index) == 1 and index.item(1) == rewritten
    mask = index.allowed(Filters(tags=frozenset({"tea"})))
    assert mask is None or mask.tolist()[:2] == [False, True]


def test_term_frequencies_past_the_narrow_type_stay_exact() -> None:
    grown, whole = BM25Index(), BM25Index()
    grown.add(0, ["echo"] * 40_000 + ["pond"])
    grown.add(1, ["echo", "mill"])
    grown.extend(0, ["echo"] * 40_000)
    whole.add(0, ["echo"] * 80_000 + ["pond"])
    whole.add(1, ["mill", "echo"])
    whole.add(2, ["echo"] * 70_000)
    grown.add(2, ["echo"] * 70_000)
    for query in (["echo"], ["pond", "mill"]):
        assert np.array_equal(grown.scores(query), whole.scores(query))


def test_the_byte_estimate_is_close_to_what_the_index_holds() -> None:
    """The cache evicts on `nbytes`: it must neither hide memory nor invent it."""
    turns, vectors = _turns(20_000), _vectors(20_000)
    tracemalloc.start()
    try:
        index = UserIndex(HashingEmbedder(32), ann_threshold=10**9)  # no graph: not traced
        for first in range(0, 20_000, 5_000):
            index.add(turns[first : first + 5_000], vectors[first : first + 5_000])
        held = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert 0.85 * held < index.nbytes() < 1.3 * held


def test_a_column_read_past_the_slots_it_was_set_for_gives_none_there() -> None:
    """A category column grows only when a value is set (an item sets every column at its
    slot), so a read may reach past its end."""
    column = Codes()
    column.set(0, "s1")
    column.set(2, None)
    slots = np.array([0, 2, len(column.codes)], dtype=np.int64)
    assert column.values_at(slots) == ["s1", None, None]
    assert column.values_at(slots[:2]) == ["s1", None]
    assert column.matches_at(slots, ["s1"]).tolist() == [True, False, False]

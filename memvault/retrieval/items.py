"""What the index holds per turn or memory: the text to show, the keys to match, the filters.

Turns and memories differ in shape; ranking and filtering treat them alike through `Item`.
A turn is keyed with its speaker folded in ("Caroline: I went to ..."), because people ask
about who said or did something, and an image shared in a turn is keyed by its caption. A turn
marked `empty` is not indexed at all (`searchable`).
"""

from __future__ import annotations

import math
import sys
from array import array
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import numpy.typing as npt

from memvault.model import Memory, Turn

TURN = "turn"
MEMORY = "memory"
ITEM_TYPES = (TURN, MEMORY)
# turn metadata: the turn's content only stands in for an answer that said nothing (a turn
# needs some content), so there is nothing in it to find or to put in a context
EMPTY_MARK = "empty"


@dataclass(frozen=True, slots=True)
class Item:
    type: str
    id: str
    text: str
    created_at: datetime
    session_id: str | None = None
    seq: int = 0
    role: str | None = None
    speaker: str | None = None
    channel: str | None = None
    agent_id: str | None = None
    kind: str | None = None
    tier: str | None = None
    category: str | None = None
    tags: tuple[str, ...] = ()
    importance: float = 0.0
    access_count: int = 0
    pinned: bool = False
    superseded: bool = False
    expires_at: datetime | None = None
    rev: int = 0  # the user's revision when the row was last written
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        """The text that is embedded and indexed: speaker, words, and any image caption."""
        caption = self.metadata.get("image_caption") if self.type == TURN else None
        text = f"{self.text} [image: {caption}]" if isinstance(caption, str) else self.text
        return f"{self.speaker}: {text}" if self.speaker else text


def item_from_turn(turn: Turn, rev: int = 0) -> Item:
    return Item(
        type=TURN,
        id=turn.id,
        text=turn.content,
        created_at=turn.created_at,
        session_id=turn.session_id,
        seq=turn.seq,
        role=turn.role.value,
        speaker=turn.speaker,
        channel=turn.channel.value,
        agent_id=turn.agent_id,
        rev=rev,
        metadata=turn.metadata,
    )


def searchable(items: Iterable[Item]) -> list[Item]:
    """The items an index holds: all but turns marked `EMPTY_MARK`, whose placeholder text
    would match searches for its own words and take a line of a context. They are still
    stored and listed with their session."""
    return [i for i in items if not (i.type == TURN and i.metadata.get(EMPTY_MARK) is True)]


def item_from_memory(memory: Memory, rev: int = 0) -> Item:
    return Item(
        type=MEMORY,
        id=memory.id,
        text=memory.text,
        created_at=memory.created_at,
        agent_id=memory.agent_id,
        kind=memory.kind.value,
        tier=memory.tier.value,
        category=memory.category,
        tags=memory.tags,
        importance=memory.importance,
        access_count=memory.access_count,
        pinned=memory.pinned,
        superseded=memory.superseded_by is not None,
        expires_at=memory.expires_at,
        rev=rev,
        metadata=memory.metadata,
    )


class Codes:
    """A categorical value per slot, as an int32 code into a table of the distinct values.

    A user's turns repeat a handful of session ids, speakers, roles and channels; stored once
    each, they cost four bytes a slot instead of a pointer and (for most) a string apiece, and a
    filter on them is one vectorised comparison. None is code -1.
    """

    def __init__(self) -> None:
        self.code: dict[Hashable, int] = {}
        self.values: list[Any] = []
        self.codes = np.zeros(0, dtype=np.int32)

    def set(self, slot: int, value: Hashable | None) -> int:
        """Record `value` at `slot`; its code is returned."""
        if slot >= len(self.codes):
            self.codes = grown(self.codes, slot + 1)
        code = -1 if value is None else self.code.setdefault(value, len(self.code))
        if code == len(self.values):
            self.values.append(value)
        self.codes[slot] = code
        return code

    def get(self, slot: int) -> Any:
        code = int(self.codes[slot])
        return None if code < 0 else self.values[code]

    def values_at(self, slots: npt.NDArray[np.int64]) -> list[Any]:
        """The values at `slots`; None for slots never set (a column grows only when set)."""
        values = self.values
        return [None if code < 0 else values[code] for code in self._codes_at(slots).tolist()]

    def _codes_at(self, slots: npt.NDArray[np.int64]) -> npt.NDArray[np.int32]:
        """The codes at `slots`; -1 for slots never set. Every live item sets every column, so
        reads nearly always fall inside it: tried first, a column's read costs a tenth of the
        masked one (0.4 against 6 us for ten slots), and a search reads a dozen for its hits."""
        try:
            codes: npt.NDArray[np.int32] = self.codes[slots]
        except IndexError:  # a slot past the column's end
            codes = np.full(len(slots), -1, dtype=np.int32)
            inside = slots < len(self.codes)
            codes[inside] = self.codes[slots[inside]]
        return codes

    def matches(self, size: int, wanted: Iterable[Hashable]) -> npt.NDArray[np.bool_]:
        """Mask of the first `size` slots whose value is one of `wanted`."""
        return self.codes_in(size, self._codes_of(wanted))

    def matches_at(
        self, slots: npt.NDArray[np.int64], wanted: Iterable[Hashable]
    ) -> npt.NDArray[np.bool_]:
        """Mask over `slots` of those whose value is one of `wanted`."""
        return np.isin(self._codes_at(slots), self._codes_of(wanted))

    def _codes_of(self, wanted: Iterable[Hashable]) -> list[int]:
        """The codes of those of `wanted` the column holds at all."""
        return [self.code[w] for w in wanted if w in self.code]

    def codes_in(self, size: int, codes: Iterable[int]) -> npt.NDArray[np.bool_]:
        return np.isin(self.codes[:size], list(codes))

    def nbytes(self) -> int:
        return int(self.codes.nbytes) + _DISTINCT_VALUE_BYTES * len(self.values)

    def compacted(self, keep: npt.NDArray[np.int64]) -> Codes:
        """The values at slots `keep`, now at slots 0, 1, ...; a value none of them has is let
        go (a session deleted long ago no longer costs its entry)."""
        used, renumbered = np.unique(self._codes_at(keep), return_inverse=True)
        absent = 1 if len(used) and used[0] < 0 else 0  # None sorts first, as code -1
        column = Codes()
        column.values = [self.values[code] for code in used[absent:].tolist()]
        column.code = {value: code for code, value in enumerate(column.values)}
        column.codes = (renumbered.reshape(-1) - absent).astype(np.int32)
        return column


def grown(values: npt.NDArray[Any], size: int) -> npt.NDArray[Any]:
    """`values` with room for at least `size` entries (by doubling, so appends stay cheap)."""
    bigger = np.zeros(max(size, 2 * len(values), 1024), dtype=values.dtype)
    bigger[: len(values)] = values
    return bigger


_DISTINCT_VALUE_BYTES = 160  # a distinct value's table entries and (typically) its string
_CATEGORIES = (
    "type", "session_id", "role", "speaker", "channel", "agent_id", "kind", "tier", "category"
)  # fmt: skip
_NUMBERS: dict[str, type[np.generic]] = {
    "seq": np.int64,
    "importance": np.float64,
    "access_count": np.int64,
    "pinned": np.bool_,
    "superseded": np.bool_,
    "rev": np.int64,
    "created": np.float64,  # created_at as a POSIX timestamp, for the time filters and signals
    "expires": np.float64,  # expires_at likewise, +inf when it never expires
}
# per item beyond its id and text: the slot's entries in the id list, text offsets and metadata
# list, and the id's entry in the index's id-to-slot map
_ITEM_BYTES = 8 + 8 + 8 + 100


class ItemTable:
    """Items by slot, held column by column and made into `Item` objects only when asked for.

    One frozen `Item` per turn cost about 560 bytes (the object, its datetime, its empty
    metadata dict, its text as a str) and was the largest share of what the garbage collector
    walked. Here scalars sit in typed arrays, repeated strings are stored once (`Codes`), texts
    are UTF-8 in one buffer, and an empty metadata dict is not kept at all. `get(slot)` returns
    an `Item` equal to the one stored; a datetime whose timestamp would not give it back exactly
    (a naive one, or one off by a rounding) is kept as it was.
    """

    def __init__(self) -> None:
        self.categories = {name: Codes() for name in _CATEGORIES}
        self._tags = Codes()
        self._zones = {"created": Codes(), "expires": Codes()}
        self.numbers = {name: np.zeros(0, dtype=dtype) for name, dtype in _NUMBERS.items()}
        self.ids: list[str] = []
        self._text = bytearray()
        self._text_ends = array("q")
        self._metadata: list[dict[str, Any] | None] = []
        self._odd_times: dict[tuple[str, int], datetime] = {}
        self._bytes = 0

    def __len__(self) -> int:
        return len(self.ids)

    def append(self, item: Item) -> int:
        """Store `item` in the next slot, which is returned."""
        slot = len(self.ids)
        if slot >= len(self.numbers["seq"]):
            self.numbers = {name: grown(values, slot + 1) for name, values in self.numbers.items()}
        for name in _CATEGORIES:
            self.categories[name].set(slot, getattr(item, name))
        self._tags.set(slot, item.tags)
        numbers = self.numbers
        numbers["seq"][slot] = item.seq
        numbers["importance"][slot] = item.importance
        numbers["access_count"][slot] = item.access_count
        numbers["pinned"][slot] = item.pinned
        numbers["superseded"][slot] = item.superseded
        numbers["rev"][slot] = item.rev
        numbers["created"][slot] = self._put_time("created", slot, item.created_at)
        numbers["expires"][slot] = self._put_time("expires", slot, item.expires_at)
        self.ids.append(item.id)
        text = item.text.encode("utf-8", "surrogatepass")
        self._text += text
        self._text_ends.append(len(self._text))
        self._metadata.append(item.metadata or None)
        self._bytes += _ITEM_BYTES + sys.getsizeof(item.id) + len(text)
        self._bytes += _dict_bytes(item.metadata) if item.metadata else 0
        return slot

    def _put_time(self, name: str, slot: int, moment: datetime | None) -> float:
        """The moment's timestamp; the moment itself is kept aside when that loses anything."""
        if moment is None:
            return math.inf
        stamp = moment.timestamp()
        self._zones[name].set(slot, moment.tzinfo)
        if not _same_moment(datetime.fromtimestamp(stamp, moment.tzinfo), moment):
            self._odd_times[(name, slot)] = moment
        return stamp

    def _times(self, name: str, slots: npt.NDArray[np.int64]) -> list[datetime | None]:
        stamps = self.numbers[name][slots].tolist()
        zones = self._zones[name].values_at(slots)
        moments: list[datetime | None] = []
        for slot, stamp, zone in zip(slots.tolist(), stamps, zones, strict=True):
            if stamp == math.inf:
                moments.append(None)
            else:
                odd = self._odd_times.get((name, slot))
                moments.append(odd if odd is not None else datetime.fromtimestamp(stamp, zone))
        return moments

    def get(self, slot: int) -> Item:
        """The item stored at `slot` (equal to the one appended)."""
        return self.get_many([slot])[0]

    def get_many(self, slots: Sequence[int]) -> list[Item]:
        """The items at `slots`, in order. Each column is read once for all of them: a search's
        hits cost about a third of what one slot at a time did."""
        if len(slots) == 0:
            return []
        picked = np.asarray(slots, dtype=np.int64)
        category = {name: codes.values_at(picked) for name, codes in self.categories.items()}
        tags = self._tags.values_at(picked)
        numbers = {name: values[picked].tolist() for name, values in self.numbers.items()}
        created = self._times("created", picked)
        expires = self._times("expires", picked)
        items = []
        for i, slot in enumerate(picked.tolist()):
            created_at = created[i]
            assert created_at is not None  # every item has a creation time
            items.append(
                Item(
                    type=category["type"][i],
                    id=self.ids[slot],
                    text=self.text(slot),
                    created_at=created_at,
                    session_id=category["session_id"][i],
                    seq=numbers["seq"][i],
                    role=category["role"][i],
                    speaker=category["speaker"][i],
                    channel=category["channel"][i],
                    agent_id=category["agent_id"][i],
                    kind=category["kind"][i],
                    tier=category["tier"][i],
                    category=category["category"][i],
                    tags=tags[i],
                    importance=numbers["importance"][i],
                    access_count=numbers["access_count"][i],
                    pinned=numbers["pinned"][i],
                    superseded=numbers["superseded"][i],
                    expires_at=expires[i],
                    rev=numbers["rev"][i],
                    metadata=self._metadata[slot] or {},
                )
            )
        return items

    def text(self, slot: int) -> str:
        start = self._text_ends[slot - 1] if slot else 0
        return self._text[start : self._text_ends[slot]].decode("utf-8", "surrogatepass")

    def tags_cover(self, size: int, wanted: frozenset[str]) -> npt.NDArray[np.bool_]:
        """Mask of the first `size` slots whose tags include every tag in `wanted`."""
        codes = (code for code, tags in enumerate(self._tags.values) if wanted <= set(tags))
        return self._tags.codes_in(size, codes)

    def compacted(self, keep: npt.NDArray[np.int64]) -> ItemTable:
        """The items at slots `keep`, in that order, at slots 0, 1, ... of a new table: each
        column taken whole, no `Item` made (a compaction of 100k items spent 2 s making them)."""
        table = ItemTable()
        table.categories = {name: codes.compacted(keep) for name, codes in self.categories.items()}
        table._tags = self._tags.compacted(keep)
        table._zones = {name: codes.compacted(keep) for name, codes in self._zones.items()}
        table.numbers = {name: values[keep] for name, values in self.numbers.items()}
        slots = keep.tolist()
        table.ids = [self.ids[slot] for slot in slots]
        ends = np.array(self._text_ends, dtype=np.int64)  # a copy: a view would pin the array
        starts, ends = np.concatenate([[0], ends[:-1]])[keep], ends[keep]
        with memoryview(self._text) as text:
            pieces = zip(starts.tolist(), ends.tolist(), strict=True)
            table._text = bytearray(b"".join(text[start:end] for start, end in pieces))
        table._text_ends = array("q", np.cumsum(ends - starts).tolist())
        table._metadata = [self._metadata[slot] for slot in slots]
        if self._odd_times:
            new_slot = dict(zip(slots, range(len(slots)), strict=True))
            table._odd_times = {
                (name, new_slot[slot]): moment
                for (name, slot), moment in self._odd_times.items()
                if slot in new_slot
            }
        table._bytes = (
            _ITEM_BYTES * len(slots)
            + sum(map(sys.getsizeof, table.ids))
            + len(table._text)
            + sum(_dict_bytes(values) for values in table._metadata if values)
        )
        return table

    def release(self, slot: int) -> None:
        """Let go of a removed slot's metadata (its other columns stay until compaction)."""
        self._metadata[slot] = None

    def nbytes(self) -> int:
        columns = [*self.categories.values(), self._tags, *self._zones.values()]
        arrays = sum(int(values.nbytes) for values in self.numbers.values())
        return self._bytes + arrays + sum(c.nbytes() for c in columns) + 200 * len(self._odd_times)


def _same_moment(rebuilt: datetime, moment: datetime) -> bool:
    """Equal as instants and on the wall clock, so the offset and every field agree too."""
    return rebuilt == moment and rebuilt.replace(tzinfo=None) == moment.replace(tzinfo=None)


def _dict_bytes(values: dict[str, Any]) -> int:
    """A metadata dict's size with its keys and (top-level) values."""
    return sys.getsizeof(values) + sum(
        sys.getsizeof(key) + sys.getsizeof(value) for key, value in values.items()
    )

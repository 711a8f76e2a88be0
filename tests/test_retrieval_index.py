"""The building blocks of per-user search: text analysis, BM25, the dense index, the user index,
time expressions and fusion, with the hashing embedder (no model)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from memvault.errors import Invalid
from memvault.retrieval.dense import KEPT_GRAPH_EXPANSION, DenseIndex
from memvault.retrieval.embed import HashingEmbedder, normalise
from memvault.retrieval.fusion import Weights, fuse, scale_to_max
from memvault.retrieval.index import Filters, Named, People, UserIndex
from memvault.retrieval.items import Item
from memvault.retrieval.lexical import BM25Index
from memvault.retrieval.text import ROLE_WORDS, stem, terms
from memvault.retrieval.timeexpr import resolve_time

NOW = datetime(2023, 6, 14, 15, 0, tzinfo=UTC)  # a Wednesday


def test_terms_drop_stop_words_stem_and_cut_to_a_prefix() -> None:
    assert terms("When did Caroline go painting with her dogs?") == [
        "caroli", "go", "paint", "dog",
    ]  # fmt: skip
    assert stem("classes") == "class" and stem("class") == "class"
    assert terms("She\u2019s running") == ["run"]
    assert terms("mentorship") == terms("mentored") != terms("mentions")


def test_bm25_prefers_rare_terms_and_forgets_removed_slots() -> None:
    index = BM25Index()
    docs = [["dog", "park"], ["dog", "walk"], ["violin", "lesson"], ["dog", "violin"]]
    for slot, doc in enumerate(docs):
        index.add(slot, doc)
    scores = index.scores(["violin"])
    assert scores[0] == scores[1] == 0
    assert scores[2] > 0 and scores[3] > 0
    index.remove(2)
    after = index.scores(["violin"])
    assert after[2] == 0 and after[3] > 0
    with pytest.raises(ValueError, match="in order"):
        index.add(9, ["late"])


def test_bm25_extending_a_document_scores_as_if_it_had_been_whole() -> None:
    grown, whole = BM25Index(), BM25Index()
    grown.add(0, ["dog", "park"])
    grown.add(1, ["cat"])
    grown.extend(0, ["park", "violin"])
    grown.extend(1, ["dog"])
    whole.add(0, ["dog", "park", "park", "violin"])
    whole.add(1, ["cat", "dog"])
    for query in (["dog"], ["park"], ["violin", "cat"]):
        assert np.allclose(grown.scores(query), whole.scores(query))
    grown.remove(1)
    with pytest.raises(ValueError, match="live document"):
        grown.extend(1, ["late"])


def test_bm25_taking_terms_out_of_a_document_scores_as_if_built_without_them() -> None:
    shrunk, built = BM25Index(), BM25Index()
    for slot, doc in enumerate([["dog", "park", "park", "violin"], ["dog", "cat"], ["park"]]):
        shrunk.add(slot, doc)
    shrunk.retract(0, ["park", "violin"])
    shrunk.retract(1, ["dog"])
    for slot, doc in enumerate([["dog", "park"], ["cat"], ["park"]]):
        built.add(slot, doc)
    for query in (["dog"], ["park"], ["violin"], ["cat", "park"]):
        assert np.array_equal(shrunk.scores(query), built.scores(query)), query
    assert not shrunk.scores(["violin"]).any()  # its last posting went: no document holds it
    before = shrunk.scores(["dog", "park", "cat"])
    for slot, terms_held_too_few in ((0, ["dog", "dog"]), (0, ["violin"]), (2, ["nothing"])):
        with pytest.raises(ValueError, match="holds"):
            shrunk.retract(slot, ["park", *terms_held_too_few])
    assert np.array_equal(shrunk.scores(["dog", "park", "cat"]), before)  # nothing changed
    shrunk.remove(2)
    with pytest.raises(ValueError, match="live document"):
        shrunk.retract(2, ["park"])


def test_bm25_keeps_growing_between_searches() -> None:
    """A search reads each term's arrays as they stand; later adds and extensions of the same
    terms must still go through and be seen (a server searches and appends all day)."""
    grown, whole = BM25Index(), BM25Index()
    grown.add(0, ["heron", "pond"])
    first = grown.scores(["heron", "pond"])
    grown.extend(0, ["mill"])
    grown.add(1, ["heron", "mill", "pond"])
    whole.add(0, ["heron", "pond", "mill"])
    whole.add(1, ["heron", "mill", "pond"])
    assert first[0] > 0
    assert np.allclose(grown.scores(["heron", "mill"]), whole.scores(["heron", "mill"]))


def test_bm25_grown_in_any_order_scores_as_if_built_whole() -> None:
    """Postings are arrays with room to spare: appends, extensions of older documents (entries
    inserted before newer slots) and searches in between must leave them exactly as a build
    from the finished documents would."""
    rng = np.random.default_rng(11)
    vocabulary = [f"w{n}" for n in range(12)]
    grown, documents = BM25Index(), []
    for slot in range(300):
        words = list(rng.choice(vocabulary, size=int(rng.integers(1, 6))))
        grown.add(slot, words)
        documents.append(words)
        older = int(rng.integers(0, slot + 1))
        more = list(rng.choice(vocabulary, size=2))
        grown.extend(older, more)
        documents[older] += more
        if slot % 25 == 0:
            grown.scores(vocabulary[:4])  # a search between writes
    whole = BM25Index()
    for slot, words in enumerate(documents):
        whole.add(slot, words)
    for term in vocabulary:
        assert np.allclose(grown.scores([term]), whole.scores([term])), term


def test_bm25_counts_only_live_documents_in_a_terms_frequency() -> None:
    """Removed documents keep their postings but leave every term's document frequency, also
    when searches, removals and appends take turns. Counting them drove a common term's IDF
    below zero once they outnumbered the live ones: the live 'dog' documents matched nothing."""
    rng = np.random.default_rng(5)
    vocabulary = ["dog", "park", "violin", "lake"]
    topped_up, live = BM25Index(), {}
    for slot in range(200):
        words = list(rng.choice(vocabulary, size=int(rng.integers(1, 4))))
        topped_up.add(slot, words)
        live[slot] = words
        if slot % 3 and rng.random() < 0.6:
            gone = int(rng.choice(list(live)))
            topped_up.remove(gone)
            del live[gone]
        if slot % 7 == 0:
            topped_up.scores(vocabulary)  # counts made between removals must not go stale
    rebuilt = BM25Index()
    for slot, words in enumerate(live.values()):
        rebuilt.add(slot, words)
    for term in vocabulary:
        kept = topped_up.scores([term])[list(live)]
        assert np.allclose(kept, rebuilt.scores([term])), term
        assert (kept > 0).sum() == sum(term in words for words in live.values())


def test_bm25_term_weights_scale_each_terms_share() -> None:
    index = BM25Index()
    for slot, doc in enumerate([["dog", "park"], ["child", "park"], ["violin"]]):
        index.add(slot, doc)
    assert np.allclose(index.weighted_scores({"dog": 2.0}), index.scores(["dog", "dog"]))
    half = index.weighted_scores({"dog": 1.0, "child": 0.5})
    assert np.allclose(half, index.scores(["dog"]) + 0.5 * index.scores(["child"]))
    assert not index.weighted_scores({"violin": 0.0}).any()


def test_dense_index_exact_and_ann_agree_on_the_nearest() -> None:
    rng = np.random.default_rng(7)
    vectors = normalise(rng.normal(size=(600, 32)).astype(np.float32))
    exact, ann = DenseIndex(32, ann_threshold=10_000), DenseIndex(32, ann_threshold=100)
    exact.add(0, vectors[:300])
    exact.add(300, vectors[300:])
    ann.add(0, vectors[:300])
    ann.add(300, vectors[300:])
    query = vectors[123] + 0.01
    assert exact.nearest(query, 5)[0] == 123
    assert ann.nearest(query, 5)[0] == 123
    exact.remove(123)
    ann.remove(123)
    assert 123 not in exact.nearest(query, 5)
    assert 123 not in ann.nearest(query, 5)


def test_compaction_takes_the_hnsw_graph_along_under_the_new_slots() -> None:
    """The graph is renamed, not built again, and the vectors packed in place: the same
    neighbours come back, at their new slots, and the exact cosines too; the index left
    behind is empty."""
    rng = np.random.default_rng(9)
    vectors = normalise(rng.normal(size=(20_000, 32)).astype(np.float32))
    old = DenseIndex(32, ann_threshold=100)
    old.add(0, vectors)
    for slot in range(0, 20_000, 5):
        old.remove(slot)
    queries = vectors[1:2000:70] + 0.01
    # searched as the kept graph will be: a wider search of the same graph may find better
    # neighbours, and the graph's build, on every core, is not the same from run to run
    old._ann.expansion_search = KEPT_GRAPH_EXPANSION
    before = [old.nearest(q, 5) for q in queries]
    live = np.array([s for s in range(20_000) if s % 5])  # more than one block of rows moved
    new = old.compacted(live)
    assert len(new) == len(live) == 16_000 and len(old) == 0
    assert old.nbytes() == 0 and new.nbytes() > 2_000_000  # matrix and graph moved over
    assert new._ann.expansion_search == KEPT_GRAPH_EXPANSION  # searched wider: it has holes
    assert np.array_equal(new.vectors(np.arange(len(live))), vectors[live])
    for query, found in zip(queries, before, strict=True):
        assert live[new.nearest(query, 5)].tolist() == found.tolist()
        assert np.allclose(new.similarity(query, np.arange(5)), vectors[live[:5]] @ query)
    with pytest.raises(ValueError, match="ascending"):
        new.compacted(np.array([3, 1]))
    small = DenseIndex(32, ann_threshold=100)
    small.add(0, vectors[:120])
    assert small.compacted(np.arange(50)).nbytes() < 100_000  # below it, no graph (megabytes)


def _turn(i: int, text: str, session: str = "s1", speaker: str = "Ann", days: int = 0) -> Item:
    return Item(
        type="turn", id=f"t{i}", text=text, created_at=NOW - timedelta(days=days),
        session_id=session, seq=i, role="user", speaker=speaker, channel="ai",
    )  # fmt: skip


def test_user_index_filters_by_session_time_and_type() -> None:
    index = UserIndex(HashingEmbedder())
    index.add([_turn(1, "hello", "a", days=10), _turn(2, "bye", "b", days=1)])
    index.add([Item(type="memory", id="m1", text="likes tea", created_at=NOW, kind="fact")])
    assert len(index) == 3
    by_session = index.allowed(Filters(session_id="b"))
    assert by_session is not None and by_session.tolist() == [False, True, False]
    recent = index.allowed(Filters(since=NOW - timedelta(days=2)))
    assert recent is not None and recent.tolist() == [False, True, True]
    memories = index.allowed(Filters(types=frozenset({"memory"}), kinds=frozenset({"fact"})))
    assert memories is not None and memories.tolist() == [False, False, True]
    assert index.allowed(Filters()) is None


def test_user_index_context_window_matches_the_question_a_turn_answers() -> None:
    index = UserIndex(HashingEmbedder())
    index.add(
        [
            _turn(1, "Which instrument are you learning?", speaker="Bob"),
            _turn(2, "The cello, since March."),
            _turn(3, "Nice weather today.", session="s2"),
        ]
    )
    scores = index.bm25(terms("instrument learning"))
    assert scores[1] > 0  # the answer carries the question it replies to
    assert scores[2] == 0
    scores = index.bm25(terms("cello"))
    assert scores[0] > 0  # the question learns of its answer once the answer arrives
    assert scores[1] > scores[0] and scores[2] == 0


def test_a_turn_learns_of_its_reply_across_appends_and_keeps_it_after_compaction() -> None:
    index = UserIndex(HashingEmbedder())
    index.add([_turn(1, "Guess where we went on Saturday?"), _turn(2, "Unrelated", session="s2")])
    assert index.bm25(terms("aquarium"))[0] == 0
    index.add([_turn(3, "The aquarium, the kids loved the sharks.")])
    assert index.bm25(terms("aquarium"))[0] > 0
    index.remove([("turn", "t2")])
    compacted = index.compacted()
    first = [compacted.item(s).id for s in range(len(compacted))].index("t1")
    assert compacted.bm25(terms("sharks"))[first] > 0


def _word(i: int) -> str:
    """A word of turn `i`'s alone (terms are cut to six letters: "topic27" would be "topic2")."""
    return f"q{chr(97 + i // 26)}{chr(97 + i % 26)}x"


def test_turns_taken_out_of_a_session_leave_it_as_a_build_without_them_would_be() -> None:
    sessions = {"long": range(30), **{f"s{n}": range(100 + 3 * n, 103 + 3 * n) for n in range(20)}}
    kept = {
        name: [_turn(i, f"{name} {_word(i)} word{i % 3}", name) for i in ids]
        for name, ids in sessions.items()
    }
    patched = UserIndex(HashingEmbedder(64))
    patched.add([turn for turns in kept.values() for turn in turns])

    def take_out(ids: list[int]) -> None:
        patched.remove([("turn", f"t{i}") for i in ids])
        for name, turns in kept.items():
            kept[name] = [turn for turn in turns if int(turn.id[1:]) not in ids]

    def same_as_a_build() -> None:
        built = UserIndex(HashingEmbedder(64))
        built.add([turn for turns in kept.values() for turn in turns])
        slot_of = {built.item(slot).id: slot for slot in range(len(built))}
        live = np.flatnonzero(patched._alive[: len(patched._items)])
        same = np.array([slot_of[patched.item(slot).id] for slot in live.tolist()])
        for word in [*map(_word, (9, 10, 12, 14, 27, 28, 29, 30)), "word1", "s3", "sharks"]:
            query = terms(word)
            assert np.array_equal(patched.bm25(query)[live], built.bm25(query)[same]), word
            assert np.array_equal(
                patched.session_scores(patched.session_match(query), live),
                built.session_scores(built.session_match(query), same),
            ), word

    take_out([0, 10, 11, 13, 29])  # the first, two in a row, one between, the last
    same_as_a_build()
    patched.add([_turn(30, f"{_word(30)} sharks", "long")])  # the session's tail is right too
    kept["long"].append(_turn(30, f"{_word(30)} sharks", "long"))
    same_as_a_build()
    take_out(list(range(100, 157)))  # 19 sessions dropped: the session documents are rebuilt
    assert patched._sessions._dead == 0
    same_as_a_build()


def test_a_speaker_whose_turns_are_all_gone_names_nobody() -> None:
    index = UserIndex(HashingEmbedder(64))
    index.add([_turn(1, "hello"), _turn(2, "hi Ann", speaker="Bo Li"), _turn(3, "how are you")])
    assert index.speaker_words - ROLE_WORDS == {"ann", "bo", "li"}
    index.remove([("turn", "t2")])
    assert index.speaker_words - ROLE_WORDS == {"ann"}
    index.remove([("turn", "t1")])
    assert index.speaker_words - ROLE_WORDS == {"ann"}  # t3 is Ann's too


def test_the_users_and_agents_names_stay_among_the_speakers_words_whatever_they_do() -> None:
    index = UserIndex(HashingEmbedder(64))
    index.add(
        [_turn(1, "hi", speaker="Bo"), _turn(2, "yo", speaker="Cy"), _turn(3, "ok", speaker="Di")]
    )
    index.name_people(People(user="Ann Lee", agents={"a1": "Jarvis", "a2": "Jarvis Two"}))
    assert index.speaker_words - ROLE_WORDS == {"ann", "lee", "jarvis", "two", "bo", "cy", "di"}
    assert index.named_speakers("What did Lee tell Jarvis?") == Named(
        user=True, agents=frozenset({"a1", "a2"})
    )
    assert index.named_speakers("What did Di say?") == Named(speakers=frozenset({2}))
    index.remove([("turn", "t1")])  # Bo's last turn
    assert index.speaker_words - ROLE_WORDS == {"ann", "lee", "jarvis", "two", "cy", "di"}
    index.remove([("turn", "t2")])
    compacted = index.compacted()
    assert compacted.speaker_words - ROLE_WORDS == {"ann", "lee", "jarvis", "two", "di"}
    assert compacted.named_speakers("What did Ann say?") == Named(user=True)
    compacted.name_people(People(agents={"a2": "Jarvis Two"}))
    assert compacted.speaker_words - ROLE_WORDS == {"jarvis", "two", "di"}
    assert not compacted.named_speakers("Did Ann?")


def test_compaction_keeps_live_items_and_their_vectors() -> None:
    index = UserIndex(HashingEmbedder())
    index.add([_turn(i, f"note number {i} about topic{i}") for i in range(1, 6)])
    before = index.cosine(index.embedder.embed(["topic4"])[0], np.array([3]))
    stored = index.vectors([3])
    index.remove([("turn", "t2"), ("turn", "t3")])
    compacted = index.compacted()
    assert len(compacted) == 3 and compacted.dead == 0
    slot = [compacted.item(s).id for s in range(3)].index("t4")
    after = compacted.cosine(index.embedder.embed(["topic4"])[0], np.array([slot]))
    assert np.allclose(before, after)
    assert np.array_equal(compacted.vectors([slot]), stored)


def test_compaction_carries_each_part_over_as_a_build_of_the_live_items_has_it() -> None:
    turns = [
        _turn(i, f"note {i} on topic{i % 7}", f"s{i // 10}", ("Ann", "Bo Li")[i // 200], i % 30)
        for i in range(400)
    ]
    memories = [
        Item(type="memory", id=f"m{i}", text=f"likes topic{i}", created_at=NOW, kind="fact",
             tags=("home",) if i % 2 else ())
        for i in range(5)
    ]  # fmt: skip
    index = UserIndex(HashingEmbedder(64))
    index.add(turns + memories)
    index.remove([("turn", f"t{i}") for i in range(200, 400)] + [("memory", "m1")])
    assert index.compaction_due()
    compacted = index.compacted()
    kept = turns[:200] + memories[:1] + memories[2:]
    built = UserIndex(HashingEmbedder(64))
    built.add(kept)

    assert len(compacted) == len(kept) and compacted.dead == 0 and not compacted.compaction_due()
    assert compacted.items(list(range(len(kept)))) == kept
    # Bo Li's turns are gone
    assert compacted.speaker_words == built.speaker_words == {"ann"} | ROLE_WORDS
    assert len(compacted._items.categories["session_id"].values) == 20  # and their sessions
    filters = Filters(tags=frozenset({"home"}), since=NOW - timedelta(days=3))
    mask, expected = compacted.allowed(filters), built.allowed(filters)
    assert mask is not None and expected is not None and np.array_equal(mask, expected)
    compacted.add([_turn(400, "the sharks", "s0")])  # t9's reply: its document grows
    built.add([_turn(400, "the sharks", "s0")])
    for query in ("note topic3", "likes topic3", "note 17", "sharks"):
        assert np.array_equal(compacted.bm25(terms(query)), built.bm25(terms(query))), query
    assert compacted.bm25(terms("sharks"))[9] > 0


@pytest.mark.parametrize(
    ("query", "start", "end"),
    [
        ("what did I cook yesterday", datetime(2023, 6, 13), datetime(2023, 6, 14)),
        ("plans from last week", datetime(2023, 6, 5), datetime(2023, 6, 12)),
        ("the trip in May", datetime(2023, 5, 1), datetime(2023, 6, 1)),
        ("the trip in May 2022", datetime(2022, 5, 1), datetime(2022, 6, 1)),
        ("in December", datetime(2022, 12, 1), datetime(2023, 1, 1)),
        ("last month", datetime(2023, 5, 1), datetime(2023, 6, 1)),
        ("on Monday", datetime(2023, 6, 12), datetime(2023, 6, 13)),
        ("what happened in 2021", datetime(2021, 1, 1), datetime(2022, 1, 1)),
        ("the day before yesterday", datetime(2023, 6, 12), datetime(2023, 6, 13)),
        ("what did we eat last night", datetime(2023, 6, 13, 18), datetime(2023, 6, 14, 6)),
        # a named day, and the days it is told in ("I went to Boston yesterday")
        (
            "Which city was Calvin at on October 3, 2022?",
            datetime(2022, 10, 3),
            datetime(2022, 10, 6),
        ),
        ("on 30 August, 2022", datetime(2022, 8, 30), datetime(2022, 9, 2)),
        ("the 5th of June", datetime(2023, 6, 5), datetime(2023, 6, 8)),
        ("on June 20th", datetime(2022, 6, 20), datetime(2022, 6, 23)),  # not yet this year
        ("notes from 2023-02-28", datetime(2023, 2, 28), datetime(2023, 3, 3)),
        ("last summer", datetime(2022, 6, 1), datetime(2022, 9, 1)),  # this one is under way
        ("in the spring", datetime(2023, 3, 1), datetime(2023, 6, 1)),
        ("the winter of 2022", datetime(2022, 12, 1), datetime(2023, 3, 1)),
        ("towards the end of summer 2021", datetime(2021, 6, 1), datetime(2021, 9, 1)),
        ("between April and June", datetime(2023, 4, 1), datetime(2023, 7, 1)),
        ("from November to February", datetime(2022, 11, 1), datetime(2023, 3, 1)),
    ],
)
def test_time_expressions_resolve_against_now(query: str, start: datetime, end: datetime) -> None:
    window = resolve_time(query, NOW)
    assert window is not None
    assert (window.start, window.end) == (start.replace(tzinfo=UTC), end.replace(tzinfo=UTC))


def test_relative_ago_is_a_window_around_the_day() -> None:
    window = resolve_time("we met 3 days ago", NOW)
    assert window is not None
    assert window.start <= datetime(2023, 6, 11, tzinfo=UTC) < window.end


@pytest.mark.parametrize(
    "query",
    [
        "May I ask you something?",
        "what is my name",
        "mar",
        "I may 5 times",  # the verb, written small
        "we fall 2 times",  # a season's name alone is a verb, a noun or a name
        "spring cleaning",
        "Summer Smith called",
        "on 2023-02-30",  # no such day
    ],
)
def test_text_without_a_time_expression_resolves_to_nothing(query: str) -> None:
    assert resolve_time(query, NOW) is None


@pytest.mark.parametrize("query", ["tea yesterday", "tea last week", "tea 3 days ago"])
def test_a_time_before_the_calendar_begins_resolves_to_nothing(query: str) -> None:
    assert resolve_time(query, datetime(1, 1, 1, tzinfo=UTC)) is None


def test_fusion_is_a_weighted_mean_and_modes_isolate_one_signal() -> None:
    weights = Weights(bm25=1.0, dense=3.0)
    fused = fuse({"bm25": np.array([1.0, 0.0]), "dense": np.array([0.0, 1.0])}, weights)
    assert fused.tolist() == pytest.approx([0.25, 0.75])
    only = Weights.for_mode("bm25")
    assert only.bm25 == 1 and only.dense == 0 and only.session == 0
    assert scale_to_max(np.array([2.0, 1.0], dtype=np.float32)).tolist() == [1.0, 0.5]
    with pytest.raises(Invalid):
        Weights.for_mode("sparse")
    with pytest.raises(Invalid):
        Weights(bm25=0, dense=0)


def test_filtered_search_above_the_ann_threshold_keeps_to_the_filter() -> None:
    from memvault.retrieval.search import Query, search_index

    index = UserIndex(HashingEmbedder(1024), ann_threshold=50)
    index.add(
        [_turn(i, f"log entry {i} about subject{i}", session=f"s{i % 4}") for i in range(200)]
    )
    request = Query(text="subject123", limit=5, filters=Filters(session_id="s3", now=NOW), now=NOW)
    hits = search_index(index, request, Weights.for_mode("dense"))
    assert hits and hits[0].id == "t123"
    assert {h.session_id for h in hits} == {"s3"}

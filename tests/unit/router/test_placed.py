"""The ledger of copies this router placed on peers (mmesh.router.placed)."""

from __future__ import annotations

from mmesh.core.records import InstanceRecord
from mmesh.router.placed import Placements

PEER = InstanceRecord(capacity_units=100, used_units=10, model_count=1, loading_threads=1)


def test_a_placement_counts_as_a_copy_and_a_queued_load_until_its_call_answers() -> None:
    ledger = Placements(load_s=0.75, memory_s=2.0)
    ledger.note("b", 5, now=10.0)
    ledger.note("b", 7, now=10.1)
    seen = ledger.adjusted("b", PEER, revision=40, now=10.2)
    assert (seen.used_units, seen.model_count, seen.loads_in_progress) == (22, 3, 2)
    assert ledger.adjusted("c", PEER, revision=41, now=10.2) is PEER


def test_an_answered_placement_is_no_load_queued_any_more() -> None:
    ledger = Placements()
    placement = ledger.note("b", 5, now=10.0)
    placement.answered(revision=40)
    seen = ledger.adjusted("b", PEER, revision=40, now=10.1)
    assert seen.loads_in_progress == 0  # the peer's loader is free: it answered
    assert (seen.used_units, seen.model_count) == (15, 2)  # its record does not show it yet


def test_the_peers_next_record_after_the_answer_shows_the_copy() -> None:
    ledger = Placements()
    placement = ledger.note("b", 5, now=10.0)
    placement.answered(revision=40)
    assert ledger.adjusted("b", PEER, revision=41, now=10.3) is PEER
    assert not ledger  # forgotten


def test_a_record_published_before_the_answer_does_not_clear_it() -> None:
    ledger = Placements()
    placement = ledger.note("b", 5, now=10.0)
    assert ledger.adjusted("b", PEER, revision=41, now=10.02).model_count == 2  # unanswered
    placement.answered(revision=41)
    assert ledger.adjusted("b", PEER, revision=41, now=10.1).model_count == 2


def test_limits_hold_when_no_answer_or_record_comes() -> None:
    ledger = Placements(load_s=0.75, memory_s=2.0)
    ledger.note("b", 5, now=10.0)
    assert ledger.adjusted("b", PEER, revision=40, now=10.8).loads_in_progress == 0
    assert ledger.adjusted("b", PEER, revision=40, now=11.9).model_count == 2
    assert ledger.adjusted("b", PEER, revision=40, now=12.0) is PEER
    assert not ledger


def test_a_peer_that_had_no_record_at_the_answer_shows_it_in_its_first() -> None:
    ledger = Placements()
    placement = ledger.note("b", 5, now=10.0)
    placement.answered(revision=None)
    assert ledger.adjusted("b", PEER, revision=None, now=10.1).model_count == 2
    assert ledger.adjusted("b", PEER, revision=3, now=10.2) is PEER

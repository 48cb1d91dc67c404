"""Expiry by observation (shared/kubeleases.py): a Lease is expired when this replica has seen the same
resourceVersion for a whole TTL of its own clock — never by the renewTime another machine wrote — and
the names of the Lease objects."""

from __future__ import annotations

import pytest

from shared.kubeleases import Observations, key_of, object_name

TTL = 15.0


def test_a_lease_seen_unchanged_for_a_whole_ttl_is_expired() -> None:
    seen = Observations(TTL)
    assert seen.see("wva-scaler-0", "7", now=100.0) is False  # first sight: the clock starts now
    assert seen.expired("wva-scaler-0", now=100.0) is None
    assert seen.see("wva-scaler-0", "7", now=105.0) is False
    assert seen.see("wva-scaler-0", "7", now=114.999) is False  # not a whole TTL yet
    assert seen.expired("wva-scaler-0", now=114.999) is None
    assert seen.see("wva-scaler-0", "7", now=115.0) is True
    assert seen.expired("wva-scaler-0", now=115.0) == "7"  # the version to take it over with


def test_a_renewal_restarts_the_clock() -> None:
    seen = Observations(TTL)
    seen.see("wva-scaler-0", "7", now=100.0)
    assert seen.see("wva-scaler-0", "9", now=114.0) is False  # renewed (a new resourceVersion)
    assert seen.see("wva-scaler-0", "9", now=128.0) is False  # 14 s after the renewal was first seen
    assert seen.see("wva-scaler-0", "9", now=129.0) is True


def test_a_replica_that_just_started_waits_a_whole_ttl_however_old_the_lease_looks() -> None:
    # The Lease may have been renewed last an hour ago by another machine's clock; this replica cannot
    # know how its clock relates to ours, so only its own observation counts.
    seen = Observations(TTL)
    assert seen.see("wva-scaler-0", "7", now=5.0) is False
    assert seen.expired("wva-scaler-0", now=19.0) is None
    assert seen.expired("wva-scaler-0", now=20.0) == "7"


def test_an_object_deleted_and_created_again_is_a_new_observation() -> None:
    seen = Observations(TTL)
    seen.see("wva-scaler-0", "7", now=0.0)
    seen.keep_only(set())  # the list no longer showed it
    assert seen.expired("wva-scaler-0", now=100.0) is None
    assert seen.see("wva-scaler-0", "7", now=100.0) is False


@pytest.mark.parametrize(
    ("key", "service", "name"),
    [
        ("scaler.3", "scaler", "wva-scaler-3"),
        ("watcher.watcher", "watcher", "wva-watcher-watcher"),
        ("members.fetcher.fetcher-7d9f-a1b2c3", "fetcher", "wva-members-fetcher-fetcher-7d9f-a1b2c3"),
    ],
)
def test_lease_names_are_dns_names_and_map_back_to_their_keys(key: str, service: str, name: str) -> None:
    assert object_name(key) == name
    assert key_of(name, service) == key
    assert len(name) <= 253 and name == name.lower()


def test_a_name_wva_does_not_give_maps_to_no_key() -> None:
    assert key_of("some-other-lease", "scaler") is None
    assert key_of("wva-fetcher-3", "scaler") is None

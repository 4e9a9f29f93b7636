"""The guards' rows on each engine: a TSIG request is accepted once, and never when one
signed later with its key was (RFC 8945 5.2.3), until its time has passed; the
throttle counts per address and claim in windows, blocks at a limit, resets, lists and
clears."""

from __future__ import annotations

import threading

from controparte.store import Store, ThrottleEntry

NOW = 1_700_000_000.0
FUDGE = 300


def accept(store: Store, mac: bytes, signed: int, *, key: str = "k.", now: float = NOW) -> bool:
    return store.accept_tsig(key, mac, signed, signed + FUDGE, now)


def test_a_signed_request_is_accepted_once(store: Store) -> None:
    assert accept(store, b"mac-1", int(NOW))
    assert not accept(store, b"mac-1", int(NOW))  # the same bytes again
    assert accept(store, b"mac-2", int(NOW))  # another request signed in the same second
    assert accept(store, b"mac-1", int(NOW), key="other.")  # keys are apart


def test_a_request_signed_before_an_accepted_one_is_refused(store: Store) -> None:
    assert accept(store, b"later", int(NOW) + 10)
    assert not accept(store, b"earlier", int(NOW))
    assert accept(store, b"later-still", int(NOW) + 11)


def test_accepted_requests_are_forgotten_once_their_time_passed(store: Store) -> None:
    assert accept(store, b"mac", int(NOW))
    after = NOW + FUDGE + 1  # the request itself is out of its time range then
    assert accept(store, b"mac", int(NOW), now=after)  # forgotten: the store stays small


def test_concurrent_acceptances_of_one_request_let_one_through(store: Store) -> None:
    results: list[bool] = []
    lock = threading.Lock()

    def one() -> None:
        ok = accept(store, b"raced", int(NOW))
        with lock:
            results.append(ok)

    threads = [threading.Thread(target=one) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [False] * 5 + [True]


def fail(store: Store, address: str = "192.0.2.1", now: float = NOW) -> list[ThrottleEntry]:
    return store.auth_failed(address, [("a-1", 3), ("", 5)], 60.0, 300.0, now)


def test_failures_are_counted_per_claim_and_per_address(store: Store) -> None:
    assert [(e.claim, e.failures, e.blocked_until) for e in fail(store)] == [
        ("a-1", 1, 0.0),
        ("", 1, 0.0),
    ]
    fail(store)
    claim, address = fail(store)
    assert (claim.failures, claim.blocked_until) == (0, NOW + 300)  # the limit of 3 blocks
    assert (address.failures, address.blocked_until) == (3, 0.0)
    store.auth_failed("192.0.2.1", [("b-2", 3), ("", 5)], 60.0, 300.0, NOW)
    _, address = store.auth_failed("192.0.2.1", [("b-2", 3), ("", 5)], 60.0, 300.0, NOW)
    assert address.blocked_until == NOW + 300  # five in all from the address
    assert [(e.address, e.claim) for e in store.throttle_entries()] == [
        ("192.0.2.1", ""),
        ("192.0.2.1", "a-1"),
        ("192.0.2.1", "b-2"),
    ]


def test_a_count_starts_again_after_its_window(store: Store) -> None:
    fail(store)
    fail(store)
    claim, _ = fail(store, now=NOW + 61)
    assert (claim.failures, claim.window_start, claim.blocked_until) == (1, NOW + 61, 0.0)


def test_reset_clear_and_forgetting(store: Store) -> None:
    fail(store)
    fail(store, "198.51.100.1")
    store.auth_reset("192.0.2.1", "a-1", NOW)
    assert {(e.address, e.claim) for e in store.throttle_entries()} == {
        ("192.0.2.1", ""),
        ("198.51.100.1", ""),
        ("198.51.100.1", "a-1"),
    }
    assert store.throttle_clear("198.51.100.1") == 2
    assert store.throttle_clear("198.51.100.1") == 0
    for _ in range(3):
        fail(store)
    store.auth_reset("192.0.2.1", "a-1", NOW)  # blocked: a success does not lift it
    assert ("192.0.2.1", "a-1") in {(e.address, e.claim) for e in store.throttle_entries()}
    fail(store, "203.0.113.1", now=NOW + 400)  # the others are neither counting nor blocked
    assert {e.address for e in store.throttle_entries()} == {"203.0.113.1"}

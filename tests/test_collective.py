"""rft_common.collective: the rendezvous both ends of a collective weight transfer use."""

from __future__ import annotations

import threading

import psutil
import pytest
from rft_common import collective


def listening_addresses(port: int) -> set[str]:
    return {c.laddr.ip for c in psutil.net_connections("tcp") if c.status == "LISTEN" and c.laddr.port == port}


def test_the_store_listens_only_on_the_host_it_is_given() -> None:
    hosted = collective.HostedStore("127.0.0.1", 0, 10)
    assert listening_addresses(hosted.port) == {"127.0.0.1"}
    everywhere = collective.HostedStore("", 0, 10)
    assert listening_addresses(everywhere.port) == {"0.0.0.0"}


def test_the_sender_says_go_once_every_receiver_is_ready_and_the_keys_go_with_the_session() -> None:
    hosted = collective.HostedStore("127.0.0.1", 0, 10)
    sender = collective.session_store(hosted.store, "s1")
    receivers = [
        collective.session_store(collective.connect_store(f"127.0.0.1:{hosted.port}", 10), "s1") for _ in range(2)
    ]
    went = []
    threads = [threading.Thread(target=lambda r=r: went.append(collective.wait_for_go(r, 10))) for r in receivers]
    for rank, (receiver, thread) in enumerate(zip(receivers, threads, strict=True), start=1):
        collective.announce_ready(receiver, rank)
        thread.start()
    assert collective.wait_until_ready(sender, 3, 10, lambda: False) is True
    for thread in threads:
        thread.join(10)
    assert went == [True, True]
    collective.delete_session(hosted.store, "s1")
    assert not [key for key in hosted.store.list_keys() if key.startswith("s1/")]


def test_a_sender_that_gives_up_lets_an_announced_receiver_leave() -> None:
    hosted = collective.HostedStore("127.0.0.1", 0, 10)
    sender = collective.session_store(hosted.store, "s2")
    receiver = collective.session_store(collective.connect_store(f"127.0.0.1:{hosted.port}", 10), "s2")
    assert collective.wait_until_ready(sender, 2, 10, lambda: True) is False  # the call ended first
    assert collective.wait_for_go(receiver, 10) is False
    with pytest.raises(TimeoutError):
        collective.wait_until_ready(collective.session_store(hosted.store, "s3"), 2, 0.3, lambda: False)


def test_ready_receivers_get_their_group_even_if_the_call_ends_at_that_moment() -> None:
    hosted = collective.HostedStore("127.0.0.1", 0, 10)
    sender = collective.session_store(hosted.store, "s4")
    collective.announce_ready(sender, 1)
    assert collective.wait_until_ready(sender, 2, 10, lambda: True) is True


def test_a_finished_transfer_s_keys_are_deleted_once_its_timeout_has_passed() -> None:
    from rft_learner.weight_sync import _forget_later

    hosted = collective.HostedStore("127.0.0.1", 0, 10)
    old, recent = collective.session_store(hosted.store, "old"), collective.session_store(hosted.store, "recent")
    old.set("ready/1", "1")
    recent.set("ready/1", "1")
    _forget_later(hosted.store, "recent", 60)  # a receiver may still read it: kept
    _forget_later(hosted.store, "old", -10)  # its time has passed: deleted now
    keys = hosted.store.list_keys()
    assert "recent/ready/1" in keys and not [key for key in keys if key.startswith("old/")]

"""wgns.profile.model: frozen dataclasses, and a Secret that never shows its value."""

from __future__ import annotations

import dataclasses

import pytest

from wgns.profile.model import Endpoint, Interface, Peer, Profile, Secret

KEY = "YDw4916Jl80PEEcRL378XR/Ze6WtldDnATf7kaBvQGE="


def test_the_model_is_frozen_dataclasses_changed_with_replace() -> None:
    e = Endpoint("vpn.example.test", 51820)
    assert str(e) == "vpn.example.test:51820"
    assert str(Endpoint("2001:db8::1", 51820)) == "[2001:db8::1]:51820"
    peer = Peer("key", endpoint=e)
    moved = dataclasses.replace(peer, endpoint=Endpoint("198.18.0.1", 1))
    assert moved.endpoint == Endpoint("198.18.0.1", 1)
    assert peer.endpoint == e  # the original is unchanged
    with pytest.raises(dataclasses.FrozenInstanceError):
        peer.public_key = "other"  # type: ignore[misc]
    with pytest.raises(TypeError):
        dataclasses.replace(peer, no_such_field=1)  # type: ignore[call-arg]
    for cls in (Endpoint, Peer, Interface, Profile):
        assert dataclasses.is_dataclass(cls)
        assert cls.__dataclass_params__.frozen  # type: ignore[attr-defined]


def test_records_compare_and_hash_by_their_fields() -> None:
    assert Peer("key", line=3) == Peer(public_key="key", line=3)
    assert Peer("key", line=3) != Peer("key", line=4)
    assert len({Peer("key"), Peer("key"), Peer("other")}) == 2


def test_a_secret_never_shows_its_value() -> None:
    secret = Secret(KEY)
    assert secret.reveal() == KEY
    assert secret == Secret(KEY) and hash(secret) == hash(Secret(KEY))
    iface = Interface(name="wg0", private_key=secret, peers=(Peer("pub", preshared_key=secret),))
    shown = [repr(secret), str(secret), f"{secret}", repr(iface), str(iface), repr(iface.peers)]
    for text in shown:
        assert KEY not in text and KEY[:20] not in text
    assert "Secret(<hidden>)" in repr(iface)

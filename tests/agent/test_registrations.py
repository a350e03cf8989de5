"""The CNI registrations file: what is saved comes back whole, a bad file is refused, and a
registration whose pod is gone is told apart from one whose pod is there."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fqdnpolicy.agent.registrations import (
    Registration,
    RegistrationStore,
    StateFileError,
    restore,
    still_there,
)
from fqdnpolicy.cluster import Cluster, Endpoint

POD = Registration("c1", "default", "web", ["198.51.100.130"], "veth1234", "/run/netns/p1")
text = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=20)


@given(
    st.lists(
        st.builds(Registration, text, text, text, st.lists(text, max_size=3), text, text),
        max_size=5,
    )
)
def test_what_is_saved_is_what_is_loaded(registrations: list[Registration]) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as directory:
        store = RegistrationStore(Path(directory) / "sub" / "state.json")
        store.save(registrations)
        assert store.load() == registrations
        assert os.listdir(Path(directory) / "sub") == ["state.json"]  # no temporary left


def test_no_file_is_no_registration(tmp_path: Path) -> None:
    assert RegistrationStore(tmp_path / "absent.json").load() == []


def test_a_failed_save_keeps_the_old_file_and_leaves_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = RegistrationStore(tmp_path / "state.json")
    store.save([POD])

    def refuse(*_: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(OSError, match="No space"):
        store.save([])
    monkeypatch.undo()
    assert store.load() == [POD]
    assert os.listdir(tmp_path) == ["state.json"]


@pytest.mark.parametrize(
    ("content", "fault"),
    [
        ("{not json", "state.json"),
        ("[]", "not a version 1 registrations file"),
        (json.dumps({"version": 1, "registrations": [{"name": "x"}]}), r"registrations\[0\]"),
        (
            json.dumps({"version": 1, "registrations": [{**POD.as_json(), "ips": "x"}]}),
            "a list of strings",
        ),
    ],
)
def test_a_bad_file_is_refused_naming_it_and_restores_nothing(
    tmp_path: Path, content: str, fault: str, caplog: pytest.LogCaptureFixture
) -> None:
    store = RegistrationStore(tmp_path / "state.json")
    store.path.write_text(content)
    with pytest.raises(StateFileError, match=fault):
        store.load()
    with caplog.at_level(logging.ERROR):
        assert restore(store, None) == ([], [])
    assert "state.json" in caplog.text


def test_a_file_without_netns_still_loads(tmp_path: Path) -> None:
    store = RegistrationStore(tmp_path / "state.json")
    entry = POD.as_json()
    del entry["netns"]
    store.path.write_text(json.dumps({"version": 1, "registrations": [entry]}))
    assert store.load() == [Registration("c1", "default", "web", ["198.51.100.130"], "veth1234")]


def test_a_pod_is_there_while_its_interface_and_namespace_are(tmp_path: Path) -> None:
    netns = tmp_path / "netns"
    netns.touch()
    here = Registration("c", "default", "web", ["198.51.100.130"], "lo", str(netns))
    assert still_there(here)
    assert not still_there(Registration("c", "default", "web", [], "fqnone0", str(netns)))
    netns.unlink()
    assert not still_there(here)
    assert still_there(Registration("c", "default", "web", [], "lo"))  # no namespace recorded


def test_restore_keeps_the_pods_still_there_and_drops_the_others(tmp_path: Path) -> None:
    store = RegistrationStore(tmp_path / "state.json")
    kept = Registration("c1", "default", "web", ["198.51.100.130"], "lo")
    gone = Registration("c2", "default", "old", ["198.51.100.131"], "fqnone0")
    store.save([kept, gone])
    assert restore(store, None) == ([kept], [gone])


def test_a_registration_takes_its_labels_from_the_cluster() -> None:
    cluster = Cluster([Endpoint("web", "default", {"app": "web"}, ips=["198.51.100.1"])])
    endpoint = POD.endpoint(cluster)
    assert (endpoint.key, endpoint.labels, endpoint.interface) == (
        "default/web",
        {"app": "web"},
        "veth1234",
    )
    assert endpoint.ips == ("198.51.100.130",)
    assert POD.endpoint(Cluster()).labels == {}

"""The controller's overlay: what it wrote, shown until the watch delivers it, objects it created included."""

from __future__ import annotations

from kubehull_operator.controller import CREATION_HOLD, Overlay
from kubehull_operator.reconcile.model import NodeRecord


def record(name: str, version: str) -> NodeRecord:
    return NodeRecord(name=name, uid=f"uid-{name}", resource_version=version, labels={})


def test_a_created_object_is_shown_until_the_watch_indexes_it() -> None:
    overlay = Overlay()
    overlay.record("Node", "new", None, record("new", "5"))
    assert overlay.created("Node", {}) == {"new": record("new", "5")}
    assert overlay.created("NodeRuntime", {}) == {}
    indexed = {"new": [record("new", "5")]}
    assert overlay.created("Node", indexed) == {}  # the watch has it: the index speaks
    assert overlay.view("Node", "new", indexed["new"][0]) == record("new", "5")


def test_an_update_is_shown_until_the_watch_moves_past_the_version_it_replaced() -> None:
    overlay = Overlay()
    overlay.record("Node", "a", "1", record("a", "2"))
    assert overlay.view("Node", "a", record("a", "1")) == record("a", "2")
    assert overlay.view("Node", "a", record("a", "2")) == record("a", "2")
    assert overlay.view("Node", "a", record("a", "1")) == record("a", "1")  # forgotten once caught up


def test_a_forgotten_object_is_not_shown() -> None:
    overlay = Overlay()
    overlay.record("Node", "gone", None, record("gone", "3"))
    overlay.forget("Node", "gone")  # a write found it gone (404) before the watch ever showed it
    assert overlay.created("Node", {}) == {}


def test_a_creation_the_watch_never_shows_is_shown_for_a_minute_at_most() -> None:
    """Created, then deleted while the watch was cut and before its event came: the relist that follows does
    not list it, and no event ever will; the overlay must not keep it alive (the operator would never create it
    again)."""
    now = [1000.0]
    overlay = Overlay(clock=lambda: now[0])
    overlay.record("NodeRuntime", "lost", None, record("lost", "7"))
    now[0] += CREATION_HOLD - 1
    assert overlay.created("NodeRuntime", {}) == {"lost": record("lost", "7")}
    now[0] += 2
    assert overlay.created("NodeRuntime", {}) == {}
    overlay.record("NodeRuntime", "lost", None, record("lost", "9"))  # created again: shown again
    assert overlay.created("NodeRuntime", {}) == {"lost": record("lost", "9")}

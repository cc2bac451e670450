"""The controller's mirror of a kind kopf does not index: complete only once the watch showed what a list did."""

from __future__ import annotations

from kubehull_operator.mirror import Mirror
from kubehull_operator.reconcile.model import node_record, node_runtime_record


def node(name: str, version: str = "1") -> dict[str, object]:
    return {"metadata": {"name": name, "uid": f"uid-{name}", "resourceVersion": version}}


def test_complete_once_the_watch_showed_every_listed_object() -> None:
    mirror = Mirror(node_record)
    mirror.apply(None, "a", node("a"))
    assert not mirror.complete()  # nothing listed yet: the watch may have more to show
    mirror.expect({"a", "b", "c"})
    assert (mirror.complete(), mirror.missing) == (False, 2)
    mirror.apply("ADDED", "b", node("b"))
    mirror.apply("DELETED", "c", node("c"))  # shown, if only to go
    assert mirror.complete()
    assert [name for name, _ in mirror.items()] == ["a", "b"]
    mirror.expect({"z"})  # complete for good: later lists change nothing
    assert mirror.complete()


def test_an_object_deleted_before_the_watch_listed_it_is_expected_no_more_after_a_new_list() -> None:
    mirror = Mirror(node_record)
    mirror.expect({"a", "gone"})
    mirror.apply(None, "a", node("a"))
    assert not mirror.complete()
    mirror.expect({"a"})
    assert mirror.complete()


def test_reads_like_a_kopf_index_with_the_latest_record() -> None:
    mirror = Mirror(node_record)
    mirror.apply(None, "a", node("a", "1"))
    mirror.apply("MODIFIED", "a", node("a", "2"))
    (record,) = mirror["a"]
    assert record.resource_version == "2"
    mirror.apply("DELETED", "a", node("a", "2"))
    assert mirror.items() == []


def test_an_object_that_does_not_parse_is_left_out_but_counts_as_shown() -> None:
    mirror = Mirror(node_runtime_record)
    mirror.expect({"bad"})
    mirror.apply(None, "bad", {"metadata": {"name": "bad"}, "spec": {"handlers": [{"name": "Not A Label"}]}})
    assert mirror.items() == []
    assert mirror.complete()  # the operator is not held back by it for good

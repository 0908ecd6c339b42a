"""Custom model factories ('package.module:factory') for the tests: models as a data scientist
might write them, including one that fails half-way through learning."""

from __future__ import annotations

from typing import Any

from river import tree


class ExplodingTree(tree.HoeffdingTreeClassifier):
    """Learns, then raises when the feature 'boom' is set: a model that fails after it changed."""

    def learn_one(self, x: dict[str, Any], y: Any, **kwargs: Any) -> None:
        super().learn_one(x, y, **kwargs)
        if x.get("boom"):
            raise RuntimeError("boom after learning")


def exploding_tree() -> ExplodingTree:
    return ExplodingTree(max_depth=10)


def plain_tree() -> tree.HoeffdingTreeClassifier:
    """What ExplodingTree is on every event that does not explode: the oracle's model."""
    return tree.HoeffdingTreeClassifier(max_depth=10)

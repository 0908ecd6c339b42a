"""A River model whose snapshot weighs ~60 MB (incompressible ballast), for the size-limit tests."""

from __future__ import annotations

import os

from river import tree

BALLAST_BYTES = 60 * 1024 * 1024


class BallastedTree(tree.HoeffdingTreeClassifier):
    """A Hoeffding tree carrying random bytes: predictions are the tree's, the pickle is big."""

    def __init__(self, ballast: bytes = b"") -> None:
        super().__init__(max_depth=10)
        self.ballast = ballast


def factory() -> BallastedTree:
    return BallastedTree(os.urandom(BALLAST_BYTES))

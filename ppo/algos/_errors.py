"""Errors raised by the PPO algorithm registries.

Both subclass :class:`KeyError` (an unknown name *is* a failed lookup), but render their message
as plain text instead of ``KeyError``'s ``repr`` of the key::

    KeyError
    └── UnknownNameError                  base: carries ``name`` and the sorted ``known`` names
        ├── UnknownEstimatorError         no advantage estimator registered under that name
        └── UnknownPolicyLossError        no policy loss registered under that name
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["UnknownEstimatorError", "UnknownNameError", "UnknownPolicyLossError"]


class UnknownNameError(KeyError):
    """A registry lookup for a name that was never registered.

    Attributes:
        name: the name that was looked up.
        known: the registered names at the time of the lookup, sorted.
    """

    kind: str = "name"

    def __init__(self, name: str, known: Iterable[str]) -> None:
        self.name = name
        self.known: tuple[str, ...] = tuple(sorted(known))
        super().__init__(name)

    def __reduce__(self) -> tuple[type[UnknownNameError], tuple[str, tuple[str, ...]]]:
        # Keep the error picklable (it may cross a process boundary inside a remote worker).
        """Pickle as ``(cls, (name, known))`` so the error survives process boundaries."""
        return (type(self), (self.name, self.known))

    def __str__(self) -> str:
        """The message: the unknown name and the registered ones."""
        options = ", ".join(repr(k) for k in self.known) or "(none registered)"
        return (
            f"unknown {self.kind} {self.name!r}; known: {options}. "
            f"Register your own with the matching register_* decorator."
        )


class UnknownEstimatorError(UnknownNameError):
    """No advantage estimator is registered under the requested name."""

    kind = "advantage estimator"


class UnknownPolicyLossError(UnknownNameError):
    """No policy loss is registered under the requested name."""

    kind = "policy loss"

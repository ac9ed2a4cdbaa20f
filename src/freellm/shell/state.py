"""The one writer of the router state.

Every change to what the router knows (a reservation, a settlement, a probe's verdict, keys
added or removed, a new chain) is a pure transition of the core, ``RouterState -> RouterState``,
applied here and nowhere else. Between reading the state and replacing it there is no ``await``,
so trio's single thread makes every transition atomic: no check-then-act races, no locks.
"""

from __future__ import annotations

from collections.abc import Callable

from freellm.core.router import RouterState

__all__ = ["StateHolder", "Transition"]

Transition = Callable[[RouterState], RouterState]


class StateHolder:
    """Holds the current :class:`~freellm.core.router.RouterState`; :meth:`apply` replaces it."""

    def __init__(self, state: RouterState) -> None:
        self._state = state

    @property
    def state(self) -> RouterState:
        return self._state

    def apply(self, transition: Transition) -> RouterState:
        """Replace the state with ``transition(state)`` and return it. A transition that raises
        changes nothing."""
        self._state = transition(self._state)
        return self._state

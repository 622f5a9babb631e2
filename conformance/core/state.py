"""A layer's state as named fields: :class:`State`.

Which fields a layer has is its operator's and convention's business (BatchNorm: ``gamma``, ``beta`` and
the convention's running fields, ``running_mean``, ``running_var`` and a counter such as
``num_batches_tracked``); the suite only moves them across the adapter protocol and compares them by name.
Arrays are float64 (per channel for BatchNorm), counters ints; ``eps`` and ``momentum`` are the
hyperparameters the layer holds, read-only facts a layer may report (``set_state`` ignores them).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

__all__ = ["HYPERPARAMETERS", "State"]

# Fields a layer reports about itself, never assigned: what it holds of the arguments it was built with.
HYPERPARAMETERS = ("eps", "momentum")


class State(Mapping):
    """Named fields (``State(gamma=..., running_mean=..., num_batches_tracked=3)``); a field the layer does
    not have reads as ``None``, as an attribute (``state.gamma``) or with :meth:`get`. Immutable: build a
    new one with :meth:`replace`."""

    def __init__(self, **fields: object) -> None:
        object.__setattr__(self, "_fields", dict(fields))

    def __getattr__(self, name: str) -> object:
        if name.startswith("_"):  # keeps copy and pickle protocols away from the fields
            raise AttributeError(name)
        return self._fields.get(name)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"State is immutable: use state.replace({name}=...)")

    def __getitem__(self, name: str) -> object:
        return self._fields[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._fields)

    def __len__(self) -> int:
        return len(self._fields)

    def __getstate__(self) -> dict:
        return self._fields

    def __setstate__(self, fields: dict) -> None:
        object.__setattr__(self, "_fields", fields)

    def replace(self, **changes: object) -> State:
        return State(**{**self._fields, **changes})

    def assigned(self) -> dict[str, object]:
        """The fields ``set_state`` assigns: those with a value, hyperparameters aside."""
        return {k: v for k, v in self._fields.items() if v is not None and k not in HYPERPARAMETERS}

    def __repr__(self) -> str:
        return f"State({', '.join(f'{k}={v!r}' for k, v in self._fields.items())})"

"""What the report says about GroupNorm and InstanceNorm: the conventions table's columns and the porting
cheat-sheet's rows, read off :class:`reference.GroupNormConvention` records as the report's JSON holds them."""

from __future__ import annotations

from reference import INSTANCE

from .. import Vocabulary

__all__ = ["VOCABULARY"]

_AXIS = {1: "first (N, C, ...)", -1: "last (N, ..., C)"}


def _default(value: object) -> str:
    return "required (no default)" if value == "required" else "not observed" if value is None else str(value)


def _groups(value: object) -> str:
    return "one per channel (InstanceNorm)" if value == INSTANCE else _default(value)


def conventions(conv: dict, observed: dict, behaviour: dict) -> dict[str, str]:
    """The conventions table's columns for one record, with the defaults the constructor really has."""
    return {
        "default eps": _default(observed.get("eps")),
        "default groups": _groups(observed.get("groups", conv["default_groups"])),
        "channel axis": _AXIS[conv["channel_axis"]],
        "scale by default": _default(observed.get("affine")),
        "bias by default": _default(observed.get("bias")),
        "scale and bias": f"per {conv['parameter_shape']}",
    }


def translation(src: dict, dst: dict) -> dict[str, str]:
    """How each setting carries from ``src`` to ``dst``: no running state, so a port is eps, the groups, the
    channel position and the parameters."""
    eps = (f"same default {_default(src['default_eps'])}" if src["default_eps"] == dst["default_eps"]
           else f"pass the source's eps (defaults {_default(src['default_eps'])} -> {_default(dst['default_eps'])})")
    if src["default_groups"] == dst["default_groups"]:
        groups = "same default"
    elif dst["default_groups"] == INSTANCE:
        groups = "the target has one group per channel: only a source with groups = channels carries"
    else:
        groups = (f"pass the source's groups (defaults {_groups(src['default_groups'])} -> "
                  f"{_groups(dst['default_groups'])})")
    axis = ("same" if src["channel_axis"] == dst["channel_axis"]
            else f"move the channel axis: {_AXIS[src['channel_axis']]} -> {_AXIS[dst['channel_axis']]}")
    if src["parameter_shape"] == dst["parameter_shape"]:
        parameters = f"copy gamma and beta (per {src['parameter_shape']})"
    elif dst["parameter_shape"] == "group":
        parameters = "the target's gamma and beta are per group: only parameters equal within each group carry"
    else:
        parameters = "repeat each group's gamma and beta over its channels"
    return {"eps": eps, "groups": groups, "channel axis": axis, "parameters": parameters}


VOCABULARY = Vocabulary(conventions=conventions, translation=translation)

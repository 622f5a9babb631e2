"""What the report says about LayerNorm: the conventions table's columns and the porting cheat-sheet's
rows, read off :class:`reference.LayerNormConvention` records as the report's JSON holds them."""

from __future__ import annotations

from .. import Vocabulary

__all__ = ["VOCABULARY"]

_PLACEMENT = {"variance": "inside the root: sqrt(var + eps)", "std": "outside: sqrt(var) + eps"}


def _default(value: object) -> str:
    return "required (no default)" if value == "required" else "not observed" if value is None else str(value)


def _axes(value: object) -> str:
    if value == "required":
        return "required (normalized_shape)"
    return "the last axis" if value == -1 else f"the last {-int(value)} axes"


def conventions(conv: dict, observed: dict, behaviour: dict) -> dict[str, str]:
    """The conventions table's columns for one record, with the defaults the constructor really has."""
    return {
        "default eps": _default(observed.get("eps")),
        "eps placement": _PLACEMENT[conv["eps_placement"]],
        "default normalized axes": _axes(observed.get("axes", conv["default_axes"])),
        "scale by default": _default(observed.get("affine")),
        "bias by default": _default(observed.get("bias")),
    }


def translation(src: dict, dst: dict) -> dict[str, str]:
    """How each setting carries from ``src`` to ``dst``: LayerNorm keeps no running state, so a port is its
    eps, its axes and its parameters."""
    eps = (f"same default {_default(src['default_eps'])}" if src["default_eps"] == dst["default_eps"]
           else f"pass the source's eps (defaults {_default(src['default_eps'])} -> {_default(dst['default_eps'])})")
    if src["eps_placement"] != dst["eps_placement"]:
        eps += "; eps is placed differently: no eps gives the same output for every input"
    axes = ("same default" if src["default_axes"] == dst["default_axes"]
            else f"name the axes: {_axes(src['default_axes'])} -> {_axes(dst['default_axes'])}")
    return {"eps": eps, "normalized axes": axes,
            "parameters": "copy gamma and beta (the normalized axes' shape, flattened where the target takes "
                          "one axis)"}


VOCABULARY = Vocabulary(conventions=conventions, translation=translation)

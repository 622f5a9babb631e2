"""What the report says about BatchNorm: the conventions table's columns and the porting cheat-sheet's
translations, both read off convention records as the report's JSON holds them
(:meth:`reference.Convention.as_dict`: a missing default is ``"required"``)."""

from __future__ import annotations

from .. import Vocabulary
from .cases import ONE_VALUE_PER_CHANNEL

__all__ = ["VOCABULARY"]

ONE_VALUE = "one_value_per_channel"


def _default(value: object) -> str:
    return "required (no default)" if value == "required" else "not observed" if value is None else str(value)


def _running_state(conv: dict) -> str:
    """How the record keeps its running averages, in words."""
    spread = "standard deviation" if conv["averaged_spread"] == "std" else "variance"
    text = f"{'unbiased n/(n-1)' if conv['running_var_ddof'] else 'biased'} {spread}"
    if conv["debiased"]:
        text += f", debiased by 1 - (1 - w)^{conv['counter']}"
    if conv["counter"]:
        text += f"; counter {conv['counter']}"
    return text


def conventions(conv: dict, observed: dict, behaviour: dict) -> dict[str, str]:
    """The conventions table's columns for one record, with the defaults the constructor really has."""
    return {
        "momentum weights": "new batch" if conv["momentum_weights"] == "new" else "old value",
        "default momentum": _default(observed.get("momentum")),
        "default eps": _default(observed.get("eps")),
        "default channel axis": _default(observed.get("channel_axis")),
        "running state": _running_state(conv),
        "one value per channel (training)": behaviour.get(ONE_VALUE, "not observed"),
    }


def translation(src: dict, dst: dict) -> dict[str, str]:
    """How each setting carries from convention ``src`` to ``dst`` (:func:`reference.port`)."""
    flip = src["momentum_weights"] != dst["momentum_weights"]
    momentum = "m -> 1 - m" if flip else "same meaning: keep m"
    if flip and isinstance(src["default_momentum"], float):
        momentum += f" (default {src['default_momentum']:g} -> {1 - src['default_momentum']:g})"
    if src["cumulative_momentum"] and not dst["cumulative_momentum"]:
        momentum += "; momentum=None (cumulative average) has no equivalent: pick a fixed m"
    eps = (f"same default {_default(src['default_eps'])}" if src["default_eps"] == dst["default_eps"]
           else f"pass the source's eps (defaults {_default(src['default_eps'])} -> {_default(dst['default_eps'])})")
    axis = (f"same default {_default(src['channel_axis'])}" if src["channel_axis"] == dst["channel_axis"]
            else f"move channels {_default(src['channel_axis'])} -> {_default(dst['channel_axis'])} in the inputs")
    state = "copy what inference reads: the mean and variance"
    if dst["averaged_spread"] == "std":
        state += " (its square root: the target averages the standard deviation)"
    if dst["debiased"]:
        state += f", times the target's debiasing factor at its {dst['counter']}"
    if src["running_var_ddof"] != dst["running_var_ddof"]:
        state += f"; further training stores the {_running_state(dst).split(';')[0]}"
    return {"momentum": momentum, "eps": eps, "channel axis": axis, "running state": state}


def roles(check: str, params: dict) -> str | None:
    """Training on one value per channel is what the conventions table reports of each implementation."""
    return ONE_VALUE if check == "edge_case" and params.get("edge") in ONE_VALUE_PER_CHANNEL and params.get(
        "training") else None


VOCABULARY = Vocabulary(conventions=conventions, translation=translation, roles=roles)

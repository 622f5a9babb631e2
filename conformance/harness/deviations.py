"""The deviation registry: known, explained differences from the reference, as data.

``deviations.toml`` lists entries of ``[[deviation]]`` with ``implementation`` and ``check`` (each a glob or
a list of globs),
``operator`` (optional: a glob or a list of globs over operator names, ``conformance.operators``; every
operator by default), ``when`` (case parameters that must match: a value or a list of values; a parameter a
check leaves unset, a framework option say, has the value ``"default"``, and one whose value is None
``"None"``), ``observed`` (what the implementation does), ``reason`` (why), ``link`` (the upstream report)
and optionally ``versions`` (a PEP 440 specifier on the
framework's version). A matching check is expected to fail (pytest's strict
xfail): if it passes, the entry no longer deviates and the run fails until the entry is removed.

A third party keeps its own registry in a file of the same schema (``pytest --deviations FILE``); every
entry remembers the registry it came from (``registry``), which the report shows.
"""

from __future__ import annotations

import fnmatch
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from packaging.specifiers import SpecifierSet

__all__ = ["Deviation", "load_registry", "match"]

REGISTRY = Path(__file__).parent.parent / "deviations.toml"
_KEYS = {"implementation", "check", "operator", "when", "observed", "reason", "link", "versions"}


@dataclass(frozen=True)
class Deviation:
    implementation: str | list[str]
    check: str | list[str]
    observed: str
    reason: str
    link: str
    when: dict = field(default_factory=dict)
    versions: str = ""
    # Implementation globs name frameworks (``keras.*``), and a framework implements several operators: an
    # entry about one operator's implementations says which.
    operator: str | list[str] = "*"
    registry: str = ""  # the file it was read from (set by load_registry, not a key of the file)

    def __post_init__(self) -> None:
        """Reject now what would otherwise fail, or silently never match, only once a check runs."""
        for key in ("observed", "reason", "link", "versions"):
            if not isinstance(getattr(self, key), str):
                raise ValueError(f"{key} must be a string, got {getattr(self, key)!r}")
        for key in ("implementation", "check", "operator"):
            globs = _globs(getattr(self, key))
            if not globs or not all(isinstance(g, str) for g in globs):
                raise ValueError(f"{key} must be a glob or a list of globs, got {getattr(self, key)!r}")
        if not isinstance(self.when, dict):
            raise ValueError(f"when must be a table of case parameters, got {self.when!r}")
        SpecifierSet(self.versions)  # InvalidSpecifier, a ValueError naming the specifier

    def matches(self, implementation: str, check: str, params: dict, version: str | None,
                operator: str = "") -> bool:
        """Whether the entry covers ``check`` of ``implementation`` (of ``operator``; "" : any) with ``params``."""
        if not (any(fnmatch.fnmatchcase(implementation, g) for g in _globs(self.implementation))
                and any(fnmatch.fnmatchcase(check, g) for g in _globs(self.check))
                and (not operator or any(fnmatch.fnmatchcase(operator, g) for g in _globs(self.operator)))):
            return False
        for key, wanted in self.when.items():
            options = wanted if isinstance(wanted, list) else [wanted]
            # A parameter the check leaves unset (a framework option, say) is at its default. TOML has no null:
            # "None" stands for a parameter whose value is None (PyTorch's momentum=None, a cumulative average).
            value = params.get(key, "default")
            if ("None" if value is None else value) not in options:
                return False
        # Release candidates and nightlies are ordered like any version (packaging < 24 would leave them out).
        in_range = SpecifierSet(self.versions).contains(version.split("+")[0], prereleases=True) if version else True
        return not self.versions or in_range

    def as_dict(self) -> dict:
        return {k: getattr(self, k) for k in sorted(_KEYS | {"registry"})}


def _globs(value: str | list[str]) -> list:
    return value if isinstance(value, list) else [value]


def _name(path: Path) -> str:
    """The project's own registry by its place in the package; any other file as given."""
    return "conformance/deviations.toml" if path.resolve() == REGISTRY.resolve() else str(path)


def load_registry(path: Path = REGISTRY) -> list[Deviation]:
    try:
        entries = tomllib.loads(path.read_text()).get("deviation", [])
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{path}: not valid TOML: {exc}") from None
    out = []
    for i, entry in enumerate(entries):
        unknown = set(entry) - _KEYS
        missing = {"implementation", "check", "observed", "reason", "link"} - set(entry)
        if unknown or missing:
            raise ValueError(f"{path.name} entry {i}: unknown keys {sorted(unknown)}, missing {sorted(missing)}")
        try:
            out.append(Deviation(**entry, registry=_name(path)))
        except ValueError as exc:
            raise ValueError(f"{path.name} entry {i}: {exc}") from None
    return out


def match(
    registry: list[Deviation], names: tuple[str, ...], check: str, params: dict, version: str | None,
    operator: str = "",
) -> Deviation | None:
    """The first entry covering this check of an implementation of ``operator`` known by ``names`` (its own,
    and for a derived one those whose entries it takes: :meth:`Implementation.deviation_names`), or None."""
    return next((d for name in names for d in registry if d.matches(name, check, params, version, operator)), None)

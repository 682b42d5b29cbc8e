"""The one registry type (issue 37, item 4): a name is registered once (a second registration names both places,
at import of the module that makes it), entries carry their order and aliases, an unknown name gets the registry's
own error, and a config's choices read the names when argparse asks, not when the config was defined. (A module
that registers a taken name at import: ``tests/unit/analysis/test_registry_choices.py``.)"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from shards.errors import ConfigError, InterventionError
from shards.registry import DuplicateNameError, Registry


@dataclass(frozen=True)
class Entry:
    name: str
    order: int | None = None
    aliases: tuple[str, ...] = ()


def test_a_name_registered_twice_names_both_places():
    reg: Registry[Entry] = Registry("thing")
    reg.register(Entry("a"))  # first place
    here = r"tests/unit/shards/test_registry\.py"
    with pytest.raises(DuplicateNameError, match=rf"thing 'a' is registered twice: at {here}:\d+ and at {here}:\d+"):
        reg.register(Entry("a"))  # second place
    reg.register(Entry("b", aliases=("bee",)))
    with pytest.raises(DuplicateNameError, match="'bee' is registered twice"):
        reg.register(Entry("bee"))
    with pytest.raises(DuplicateNameError):
        reg["c"] = Entry("c", aliases=("a",))
    assert list(reg) == ["a", "b"] and reg.lookup("bee").name == "b"


def test_order_aliases_casefold_and_unknown_names():
    reg: Registry[Entry] = Registry("kind", InterventionError, casefold=True)
    for e in (Entry("late"), Entry("second", order=20), Entry("first", order=10, aliases=("one",))):
        reg.register(e)
    assert reg.names() == ["first", "second", "late"] and list(reg.values())[0].name == "first"
    assert reg.lookup("FIRST").name == "first" and reg.lookup("One").name == "first"
    with pytest.raises(InterventionError, match=r"unknown kind 'secnd'\. Did you mean 'second'\? Known: first, "
                                                r"second, late"):
        reg.lookup("secnd")
    del reg["first"]  # what monkeypatch.setitem undoes
    assert reg.names() == ["second", "late"] and "one" not in reg
    reg.register(Entry("first"))  # the name and its aliases are free again


def test_choices_are_read_when_asked_and_take_comma_lists():
    reg: Registry[Entry] = Registry("metric")
    choices = reg.choices("auto", where=lambda e: e.order != 0)
    reg.register(Entry("x"))
    reg.register(Entry("hidden", order=0))
    reg.register(Entry("y"))
    assert list(choices) == ["auto", "x", "y"] and "x,y" in choices and "x,hidden" not in choices
    with pytest.raises(ConfigError, match="unknown metric 'z'"):
        reg.lookup("z")

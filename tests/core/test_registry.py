"""The registry every by-name choice goes through."""

import pytest

from diffusekit.core.registry import Registry, UnknownNameError


def test_register_get_names_and_decorator():
    r = Registry("widget")
    r.register("a", 1)

    @r.register("b")
    def b():
        return 2

    assert r.get("a") == 1 and r.get("b") is b and r.names() == ["a", "b"] and "a" in r


def test_duplicate_registration_is_refused_unless_replace():
    r = Registry("widget")
    r.register("a", 1)
    with pytest.raises(ValueError, match="already registered"):
        r.register("a", 2)
    r.register("a", 2, replace=True)
    assert r.get("a") == 2


def test_unknown_name_names_closest_and_lists_known():
    r = Registry("widget")
    r.register("heun", 1)
    r.register("euler", 2)
    with pytest.raises(UnknownNameError) as err:
        r.get("huen")
    assert str(err.value) == "unknown widget 'huen' (did you mean 'heun'?); known: euler, heun"


def test_loaders_run_once_and_lazily():
    r = Registry("widget")
    calls = []
    r.add_loader(lambda: calls.append(1) or r.register("late", 3))
    assert calls == []
    assert r.get("late") == 3 and r.names() == ["late"]
    assert calls == [1]

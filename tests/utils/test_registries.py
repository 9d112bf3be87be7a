"""The one registry shape (vkd_fast.utils.registry) behind methods, forget targets, adapters and tasks."""

import pytest

from vkd_fast.utils.registry import Registry


class Base:
    pass


class A(Base):
    pass


class B(Base):
    pass


def test_register_get_names_replace_remove():
    seen = []
    reg = Registry("thing", Base, sort=False, on_register=lambda n, c: seen.append((n, c)))
    assert reg.register("zeta", A) is A and reg.register("alpha", B) is B
    assert reg.names() == ["zeta", "alpha"] and seen == [("zeta", A), ("alpha", B)]
    assert reg.get("zeta") is A and "alpha" in reg and "beta" not in reg and len(reg) == 2
    reg.register("zeta", B)  # a name registered again is replaced
    assert reg.get("zeta") is B
    reg.remove("zeta")
    reg.remove("never")  # nothing to forget: no error
    assert reg.names() == ["alpha"]
    assert Registry("thing", Base).register("b", A) is A


def test_sorted_names_and_errors():
    reg = Registry("thing", Base, check_name=lambda n: None if n.islower() else (_ for _ in ()).throw(
        ValueError(f"thing name must be lower-case, got {n!r}")), public="pkg.Base", missing_hint="Register one.")
    reg.register("b", A)
    reg.register("a", B)
    assert reg.names() == ["a", "b"]
    with pytest.raises(ValueError, match=r"thing must be one of 'a', 'b', got 'c'\. Register one\."):
        reg.get("c")
    with pytest.raises(ValueError, match="thing name must be lower-case"):
        reg.register("C", A)
    with pytest.raises(ValueError, match="non-empty string"):
        reg.register("", A)
    with pytest.raises(TypeError, match="cls must be a subclass of pkg.Base, got <class 'object'>"):
        reg.register("x", object)
    assert "x" not in reg  # a refused class leaves the registry as it was

from __future__ import annotations

import pytest

from xlibrary.pipeline.errors import MissingExtraError, PipelineError
from xlibrary.pipeline.registry import Registry


class Thing:
    pass


def test_a_name_resolves_to_its_class_or_its_path_imported_on_first_use() -> None:
    things: Registry[object] = Registry("thing")
    things.register("direct", Thing)
    things.register("by_path", "collections:OrderedDict")
    assert things.get("direct") is Thing
    from collections import OrderedDict

    assert things.get("by_path") is OrderedDict
    assert things.names() == ["by_path", "direct"]
    assert "direct" in things


def test_an_unknown_name_says_the_closest_and_the_known_ones() -> None:
    things: Registry[object] = Registry("stream source")
    things.register("kafka", Thing)
    with pytest.raises(
        PipelineError, match=r"unknown stream source type 'kafak'; did you mean 'kafka'\?"
    ):
        things.get("kafak")


def test_a_missing_dependency_names_the_extra_to_install() -> None:
    things: Registry[object] = Registry("cache")
    things.register("nowhere", "xlibrary_no_such_module.sub:Cls", extra="redis", package="redis")
    with pytest.raises(MissingExtraError, match=r'pip install "xlibrary\[redis\]"'):
        things.get("nowhere")


def test_a_taken_name_needs_clobber_and_bad_targets_are_refused() -> None:
    things: Registry[object] = Registry("sink")
    things.register("a", Thing)
    things.register("a", Thing)  # the same again is harmless
    with pytest.raises(PipelineError, match="clobber=True"):
        things.register("a", "collections:OrderedDict")
    things.register("a", "collections:OrderedDict", clobber=True)
    with pytest.raises(PipelineError, match=r"package\.module:Class"):
        things.register("b", "collections.OrderedDict")
    with pytest.raises(PipelineError, match="register a class"):
        things.register("c", 42)  # type: ignore[arg-type]

"""Choosing the installed modules a worker runs (LO_STREAM_MODULES); no Kafka needed."""

from __future__ import annotations

import pytest

from lo_stream.modules import ModuleLoadError, load_modules
from lo_stream.settings import load_settings


def test_modules_setting_lists_names_in_order(monkeypatch):
    assert load_settings().module_names == []  # every installed module
    monkeypatch.setenv("LO_STREAM_MODULES", " writing, other ,")
    assert load_settings().module_names == ["writing", "other"]


def test_only_the_named_modules_load():
    assert [module.name for module in load_modules(only=["writing"])] == ["writing"]


def test_a_module_that_is_not_installed_is_named():
    with pytest.raises(ModuleLoadError, match="'nonesuch', which is not installed .*installed: .*writing"):
        load_modules(only=["writing", "nonesuch"])

"""Import the repository as a ComfyUI plugin package (as ComfyUI does: by file location, any name)."""

from __future__ import annotations

import importlib.util
import sys

from .golden import REPO

PACKAGE = "colormnet_plugin_under_test"


def load_plugin():
    if PACKAGE in sys.modules:
        return sys.modules[PACKAGE]
    spec = importlib.util.spec_from_file_location(PACKAGE, REPO / "__init__.py", submodule_search_locations=[str(REPO)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[PACKAGE] = module
    spec.loader.exec_module(module)
    return module


def submodule(name: str):
    load_plugin()
    return importlib.import_module(f"{PACKAGE}.{name}")

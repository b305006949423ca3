"""`recurc.build(spec)`, `recurc.diff(a, b)`, … while `recurc.build` is also a submodule.

Importing a submodule sets it as an attribute of the package, which would shadow a function of
the same name. Instead the submodule itself becomes callable and forwards to its main function.
"""
from __future__ import annotations

import sys
import types
from typing import Callable


def make_module_callable(module_name: str, fn: Callable) -> None:
    class _CallableModule(types.ModuleType):
        def __call__(self, *args, **kwargs):
            return fn(*args, **kwargs)

    sys.modules[module_name].__class__ = _CallableModule

"""recurc: a spec compiler for depth-recurrent transformer LMs. `recurc.diff(a, b)` and
`recurc.variants(template)` are importable lazily from here (the submodules are callable)."""


def __getattr__(name: str):
    if name in ("diff", "variants", "render"):
        import importlib
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'recurc' has no attribute {name!r}")

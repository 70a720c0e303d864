"""Self-supervised methods, one file each. A method's module is imported when the method is first used (the
registry reads names, papers and modalities from the source), so `selfsup methods` and bad arguments answer
without importing torch."""

from selfsup.methods.registry import METHODS, RENAMED, build, catalog, create, make_config, method_class, register

_BASE = ("ImageMethod", "ImageMethodConfig", "Method", "MethodConfig")


def __getattr__(name: str):
    if name in _BASE:
        from selfsup.methods import base

        return getattr(base, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["METHODS", "RENAMED", "ImageMethod", "ImageMethodConfig", "Method", "MethodConfig", "build", "catalog",
           "create", "make_config", "method_class", "register"]

"""Self-supervised methods, one file each; every module here is imported so its @register runs."""

import importlib
import pkgutil

from selfsup.methods.base import Method, MethodConfig, SequenceMethod, SequenceMethodConfig
from selfsup.methods.registry import METHODS, create, make_config, method_class, register

for _module in pkgutil.iter_modules(__path__):
    if _module.name not in ("base", "registry"):
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["METHODS", "Method", "MethodConfig", "SequenceMethod", "SequenceMethodConfig", "create", "make_config",
           "method_class", "register"]

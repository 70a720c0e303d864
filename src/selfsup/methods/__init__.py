"""Self-supervised methods, one file each; every module here is imported so its @register runs."""

import importlib
import pkgutil

from selfsup.methods.base import ImageMethod, ImageMethodConfig, Method, MethodConfig
from selfsup.methods.registry import METHODS, RENAMED, build, create, make_config, method_class, register

for _module in pkgutil.iter_modules(__path__):
    if _module.name not in ("base", "registry"):
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["METHODS", "RENAMED", "ImageMethod", "ImageMethodConfig", "Method", "MethodConfig", "build", "create",
           "make_config", "method_class", "register"]

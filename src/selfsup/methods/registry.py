"""Name -> method class. A method file registers itself with @register; nothing else changes.

Importing a method imports torch and its libraries (seconds), so the registry imports a method's module only when
that method is used: `catalog()` reads every method's name, paper, modality and defaults from the source files
(ast, no import), `method_class(name)` imports the one module that defines `name`, and reading METHODS as a whole
imports them all.
"""

import ast
import dataclasses
import difflib
import importlib
import pkgutil
from collections.abc import Iterator, MutableMapping
from functools import cache
from pathlib import Path
from typing import Any

from selfsup.errors import SelfsupError
from selfsup.ranges import check_ranges

_HERE = Path(__file__).parent
_NOT_METHODS = ("base", "registry")


class _Methods(MutableMapping):
    """name -> method class; every method module is imported on the first read of the whole mapping."""

    def __init__(self):
        self._classes: dict[str, type] = {}
        self._loaded = False

    def _load(self) -> dict[str, type]:
        if not self._loaded:
            self._loaded = True
            for module in pkgutil.iter_modules([str(_HERE)]):
                if module.name not in _NOT_METHODS:
                    importlib.import_module(f"{__package__}.{module.name}")
        return self._classes

    def __getitem__(self, name: str) -> type:
        if name not in self._classes and name in catalog():
            importlib.import_module(f"{__package__}.{catalog()[name]['module']}")
        return self._classes[name] if name in self._classes else self._load()[name]

    def __setitem__(self, name: str, cls: type) -> None:
        self._classes[name] = cls

    def __delitem__(self, name: str) -> None:
        del self._classes[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._load())

    def __len__(self) -> int:
        return len(self._load())

    def __contains__(self, name: object) -> bool:
        return name in self._classes or name in catalog()

    def names(self) -> list[str]:
        """Every method's name, without importing any method module."""
        return sorted(set(catalog()) | set(self._classes))


METHODS = _Methods()


def register(cls: type) -> type:
    METHODS[cls.name] = cls
    return cls


@cache
def catalog() -> dict[str, dict[str, Any]]:
    """name -> {module, paper, deviations, modality, backbone (image methods' default), data (run default)} of every
    method file here, read from the source without importing it."""
    classes: dict[str, dict[str, Any]] = {}
    constants: dict[str, dict[str, ast.expr]] = {}  # module -> its top-level NAME = ... assignments
    for path in sorted(_HERE.glob("*.py")):
        constants[path.stem] = {}
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
                constants[path.stem][node.targets[0].id] = node.value
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(f"{__package__}."):
                source = node.module.rpartition(".")[2]  # a name imported from another method file: read it there
                for alias in node.names:
                    constants[path.stem][alias.asname or alias.name] = ast.Name(f"{source}.{alias.name}")
            if isinstance(node, ast.ClassDef):
                attrs = {}
                for item in node.body:
                    target = item.targets[0] if isinstance(item, ast.Assign) else getattr(item, "target", None)
                    if isinstance(target, ast.Name) and getattr(item, "value", None) is not None:
                        attrs[target.id] = item.value
                classes[node.name] = {"module": path.stem, "bases": [b.id for b in node.bases if isinstance(b, ast.Name)],
                                      "attrs": attrs, "registered": any(getattr(d, "id", "") == "register"
                                                                        for d in node.decorator_list)}

    def evaluate(node: ast.expr, module: str) -> Any:  # literals, "a" + "b", a module constant, Class.attr
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
            return evaluate(node.left, module) + evaluate(node.right, module)
        if isinstance(node, ast.Name) and "." in node.id:  # module.NAME, from an import
            source, _, name = node.id.partition(".")
            return evaluate(constants[source][name], source)
        if isinstance(node, ast.Name):
            return evaluate(constants[module][node.id], module) if node.id in constants[module] else node.id
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            return value(node.value.id, node.attr)
        return ast.literal_eval(node)

    def value(cls: str, attr: str) -> Any:  # a class attribute's value, inherited along the bases
        if cls not in classes:
            return None
        if attr in classes[cls]["attrs"]:
            return evaluate(classes[cls]["attrs"][attr], classes[cls]["module"])
        return next((v for b in classes[cls]["bases"] if (v := value(b, attr)) is not None), None)

    return {value(c, "name"): {"module": info["module"], "paper": value(c, "paper"),
                               "deviations": value(c, "deviations") or "", "modality": value(c, "modality"),
                               "backbone": value(value(c, "config_class"), "backbone"),
                               "data": (value(c, "run_defaults") or {}).get("data")}
            for c, info in classes.items() if info["registered"]}


def method_class(name: str) -> type:
    if name not in METHODS:
        close = difflib.get_close_matches(name, METHODS.names(), n=2)
        hint = f" (did you mean {' or '.join(close)}?)" if close else ""
        raise SelfsupError(f"unknown method '{name}'{hint}; available: {', '.join(METHODS.names())} "
                           "(see `selfsup methods`)")
    return METHODS[name]


# Options renamed so that `momentum` is only the optimiser's: EMA rates are ema_*. Checkpoints written before read on.
RENAMED = {"base_momentum": "ema_base", "key_momentum": "ema_rate", "bank_momentum": "ema_bank"}


def config_options(name: str) -> list[tuple[str, Any, str]]:
    """(field, default, the comment on its line in the config class's source, "" when none) of every field of
    `name`'s config, the method's own first, then those of its bases (the optimiser's last): what `--set KEY=VALUE`
    takes. SelfsupError for an unknown name (method_class)."""
    import inspect

    config_class = method_class(name).config_class
    comments: dict[str, str] = {}
    for cls in config_class.__mro__:
        if not dataclasses.is_dataclass(cls):
            continue
        for line in inspect.getsource(cls).splitlines():
            field, colon, rest = line.strip().partition(":")
            if colon and field.isidentifier() and " # " in f" {rest}":
                comments.setdefault(field, rest.partition("#")[2].strip())
    names = {f.name for f in dataclasses.fields(config_class)}
    listed: list[str] = []  # each field under the first class in the MRO that declares it, in declaration order
    for cls in config_class.__mro__:
        listed += [n for n in vars(cls).get("__annotations__", {}) if n in names and n not in listed]
    defaults = config_class()
    return [(n, getattr(defaults, n), comments.get(n, "")) for n in listed]


def make_config(name: str, **overrides: Any):
    """The method's config dataclass with the paper's defaults, then `overrides` applied."""
    config_class = method_class(name).config_class
    known = {f.name for f in dataclasses.fields(config_class)}
    unknown = sorted(set(overrides) - known)
    renamed = [f"{old} is now {RENAMED[old]}" for old in unknown if RENAMED.get(old) in known]
    if renamed:
        raise SelfsupError(f"{name}: option {'; '.join(renamed)} (EMA rates are ema_*; momentum is the optimiser's)")
    check_ranges(overrides)
    if unknown:
        raise SelfsupError(f"{name} has no option {', '.join(unknown)}; its options are: {', '.join(sorted(known))}")
    return config_class(**overrides)


def build(name: str, data_meta: dict[str, Any], **overrides: Any):
    """Method `name` of any modality for data described by `data_meta`, its paper defaults changed by `overrides`."""
    return method_class(name).build(make_config(name, **overrides), data_meta)


def create(name: str, in_chans: int = 3, **overrides: Any):
    """Image method `name` for `in_chans`-channel images, its paper defaults changed by `overrides`
    (e.g. backbone="resnet50")."""
    return build(name, {"in_chans": in_chans}, **overrides)

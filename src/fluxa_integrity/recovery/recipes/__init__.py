"""One module per recipe; each registers itself (model.register) when imported, and importing
this package imports them all, so adding a recipe is adding a file."""

import importlib
import pkgutil

for _mod in pkgutil.iter_modules(__path__):
    if not _mod.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_mod.name}")

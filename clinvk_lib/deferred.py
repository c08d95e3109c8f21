"""Standard modules that the server imports by name at start-up but only some requests use,
loaded on their first use instead.

``defer("ssl")`` puts a stand-in for ``ssl`` in ``sys.modules`` (unless ``ssl`` is already
loaded or cannot be found), so ``import ssl`` anywhere (``http.client`` does it for every
``http.server``) binds the stand-in and maps nothing. The first attribute read, written or
deleted through it imports the real module (once, under a lock: threads that meet it halfway
wait) and goes to it from then on; ``sys.modules`` then holds the real module. Unlike
``importlib.util.LazyLoader`` (CPython 3.8-3.11), no thread can see a module half loaded.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import threading
import types
from typing import Any, List

_LOADING = threading.RLock()


class DeferredModule(types.ModuleType):
    """The stand-in for a module not imported yet; every attribute is the real module's."""

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real(), name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._real(), name, value)

    def __delattr__(self, name: str) -> None:
        delattr(self._real(), name)

    def __dir__(self) -> List[str]:
        return dir(self._real())

    def _real(self) -> types.ModuleType:
        real = self.__dict__.get("_deferred_real")
        if real is None:
            with _LOADING:
                real = self.__dict__.get("_deferred_real")
                if real is None:
                    real = self._import()
                    self.__dict__["_deferred_real"] = real
        return real

    def _import(self) -> types.ModuleType:
        name = self.__name__
        if sys.modules.get(name) is self:
            del sys.modules[name]
        try:
            return importlib.import_module(name)
        except BaseException:
            sys.modules.setdefault(name, self)
            raise


def defer(*names: str) -> None:
    """Put a DeferredModule in ``sys.modules`` for each of ``names`` not imported yet."""
    for name in names:
        spec = None if name in sys.modules else importlib.util.find_spec(name)
        if spec is None:
            continue
        stand_in = DeferredModule(name)
        stand_in.__dict__["__spec__"] = spec    # find_spec() reads sys.modules[name].__spec__
        sys.modules[name] = stand_in

"""Name -> verifier factory registry, with third-party discovery through entry points.

Third-party packages publish verifiers with an entry point in the group
``trl_grpo_plus.verifiers``; the entry-point name is the registry name and the object it points at is
a verifier class (or any callable returning a verifier)::

    [project.entry-points."trl_grpo_plus.verifiers"]
    my_judge = "my_pkg.verifiers:MyJudge"
"""

from __future__ import annotations

import importlib
import logging
import threading
from importlib.metadata import entry_points
from typing import Callable

logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "trl_grpo_plus.verifiers"
# Modules of this package that register built-in verifiers when imported.
_BUILTIN_MODULES: tuple[str, ...] = ("math", "gsm8k", "format", "code", "length", "gsm8k_steps")  # each built-in verifier module adds its name here

_REGISTRY: dict[str, Callable] = {}
_loaded = False
_LOAD_LOCK = threading.RLock()
_PLUGINS: dict[str, str] = {}  # name -> entry-point value, for plug-ins loaded from entry points


def register_verifier(name: str, *, override: bool = False):
    """Class decorator: register ``factory`` under ``name``; ``get_verifier(name, **opts)`` calls it.

    A second registration under a taken name raises unless ``override=True``.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"register_verifier(name={name!r}): the name must be a non-empty string.")

    def decorator(factory):
        if name in _REGISTRY and _REGISTRY[name] is not factory and not override:
            raise ValueError(
                f"A verifier named {name!r} is already registered ({_describe(_REGISTRY[name])}). "
                f"Pick another name, or pass register_verifier({name!r}, override=True) to replace it."
            )
        _REGISTRY[name] = factory
        if isinstance(factory, type) and not getattr(factory, "registry_name", None):
            factory.registry_name = name
        return factory

    return decorator


def get_verifier(name: str, **options):
    """Build the verifier registered as ``name`` with ``options`` (passed to its constructor)."""
    _ensure_loaded()
    if name not in _REGISTRY:
        raise KeyError(
            f"Unknown verifier {name!r}. Registered verifiers: {', '.join(sorted(_REGISTRY)) or '(none)'}. "
            f"Register your own with @register_verifier({name!r}) or publish it under the entry-point "
            f"group {ENTRY_POINT_GROUP!r}."
        )
    return _REGISTRY[name](**options)


def list_verifiers() -> list[str]:
    """Sorted names of every registered verifier (built-in, user-registered and entry-point)."""
    _ensure_loaded()
    return sorted(_REGISTRY)


def load_entry_points() -> None:
    """(Re)scan the ``trl_grpo_plus.verifiers`` entry-point group. Broken plug-ins are logged, not fatal."""
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in _REGISTRY:
            if _PLUGINS.get(ep.name) != ep.value:  # not a rescan of the same plug-in
                logger.warning("Verifier plug-in %r (%s) skipped: the name is already registered (%s)",
                               ep.name, ep.value, _describe(_REGISTRY[ep.name]))
            continue
        try:
            factory = ep.load()
        except Exception as exc:  # a broken third-party package must not break the trainer
            logger.warning("Could not load verifier plug-in %r (%s): %r", ep.name, ep.value, exc)
            continue
        register_verifier(ep.name)(factory)
        _PLUGINS[ep.name] = ep.value


def _ensure_loaded() -> None:
    global _loaded
    if _loaded:
        return
    with _LOAD_LOCK:  # two threads asking at once must both see the full registry
        if _loaded:
            return
        for module in _BUILTIN_MODULES:
            try:
                importlib.import_module(f"{__package__}.{module}")
            except Exception as exc:  # one broken built-in must not take the others down
                logger.error("Could not load the built-in verifier module %r: %r", module, exc)
        load_entry_points()
        _loaded = True


def _describe(factory) -> str:
    return f"{getattr(factory, '__module__', '?')}.{getattr(factory, '__qualname__', repr(factory))}"

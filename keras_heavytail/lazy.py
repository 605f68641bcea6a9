"""Names that load on first use: the one lazy loader of every wing's `__init__`.

A wing lists `{public name: module}`; `attach` returns the module-level
`__getattr__` and `__dir__` (PEP 562) that import the module when the name
is first asked for. Modules that need TensorFlow say so on another backend
instead of failing deep inside an import. Old import paths (release 0.2's
flat modules) resolve to their new homes with a `DeprecationWarning`.
"""

import importlib
import importlib.abc
import importlib.util
import sys
import warnings


def check_tensorflow(what):
    """Raises an ImportError naming `what` unless TensorFlow can serve it.

    LiteRT export converts a TensorFlow SavedModel, which Keras writes on the
    TensorFlow backend and, through jax2tf, on JAX; PyTorch has no such path
    here. TensorFlow itself must be installed on either.
    """
    import keras

    backend = keras.backend.backend()
    if backend not in ("tensorflow", "jax"):
        raise ImportError(
            f"{what} needs the TensorFlow or JAX backend (LiteRT export goes through "
            f"a TensorFlow SavedModel). Received: backend={backend!r}. Save the "
            "model (`model.save`) and export it in a process with KERAS_BACKEND=tensorflow."
        )
    try:
        importlib.import_module("tensorflow")
    except ImportError as error:
        raise ImportError(
            f"{what} needs TensorFlow installed (`pip install "
            f"'keras-heavytail[tensorflow]'`), also on the {backend} backend. ({error})"
        ) from None


def attach(package, where, submodules=(), tensorflow_only=()):
    """PEP 562 hooks for `package`: `(__getattr__, __dir__)`.

    Args:
        package: the package's `__name__`.
        where: `{public name: module name relative to package}`.
        submodules: more submodules reachable as attributes (each module
            named in `where` is one already).
        tensorflow_only: module names that need the TensorFlow backend.

    Returns:
        The `__getattr__` and `__dir__` functions to assign in the package.
    """
    module = sys.modules[package]
    submodules = set(submodules) | set(where.values())

    def __getattr__(name):
        if name in submodules:
            return importlib.import_module(f"{package}.{name}")
        if name not in where:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        if where[name] in tensorflow_only:
            check_tensorflow(f"{package}.{name}")
        value = getattr(importlib.import_module(f"{package}.{where[name]}"), name)
        setattr(module, name, value)
        return value

    def __dir__():
        return sorted(set(vars(module)) | set(where) | set(submodules))

    return __getattr__, __dir__


class _MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Resolves an old module path to its new module, with a warning if asked."""

    def __init__(self, moved, warn):
        self.moved = moved
        self.warn = warn

    def find_spec(self, fullname, path=None, target=None):
        if fullname in self.moved:
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec):
        return None  # a placeholder, replaced by the new module below

    def exec_module(self, module):
        new = self.moved[module.__name__]
        if self.warn:
            warnings.warn(
                f"`{module.__name__}` moved to `{new}` in keras-heavytail 0.3; the "
                "old path goes in the next release.",
                DeprecationWarning,
                stacklevel=2,
            )
        sys.modules[module.__name__] = importlib.import_module(new)


def alias_modules(moved, warn=True):
    """Lets `import OLD` (a key of `moved`) load the module `moved[OLD]`.

    With `warn`, each first import says where the module went
    (DeprecationWarning); without, the old name is a lasting alias.
    """
    sys.meta_path.insert(0, _MovedModules(moved, warn))

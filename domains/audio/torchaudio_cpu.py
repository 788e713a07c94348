"""Import torchaudio beside a CPU-only torch: `from diffusekit.domains.audio.torchaudio_cpu import
torchaudio` (every module of this domain imports it this way, never `import torchaudio`).

Why: the torchaudio wheels on PyPI (2.9 .. 2.11) are CUDA builds. Beside the CPU build of torch
this project pins, `import torchaudio` fails: `torchaudio._extension.utils._load_lib` finds its
native library `_torchaudio.abi3.so`, cannot load it (`libc10_cuda.so` is missing) and re-raises
the `OSError`. torchaudio itself treats an *absent* native library as optional ("pure-Python
mode"), and in that mode everything this domain uses works on CPU: `transforms.MelSpectrogram`,
`InverseMelScale`, `GriffinLim`, `functional.resample`, `functional.melscale_fbanks`. So this
module wraps `_load_lib` while torchaudio imports: a library that is found but cannot be loaded
counts as absent (returns False) instead of aborting the import.
Where the native library does load (a matching CUDA torch), nothing changes.

Audio file I/O does not go through torchaudio at all (its load/save need torchcodec): this domain
reads and writes audio with `soundfile`.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
from types import ModuleType

_UTILS = "torchaudio._extension.utils"


def _tolerant(load_lib):
    """`load_lib` that answers False (not available) where the original raises OSError."""

    def _load_lib(lib: str) -> bool:
        try:
            return load_lib(lib)
        except OSError:
            return False

    _load_lib.__doc__ = load_lib.__doc__
    return _load_lib


class _PatchLoader(importlib.abc.Loader):
    """Runs the real loader of torchaudio._extension.utils, then wraps its `_load_lib`."""

    def __init__(self, loader: importlib.abc.Loader) -> None:
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self.loader.exec_module(module)
        module._load_lib = _tolerant(module._load_lib)


class _PatchFinder(importlib.abc.MetaPathFinder):
    """Finds torchaudio._extension.utils with the ordinary machinery and patches its loader."""

    def find_spec(self, fullname, path, target=None):
        if fullname != _UTILS:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is not None and spec.loader is not None:
            spec.loader = _PatchLoader(spec.loader)
        return spec


def _import_torchaudio() -> ModuleType:
    if "torchaudio" in sys.modules:
        return sys.modules["torchaudio"]
    finder = _PatchFinder()
    sys.meta_path.insert(0, finder)
    try:
        import torchaudio as module
    finally:
        sys.meta_path.remove(finder)
    return module


torchaudio = _import_torchaudio()
import torchaudio.functional  # noqa: E402  (after the patched import above)
import torchaudio.transforms  # noqa: E402

__all__ = ["torchaudio"]

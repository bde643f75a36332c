"""Checkpoints are data, never code.

Every checkpoint of this project is read with ``torch.load(weights_only=True)``
(:func:`load_checkpoint`): a file whose unpickling would import or call anything outside
torch's weights-only allow-list (tensors, plain containers, numbers, strings) is refused with
one line naming the file, before any of its code runs. For that to work with our own files,
:func:`plain` turns what Lightning puts into a checkpoint besides the weights (saved
hyper-parameters holding Hydra partials and OmegaConf containers, numpy random states) into
plain types when it is written (:class:`AtomicCheckpointIO`).

A checkpoint written by an older version (pickled objects in its hyper-parameters) is refused
too; if you trust it, re-save it once as plain data:
``python -m leuk_lightning.utils.checkpoint --trust OLD.ckpt NEW.ckpt``.
"""

from __future__ import annotations

import enum
import functools
import os
import pickle
import re
import sys
from pathlib import Path, PurePath
from typing import Any

import torch
from lightning.fabric.utilities.types import _PATH
from lightning.pytorch.plugins.io import TorchCheckpointIO

from leuk_lightning.errors import CheckpointError
from leuk_lightning.utils.io import atomic_write


def _qualname(obj: Any) -> str:
    module = getattr(obj, "__module__", None) or type(obj).__module__
    name = getattr(obj, "__qualname__", None) or type(obj).__qualname__
    return f"{module}.{name}"


def plain(obj: Any) -> Any:
    """``obj`` with every value a weights-only load accepts: tensors, numbers, strings, None,
    dicts, lists and tuples. Partials become ``{"_target_": ..., "_partial_": True, **kwargs}``
    (what their config said), OmegaConf containers plain dicts/lists, numpy arrays tensors and
    anything else its ``repr`` (hyper-parameters are a record here, never rebuilt from)."""
    if obj is None or isinstance(obj, bool | int | float | str | torch.Tensor):
        return obj
    if isinstance(obj, torch.dtype | torch.device | torch.Size):
        return obj if not isinstance(obj, torch.device) else str(obj)
    if isinstance(obj, enum.Enum):
        return plain(obj.value)
    if isinstance(obj, PurePath):
        return str(obj)
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf

        if isinstance(obj, DictConfig | ListConfig):
            return plain(OmegaConf.to_container(obj, resolve=False))
    except ImportError:  # pragma: no cover - omegaconf is a dependency
        pass
    if isinstance(obj, dict):
        return {plain(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, list | set | frozenset):
        return [plain(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(plain(v) for v in obj)
    if isinstance(obj, functools.partial) or (
        hasattr(obj, "func") and hasattr(obj, "keywords") and hasattr(obj, "args")
    ):  # functools.partial and Hydra's partial wrapper (_DeferredTarget)
        out: dict[str, Any] = {"_target_": _qualname(obj.func), "_partial_": True}
        if obj.args:
            out["_args_"] = plain(list(obj.args))
        out.update({str(k): plain(v) for k, v in (obj.keywords or {}).items()})
        return out
    if type(obj).__module__ == "numpy":
        import numpy as np

        if isinstance(obj, np.ndarray):
            return torch.from_numpy(obj.copy()) if obj.dtype != object else plain(obj.tolist())
        if isinstance(obj, np.generic):
            return obj.item()
    if isinstance(obj, type) or callable(obj):
        return _qualname(obj)
    return repr(obj)


def load_checkpoint(path: str | os.PathLike[str], what: str = "checkpoint") -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU; a missing file, a file that is not a
    checkpoint, or one that would run code when unpickled is a :class:`CheckpointError` that
    names the file (``what`` says which setting it came from, e.g. ``model.init_from``)."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise CheckpointError(f"{what} {file}: file not found")
    try:
        return torch.load(file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        detail = str(exc)
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", detail)
        if found or "WeightsUnpickler" in detail:
            name = found.group(1) if found else "an object outside the weights-only allow-list"
            raise CheckpointError(
                f"{what} {file}: refused to load: it holds a pickled object ({name}) that could "
                "run code; only plain weights are read. Use a checkpoint written by this project, "
                "or, if you trust this file, re-save it with: "
                "python -m leuk_lightning.utils.checkpoint --trust OLD NEW"
            ) from None
        first = detail.strip().splitlines()[0] if detail.strip() else "unpickling failed"
        raise CheckpointError(f"{what} {file}: not a PyTorch checkpoint ({first})") from None
    except Exception as exc:  # noqa: BLE001 - whatever the failure, the file is not readable
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{what} {file}: not a PyTorch checkpoint ({first})") from None


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint IO: checkpoints are written atomically as plain data and always read
    with ``weights_only=True`` (:mod:`leuk_lightning.utils.checkpoint`), whatever ``weights_only``
    Lightning passes: resuming (``ckpt_path=...``) and testing never run code from a file."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: _PATH, storage_options: Any | None = None
    ) -> None:
        data = plain(checkpoint)
        atomic_write(path, lambda f: torch.save(data, f))

    def load_checkpoint(
        self, path: _PATH, map_location: Any | None = None, weights_only: bool | None = None
    ) -> dict[str, Any]:
        ckpt = load_checkpoint(path, what="ckpt_path")
        if map_location is not None and not callable(map_location):
            ckpt = _to(ckpt, map_location)
        return ckpt


def _to(obj: Any, device: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, dict):
        return {k: _to(v, device) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_to(v, device) for v in obj]
    return obj


def _trust_and_resave(src: str, dst: str) -> int:  # pragma: no cover - a manual tool
    """Load a TRUSTED old checkpoint with full unpickling and save it as plain data."""
    ckpt = torch.load(src, map_location="cpu", weights_only=False)
    atomic_write(dst, lambda f: torch.save(plain(ckpt), f))
    load_checkpoint(dst)
    print(f"{dst}: written as plain data (loads with weights_only=True)")
    return 0


if __name__ == "__main__":  # pragma: no cover
    if len(sys.argv) != 4 or sys.argv[1] != "--trust":
        print("usage: python -m leuk_lightning.utils.checkpoint --trust OLD.ckpt NEW.ckpt")
        sys.exit(2)
    sys.exit(_trust_and_resave(sys.argv[2], sys.argv[3]))

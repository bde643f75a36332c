"""Fault injection for the durability tests: ``kill -9`` at a chosen point of a real run.

Put this folder on ``PYTHONPATH`` and set ``LEUK_FAULT`` (unset: nothing happens):

* ``epoch:K``       - SIGKILL at the 2nd training batch of epoch K of the main run
* ``stage_epoch:K`` - the same inside a pre-training stage (``stage_cache/...``)
* ``cache:N``       - SIGKILL while decoding image N of an image-cache build
* ``ckpt:N``        - SIGKILL in the middle of writing the N-th checkpoint of the process
  (half of the bytes are in the temporary file)
"""

from __future__ import annotations

import os
import signal

_FAULT = os.environ.get("LEUK_FAULT", "")


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


if _FAULT:
    kind, _, arg = _FAULT.partition(":")
    n = int(arg or 0)
    if kind in ("epoch", "stage_epoch"):
        from leuk_lightning.regimes.classifier import ClassifierModule

        _step = ClassifierModule.training_step

        def training_step(self, batch, batch_idx, *args, **kwargs):
            where = getattr(self.trainer.checkpoint_callback, "dirpath", "")
            in_stage = "stage_cache" in str(where)
            if self.current_epoch == n and batch_idx == 1 and in_stage == (kind == "stage_epoch"):
                _die()
            return _step(self, batch, batch_idx, *args, **kwargs)

        ClassifierModule.training_step = training_step
    elif kind == "cache":
        from leuk_lightning.data import cache

        _get = cache._Decode.__getitem__

        def getitem(self, index):
            if index == n:
                _die()
            return _get(self, index)

        cache._Decode.__getitem__ = getitem
    elif kind == "ckpt":
        import io

        import torch

        from leuk_lightning.utils import checkpoint as leuk_ckpt
        from leuk_lightning.utils import io as leuk_io

        _save = leuk_ckpt.AtomicCheckpointIO.save_checkpoint
        calls = [0]

        def save_checkpoint(self, checkpoint, path, storage_options=None):
            calls[0] += 1
            if calls[0] != n:
                return _save(self, checkpoint, path, storage_options)
            buf = io.BytesIO()
            torch.save(leuk_io_plain(checkpoint), buf)
            data = buf.getvalue()

            def half_then_die(f):
                f.write(data[: len(data) // 2])
                f.flush()
                _die()

            leuk_io.atomic_write(path, half_then_die)

        def leuk_io_plain(ckpt):
            from leuk_lightning.utils.checkpoint import plain

            return plain(ckpt)

        leuk_ckpt.AtomicCheckpointIO.save_checkpoint = save_checkpoint

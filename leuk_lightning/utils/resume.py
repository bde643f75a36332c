"""Exact resume: the global random generators travel with the checkpoint.

Lightning restores weights, optimizers, schedulers, loops and callback states from a checkpoint,
but not the random generators: a resumed run draws other shuffles and other augmentations than
the uninterrupted run from the same seed, so its results differ. :class:`RngStateCallback`
stores the generators of torch (CPU and CUDA), numpy and Python in every checkpoint it sees
saved and sets them back when training resumes from one (``ckpt_path=last``), so that a run
killed after epoch k and resumed continues with the exact random stream of the uninterrupted
run. With several ranks the checkpoint holds rank 0's generators (checkpoints are written by
rank 0); each rank then offsets its torch generator by its rank so ranks do not augment alike.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from lightning.fabric.utilities.seed import _collect_rng_states, _set_rng_states
from lightning.pytorch.callbacks import Callback

RNG_KEY = "rng_states"


def _numpy_state_as_array(states: dict[str, Any]) -> dict[str, Any]:
    """Checkpoints are plain data (:func:`leuk_lightning.utils.checkpoint.plain`): numpy's key
    array is stored as a tensor; numpy wants its ``uint32`` array back."""
    state = states.get("numpy")
    if state is not None and isinstance(state[1], torch.Tensor):
        import numpy as np

        key = np.asarray(state[1].numpy(), dtype=np.uint32)
        states = {**states, "numpy": (state[0], key, *state[2:])}
    return states


class RngStateCallback(Callback):
    """Save the global random generators in checkpoints and restore them on resume."""

    def on_save_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        checkpoint[RNG_KEY] = _collect_rng_states(include_cuda=torch.cuda.is_available())

    def on_load_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        states = checkpoint.get(RNG_KEY)
        if states is None or trainer.state.fn != "fit":
            return  # testing a checkpoint, or one saved without this callback
        if "torch.cuda" in states and (
            not torch.cuda.is_available() or len(states["torch.cuda"]) != torch.cuda.device_count()
        ):
            states = {k: v for k, v in states.items() if k != "torch.cuda"}
        _set_rng_states(_numpy_state_as_array(states))
        if trainer.global_rank > 0:
            torch.manual_seed(int(torch.randint(0, 2**62, (1,)).item()) + trainer.global_rank)

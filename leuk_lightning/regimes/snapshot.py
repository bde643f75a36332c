"""Exact, allocation-free save/restore of a module's and an optimizer's training state.

The greedy DL4ALL procedure takes a snapshot before every source step and may roll back to it.
``StateSnapshot`` keeps one preallocated copy of every parameter, every buffer (batch-norm
running statistics and counters) and every tensor of the optimizer state (SGD momentum, Adam
moments), and copies into/out of it with ``torch._foreach_copy_`` (bit-exact, no new tensors
per step). The optimizer-state layout is checked on every capture (a cheap Python walk): it
changes when the optimizer creates its state lazily (first step, after a warm-up with frozen
parameters), and then the copies are re-allocated once.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

_Key = tuple[int, str]


class StateSnapshot:
    """Preallocated copy of ``module`` parameters/buffers and ``optimizer`` state tensors."""

    def __init__(self, module: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        self.module = module
        self.optimizer = optimizer
        self.params: list[Tensor] = [p for p in module.parameters()]
        self.buffers: list[Tensor] = [b for b in module.buffers()]
        with torch.no_grad():
            self.saved_params = [torch.empty_like(p) for p in self.params]
            self.saved_buffers = [torch.empty_like(b) for b in self.buffers]
        self.opt_params: list[Tensor] = [p for g in optimizer.param_groups for p in g["params"]]
        self._layout: list[_Key] = []
        self.saved_state: list[Tensor] = []
        self._other_state: dict[_Key, Any] = {}
        self._had_state: list[bool] = []
        self.captured = False
        self.allocations = 0  # how often the optimizer-state copies were (re)allocated

    # -- optimizer state ------------------------------------------------------------------------
    def _opt_tensors(self) -> tuple[list[_Key], list[Tensor]]:
        keys: list[_Key] = []
        tensors: list[Tensor] = []
        state = self.optimizer.state
        for i, p in enumerate(self.opt_params):
            entry = state.get(p)
            if not entry:
                continue
            for k, v in entry.items():
                if isinstance(v, Tensor):
                    keys.append((i, k))
                    tensors.append(v)
        return keys, tensors

    @torch.no_grad()
    def capture(self) -> None:
        """Copy the current state into the snapshot."""
        torch._foreach_copy_(self.saved_params, self.params)
        if self.buffers:
            torch._foreach_copy_(self.saved_buffers, self.buffers)
        keys, tensors = self._opt_tensors()
        if keys != self._layout or any(
            s.shape != t.shape or s.dtype != t.dtype
            for s, t in zip(self.saved_state, tensors, strict=True)
        ):
            self._layout = keys
            self.saved_state = [torch.empty_like(t) for t in tensors]
            self.allocations += 1
        if tensors:
            torch._foreach_copy_(self.saved_state, tensors)
        state = self.optimizer.state
        self._had_state = [bool(state.get(p)) for p in self.opt_params]
        self._other_state = {
            (i, k): v
            for i, p in enumerate(self.opt_params)
            for k, v in (state.get(p) or {}).items()
            if not isinstance(v, Tensor)
        }
        self.captured = True

    @torch.no_grad()
    def restore_buffers(self) -> None:
        """Put back only the buffers (undo the statistics update of an extra forward)."""
        if self.buffers:
            torch._foreach_copy_(self.buffers, self.saved_buffers)

    @torch.no_grad()
    def restore(self) -> None:
        """Return parameters, buffers and optimizer state to the captured values, bit for bit."""
        if not self.captured:
            raise RuntimeError("StateSnapshot.restore() before capture()")
        torch._foreach_copy_(self.params, self.saved_params)
        self.restore_buffers()
        state = self.optimizer.state
        # state the optimizer created after the capture (its first step) is dropped again
        for p, had in zip(self.opt_params, self._had_state, strict=True):
            if not had and state.get(p):
                del state[p]
        keys, tensors = self._opt_tensors()
        if keys != self._layout:
            raise RuntimeError(
                "optimizer state layout changed between capture and restore; cannot roll back"
            )
        if tensors:
            torch._foreach_copy_(tensors, self.saved_state)
        for (i, k), v in self._other_state.items():
            state[self.opt_params[i]][k] = v

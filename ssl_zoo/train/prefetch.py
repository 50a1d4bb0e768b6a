"""Keeping the GPU fed: the views of the next batch are made on a side CUDA stream while the current step runs.

The trainer knows every batch in advance (the epoch order is fixed by (seed, epoch), the view randomness by
(seed, step)), so the views of step i + 1 can be launched before step i's kernels: their kernels then fill the
gaps of the model step instead of running after it. Views carry no state, so making them early changes nothing
in the results. On the CPU there is no second stream: the same code makes the views one step early, in order.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


class ViewPrefetcher:
    """`get(i)` returns make(i) and launches make(i + 1) (while i + 1 < end) on a side stream."""

    def __init__(self, make: Callable[[int], list[torch.Tensor]], device: torch.device, end: int):
        self.make, self.device, self.end = make, device, end
        self.stream = torch.cuda.Stream(device) if device.type == "cuda" else None
        self.pending: tuple[int, list[torch.Tensor]] | None = None

    def _launch(self, i: int) -> list[torch.Tensor]:
        if self.stream is None:
            return self.make(i)
        # The side stream starts after everything queued so far (the epoch order, earlier writes).
        self.stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(self.stream):
            return self.make(i)

    def get(self, i: int) -> list[torch.Tensor]:
        if self.pending is not None and self.pending[0] == i:
            views = self.pending[1]
        else:
            views = self._launch(i)
        self.pending = None
        if self.stream is not None:
            main = torch.cuda.current_stream(self.device)
            main.wait_stream(self.stream)  # the step reads the views only once they are written
            for v in views:  # made on the side stream, freed after use on the main one: tell the allocator
                v.record_stream(main)
        if i + 1 < self.end:  # launched before step i's kernels are queued, so both can run at once
            self.pending = (i + 1, self._launch(i + 1))
        return views

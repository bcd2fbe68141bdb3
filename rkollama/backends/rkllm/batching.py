"""Where each request of a batched NPU run stands (rkllm.n_batch above 1): the run's results
arrive per slot; this says which request a slot's text belongs to, how many tokens each got,
and which have ended and why."""

import threading
from collections.abc import Iterator

from rkollama.core.types import Done, DoneReason, Generation, Token


class BatchState:
    """Where each request of a batched run stands: tokens passed on, whether it ended, why."""

    def __init__(self, batch: list[tuple[int, Generation, threading.Event]]):
        self.batch = batch
        self.counts = [0] * len(batch)
        self.ended = [False] * len(batch)
        self.reasons = [DoneReason.STOP] * len(batch)

    def cancelled(self) -> Iterator[tuple[int, Done]]:
        """A Done for each request cancelled since the last look; it ends at once."""
        for index, (request_id, _, cancel) in enumerate(self.batch):
            if not self.ended[index] and cancel.is_set():
                self.ended[index], self.reasons[index] = True, DoneReason.CANCELLED
                yield request_id, Done(DoneReason.CANCELLED, 0, 0.0, self.counts[index], 0.0)

    def token(self, slot: int, text: str) -> Iterator[tuple[int, Token]]:
        """The slot's text, unless the slot is a spare or its request has ended."""
        if slot >= len(self.batch) or self.ended[slot]:
            return
        self.counts[slot] += 1
        yield self.batch[slot][0], Token(text)
        limit = self.batch[slot][1].options.num_predict
        if limit > 0 and self.counts[slot] >= limit:
            self.ended[slot], self.reasons[slot] = True, DoneReason.LENGTH

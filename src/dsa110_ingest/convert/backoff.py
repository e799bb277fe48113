"""The conversion backoff: how long a group waits before its next attempt, and how long
the Dask executor waits before dialling a scheduler that did not answer.

Both are waits *between* passes, not a retry loop around one call: a group's next
attempt is a time stored in its job (``next_attempt_at``, so it survives a restart and
any node may take it), and the executor is asked again on every dispatcher pass. So the
policy is tenacity's ``wait_exponential`` (the one the reader and the DB busy retry use
in their loops), asked for a delay by attempt number instead of driving the loop.
"""

from __future__ import annotations

from tenacity import RetryCallState, wait_exponential


class Backoff:
    """``initial`` seconds after the first failure, doubling with each further one, never
    more than ``maximum``."""

    def __init__(self, initial: float, maximum: float) -> None:
        self.initial = initial
        self._wait = wait_exponential(multiplier=initial, max=maximum)

    def delay(self, failures: int) -> float:
        """The wait after ``failures`` failed attempts in a row (0 counts as 1: a
        refunded attempt still waits ``initial``)."""
        # wait_exponential reads only the attempt number of the state it is given
        state = RetryCallState(None, None, (), {})  # type: ignore[arg-type]
        state.attempt_number = max(1, failures)
        return float(self._wait(state))

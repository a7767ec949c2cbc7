"""Stop strings, matched in the kernel so every device behaves the same and a
resumed generation stops exactly where an uninterrupted one would."""

from __future__ import annotations


class StopMatcher:
    """Feed text pieces; get back what may be released now, and whether a stop hit.

    Text that could be the start of a stop string is held back until it is not."""

    def __init__(self, stops: tuple[str, ...]) -> None:
        self.stops = tuple(s for s in stops if s)
        self.held = ""

    def feed(self, text: str) -> tuple[str, bool]:
        if not self.stops:
            return text, False
        self.held += text
        hits = [i for i in (self.held.find(s) for s in self.stops) if i >= 0]
        if hits:
            out = self.held[: min(hits)]
            self.held = ""
            return out, True
        keep = self._partial_len()
        out = self.held[: len(self.held) - keep]
        self.held = self.held[len(self.held) - keep :]
        return out, False

    def flush(self) -> str:
        out, self.held = self.held, ""
        return out

    def _partial_len(self) -> int:
        """Length of the longest suffix of held that is a proper prefix of a stop."""
        best = 0
        for s in self.stops:
            for n in range(min(len(s) - 1, len(self.held)), best, -1):
                if self.held.endswith(s[:n]):
                    best = n
                    break
        return best

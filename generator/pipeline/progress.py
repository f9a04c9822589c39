"""Progress bars per stage (counts and ETA) and the end-of-run summary."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

from tqdm import tqdm


@dataclass
class Progress:
    enabled: bool = True
    _bars: Dict[str, tqdm] = field(default_factory=dict)
    started: float = field(default_factory=time.perf_counter)
    timings: Dict[str, float] = field(default_factory=dict)

    def stage(self, name: str, total: int) -> tqdm:
        """A bar for one stage; ``update()`` it as units finish."""
        bar = tqdm(total=total, desc=f"{name:<28}", unit="unit", disable=not self.enabled, file=sys.stderr,
                   dynamic_ncols=True, leave=True)
        self._bars[name] = bar
        return bar

    def step(self, name: str, done: int, total: int) -> None:
        """Progress inside a long unit (e.g. training steps)."""
        bar = self._bars.get(name)
        if bar is None:
            bar = self._bars[name] = tqdm(total=total, desc=f"{name:<28}", unit="step", disable=not self.enabled,
                                          file=sys.stderr, dynamic_ncols=True, mininterval=1.0)
        bar.n = done
        if done >= total:
            bar.refresh()
            bar.close()
        else:
            bar.refresh() if done % 50 == 0 else None

    def close(self) -> None:
        for bar in self._bars.values():
            bar.close()


def group_by_reason(entries: List[Tuple[str, str]]) -> List[Tuple[str, List[str]]]:
    """(reason, parts) for ``(part, reason)`` pairs: each reason once, in order of first appearance."""
    groups: Dict[str, List[str]] = {}
    for what, why in entries:
        groups.setdefault(why, []).append(what)
    return list(groups.items())


@dataclass
class RunSummary:
    computed: List[str]
    reused: List[str]
    failed: List[Tuple[str, str]]
    seconds: float
    manifest: str
    site: Optional[str] = None
    stage_seconds: Dict[str, float] = field(default_factory=dict)  # wall time of each stage (not in any record)
    device: str = "cpu"
    skipped: List[Tuple[str, str]] = field(default_factory=list)  # unreadable inputs (not failures)
    unsupported: List[Tuple[str, str]] = field(default_factory=list)  # methods not defined for a model
    unit_seconds: Dict[str, float] = field(default_factory=dict)  # wall time of each unit (not in any record)
    rank: int = 0  # this process's rank in a torchrun job (0 writes the manifest)
    world: int = 1  # the job's number of ranks

    def text(self) -> str:
        if self.rank != 0:  # the job's summary is rank 0's; the others say what they did
            return (f"rank {self.rank} of {self.world}: computed {len(self.computed)} artifact(s), reused "
                    f"{len(self.reused)} in {self.seconds:.1f} s on {self.device}")
        ranks = f" on {self.world} ranks" if self.world > 1 else ""
        lines = [f"computed {len(self.computed)} artifact(s), reused {len(self.reused)} from cache, "
                 f"{len(self.failed)} failure(s) in {self.seconds:.1f} s on {self.device}{ranks}"]
        if self.stage_seconds:
            lines.append("  time per stage: " + ", ".join(f"{k} {v:.1f} s" for k, v in self.stage_seconds.items()))
        kinds: Dict[str, List[int]] = {}
        for label, bucket in (("computed", self.computed), ("reused", self.reused)):
            for entry in bucket:
                kinds.setdefault(entry.split("/")[0], [0, 0])[0 if label == "computed" else 1] += 1
        for kind, (c, r) in sorted(kinds.items()):
            lines.append(f"  {kind:<28} computed {c:>4}   reused {r:>4}")
        for what, why in self.skipped:
            lines.append(f"  skipped {what}: {why}")
        for why, parts in group_by_reason(self.unsupported):
            if len(parts) == 1:
                lines.append(f"  not applicable: {parts[0]}: {why}")
            else:
                lines.append(f"  not applicable ({len(parts)} parts): {why}")
                lines.append(f"    {'; '.join(parts)}")
        for what, why in self.failed:
            lines.append(f"  FAILED {what}: {why}")
        lines.append(f"manifest: {self.manifest}")
        if self.site:
            lines.append(f"site: {self.site}")
        return "\n".join(lines)

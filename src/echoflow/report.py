"""Per-file results and the batch summary (return value and Prefect table artifact)."""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import BaseModel

Status = Literal["converted", "skipped", "failed", "cancelled"]


class FileResult(BaseModel):
    source: str
    status: Status
    output: Optional[str] = None
    bytes: Optional[int] = None
    seconds: Optional[float] = None
    error: Optional[str] = None
    note: Optional[str] = None  # e.g. waited for or completed by another writer


class Summary(BaseModel):
    files: list[FileResult]
    stopped: Optional[int] = None  # the signal that stopped the run, if one did

    def count(self, status: Status) -> int:
        return sum(f.status == status for f in self.files)

    @property
    def failed(self) -> int:
        return self.count("failed")

    @property
    def ok(self) -> bool:
        return self.failed == 0 and self.count("cancelled") == 0

    def exit_code(self) -> int:
        """0 when every file is complete; 128 + signal when a signal stopped the run; else 1."""
        if self.stopped:
            return 128 + self.stopped
        return 0 if self.ok else 1

    def headline(self) -> str:
        return (
            f"{len(self.files)} files: {self.count('converted')} converted, "
            f"{self.count('skipped')} skipped (already complete), {self.failed} failed"
            + (f", {self.count('cancelled')} cancelled" if self.count("cancelled") else "")
        )

    def table(self) -> list[dict]:
        return [f.model_dump() for f in self.files]

    @classmethod
    def merge(cls, parts: list["Summary"]) -> "Summary":
        return cls(files=[f for p in parts for f in p.files])

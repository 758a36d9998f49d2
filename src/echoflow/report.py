"""Per-file results and the batch summary (return value and Prefect table artifact)."""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import BaseModel

Status = Literal["converted", "skipped", "failed"]


class FileResult(BaseModel):
    source: str
    status: Status
    output: Optional[str] = None
    bytes: Optional[int] = None
    seconds: Optional[float] = None
    error: Optional[str] = None


class Summary(BaseModel):
    files: list[FileResult]

    def count(self, status: Status) -> int:
        return sum(f.status == status for f in self.files)

    @property
    def failed(self) -> int:
        return self.count("failed")

    @property
    def ok(self) -> bool:
        return self.failed == 0

    def headline(self) -> str:
        return (f"{len(self.files)} files: {self.count('converted')} converted, "
                f"{self.count('skipped')} skipped (already complete), {self.failed} failed")

    def table(self) -> list[dict]:
        return [f.model_dump() for f in self.files]

    @classmethod
    def merge(cls, parts: list["Summary"]) -> "Summary":
        return cls(files=[f for p in parts for f in p.files])

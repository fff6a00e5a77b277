"""One check's outcome: PASS, FAIL or SKIP, with the evidence."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class Result:
    name: str
    status: str  # "pass" | "fail" | "skip"
    evidence: str

    @property
    def ok(self) -> bool:
        return self.status != "fail"

    def line(self) -> str:
        return f"{self.status.upper()} {self.name}: {self.evidence}"

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "status": self.status, "ok": self.ok, "evidence": self.evidence}


def verdict(name: str, ok: bool, evidence: str) -> Result:
    return Result(name, "pass" if ok else "fail", evidence)

"""Records that could not be read: one bad protein never stops a run of thousands."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Skipped:
    """A record (or whole file) that was skipped, and why.

    Parameters
    ----------
    source : str
        File or dataset path.
    record : str or None
        Chain id or record key within `source`; None when the whole file failed.
    reason : str
        One line saying what is wrong.
    """

    source: str
    record: str | None
    reason: str

    def __post_init__(self) -> None:
        # One line, always: ids and messages from damaged files can hold newlines or tabs.
        if self.record is not None:
            object.__setattr__(self, "record", " ".join(str(self.record).split()) or repr(self.record))
        object.__setattr__(self, "reason", " ".join(str(self.reason).split()))

    def __str__(self) -> str:
        where = self.source if self.record is None else f"{self.source} [{self.record}]"
        return f"{where}: {self.reason}"

    def to_dict(self) -> dict:
        """Plain dict for JSON output (keys ``file``, ``chain``, ``reason``)."""
        data = asdict(self)
        return {"file": data["source"], "chain": data["record"], "reason": data["reason"]}

"""Which backups to keep: the newest of each of the last ``keep_daily`` days and ``keep_weekly`` ISO weeks.

Backups are named by their UTC stamp (``20261204T031500Z``). Pure and standard-library only: hosts run
this very file (``python3 retention.py KEEP_DAILY KEEP_WEEKLY`` reads stamps on stdin and prints those
to delete), so the host and the bucket are pruned by one rule.
"""
from __future__ import annotations

import re
import sys
from datetime import datetime, timezone

STAMP = re.compile(r"^\d{8}T\d{6}Z$")


def parse_stamp(stamp: str) -> datetime | None:
    if not STAMP.fullmatch(stamp):
        return None
    try:
        return datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=timezone.utc)
    except ValueError:
        return None


def keep(stamps: list[str], keep_daily: int, keep_weekly: int) -> set[str]:
    """The stamps to keep: per day the newest, for the newest ``keep_daily`` days that have one; per ISO
    week the newest, for the newest ``keep_weekly`` weeks. Names that are no stamp are always kept
    (never delete what this rule did not make)."""
    dated = sorted(((parse_stamp(s), s) for s in set(stamps) if parse_stamp(s)), reverse=True)
    kept: set[str] = {s for s in stamps if not parse_stamp(s)}
    for count, bucket in ((keep_daily, lambda d: d.date()), (keep_weekly, lambda d: d.isocalendar()[:2])):
        seen: list = []
        for when, stamp in dated:
            key = bucket(when)
            if key in seen:
                continue
            if len(seen) >= count:
                break
            seen.append(key)
            kept.add(stamp)
    return kept


def to_delete(stamps: list[str], keep_daily: int, keep_weekly: int) -> list[str]:
    kept = keep(stamps, keep_daily, keep_weekly)
    return sorted(s for s in set(stamps) if s not in kept)


def main(argv: list[str]) -> int:
    daily, weekly = int(argv[1]), int(argv[2])
    for stamp in to_delete([line.strip() for line in sys.stdin if line.strip()], daily, weekly):
        print(stamp)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

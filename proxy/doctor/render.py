"""The checklist as a person reads it (one line per finding, grouped by area) and as a
script reads it (`--json`)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from proxy import __version__
from proxy.doctor.findings import Edit, Finding, Status
from proxy.doctor.fix import Applied


def checklist(findings: Sequence[Finding]) -> list[str]:
    lines: list[str] = []
    area = ""
    for finding in findings:
        if finding.area != area:
            area = finding.area
            lines.append(area)
        gap = " " if finding.says.startswith("= ") else ": "
        line = f"  {finding.status.mark} {finding.where}{gap}{finding.says}"
        lines.append(f"{line} → {finding.fix}" if finding.fix else line)
    return lines


def summary(findings: Sequence[Finding], *, fixed: bool) -> str:
    problems = [f for f in findings if f.status is Status.PROBLEM]
    if not problems:
        return "Nothing is wrong."
    edits = sum(len(f.edits) for f in problems)
    count = f"{len(problems)} problem{'s' * (len(problems) != 1)}."
    if not edits or fixed:
        return count
    return (
        f"{count} `codex-path-proxy doctor --fix` makes the {edits} config "
        f"edit{'s' * (edits != 1)} named above, after a backup of each file."
    )


def outcomes(done: Sequence[Applied]) -> list[str]:
    lines: list[str] = []
    for outcome in done:
        if outcome.refused:
            lines.append(f"Left {outcome.file} as it was ({outcome.refused}); edit it yourself:")
        else:
            lines.append(f"Edited {outcome.file} (backup: {outcome.backup}):")
        lines.extend(f"  set {edit.dotted} = {json.dumps(edit.value)}" for edit in outcome.edits)
    return lines


def as_json(findings: Sequence[Finding], done: Sequence[Applied] | None) -> str:
    report: dict[str, Any] = {
        "version": __version__,
        "ok": not any(f.status is Status.PROBLEM for f in findings),
        "checks": [
            {
                "area": f.area,
                "status": str(f.status),
                "where": f.where,
                "says": f.says,
                "fix": f.fix,
                "edits": [_edit(edit) for edit in f.edits],
            }
            for f in findings
        ],
    }
    if done is not None:
        report["fixes"] = [
            {
                "file": outcome.file,
                "backup": outcome.backup or None,
                "refused": outcome.refused or None,
                "edits": [_edit(edit) for edit in outcome.edits],
            }
            for outcome in done
        ]
    return json.dumps(report, indent=2, ensure_ascii=False)


def _edit(edit: Edit) -> dict[str, Any]:
    return {"file": edit.file, "key": list(edit.key), "value": edit.value}

"""The evidence report as a PDF (fpdf2, pure Python): the HTML page's sections, as text lines and
simple bar charts drawn with rectangles. Core fonts only (no font file, nothing fetched); text
outside Latin-1 is replaced, never dropped silently."""

from __future__ import annotations

from typing import Any

from fpdf import FPDF
from fpdf.enums import XPos, YPos

from vault.reports.evidence import SECTIONS

BAR_MM = 90.0


def _latin1(text: object) -> str:
    return str(text).encode("latin-1", "replace").decode("latin-1")


class _Doc:
    def __init__(self) -> None:
        self.pdf = FPDF(format="A4")
        self.pdf.set_auto_page_break(auto=True, margin=15)
        self.pdf.add_page()
        self.pdf.set_title("callvault evidence report")
        self.pdf.set_creator("callvault")

    def title(self, text: str, size: int = 13) -> None:
        self.pdf.set_font("Helvetica", "B", size)
        self.pdf.ln(2)
        self.pdf.cell(0, 8, _latin1(text), new_x=XPos.LMARGIN, new_y=YPos.NEXT)

    def line(self, text: str) -> None:
        self.pdf.set_font("Helvetica", "", 9)
        self.pdf.multi_cell(0, 4.5, _latin1(text), align="L", new_x=XPos.LMARGIN, new_y=YPos.NEXT)

    def bars(self, data: dict[str, int]) -> None:
        if not data:
            self.line("None in this period.")
            return
        top = max(data.values()) or 1
        self.pdf.set_font("Helvetica", "", 8)
        for label, value in data.items():
            y = self.pdf.get_y()
            self.pdf.cell(55, 5, _latin1(label)[:40])
            self.pdf.set_fill_color(74, 122, 181)
            width = max(0.5, BAR_MM * value / top) if value else 0.0
            if width:
                self.pdf.rect(self.pdf.l_margin + 55, y + 0.8, width, 3.4, style="F")
            self.pdf.set_xy(self.pdf.l_margin + 57 + width, y)
            self.pdf.cell(20, 5, str(value), new_x=XPos.LMARGIN, new_y=YPos.NEXT)


def render(report: dict[str, Any], *, sha256: str) -> bytes:
    t = dict(SECTIONS)
    d = _Doc()
    d.title("Evidence report", 16)
    scope = (
        "all tenants" if report["scope"]["all_tenants"] else f"tenant {report['scope']['tenant']}"
    )
    d.line(f"Period {report['period']['from']} to {report['period']['to']}; scope: {scope}; "
           f"generated {report['generated_at']}.")  # fmt: skip
    d.line(f"The signed JSON (SHA-256 {sha256}) is the evidence; this document is a reading of it.")

    d.title(t["reads"])
    d.bars({x["purpose"]: x["reads"] for x in report["reads"]})
    for x in report["reads"]:
        d.line(f"{x['purpose']}: {x['reads']} reads by {x['principals']} principal(s), "
               f"{x['bytes']} bytes")  # fmt: skip

    acc = report["access_requests"]
    d.title(t["access_requests"])
    ttd = acc["time_to_decision"]
    d.line(f"{acc['requested']} requested; time to decision: median {ttd['median_seconds']} s, "
           f"longest {ttd['max_seconds']} s.")  # fmt: skip
    d.bars(acc["by_status"])

    bg = report["break_glass"]
    d.title(t["break_glass"])
    d.line(f"{bg['count']} uses, {bg['review_overdue']} after-review(s) overdue.")
    for u in bg["uses"]:
        state = "OVERDUE" if u["review_overdue"] else "late" if u["reviewed_late"] else (
            "in time" if u["reviewed_at"] else "open")  # fmt: skip
        d.line(f"grant {u['grant_id']} ({u['purpose']}) used {u['used_at']}, reviewed "
               f"{u['reviewed_at'] or '-'}: {state}")  # fmt: skip

    er = report["erasure"]
    d.title(t["erasure"])
    d.bars(er["by_deadline"])
    for e in er["requests"]:
        d.line(f"request {e['request_id']} {e['status']}: received {e['received_at']}, due "
               f"{e['due_at']}, completed {e['completed_at'] or '-'}, deadline "
               f"{e['deadline'].upper()}, KEK retired {e['kek_retired_at'] or '-'}")  # fmt: skip

    d.title(t["disposals"])
    d.bars(report["disposals"])

    h = report["holds"]
    d.title(t["holds"])
    d.line(f"Placed {h['placed']}, released {h['released']}, open at the period's end "
           f"{h['open_at_end']}.")  # fmt: skip

    d.title(t["redactions"])
    d.bars(report["redactions"]["by_status"])
    d.line(f"Derivatives stored: {report['redactions']['derivatives_stored']}.")

    d.title(t["integrity_alarms"])
    d.line(f"{report['integrity_alarms']['count']} alarm(s).")
    d.bars(report["integrity_alarms"]["by_source"])

    a = report["audit_log"]
    d.title(t["audit_log"])
    d.line(("Verified" if a["verified"] else f"BROKEN at seq {a['first_bad_seq']}: {a['reason']}")
           + f"; {a['events_checked']} events, tree size {a['tree_size']}, "
           f"{a['heads_checked']} signed heads.")  # fmt: skip
    head = a["covering_tree_head"]
    d.line("No signed tree head covers the period's last event yet." if head is None else
           f"Signed tree head {head['id']} (size {head['tree_size']}, root {head['root_hash']}) "
           f"covers the period's last event (seq {a['last_event']['seq']}).")  # fmt: skip

    rc = report["recertification"]
    d.title(t["recertification"])
    d.line(f"Maximum key age {rc['max_key_age_days']} days; {len(rc['keys_past_max_age'])} "
           "key(s) past it.")  # fmt: skip
    for p in rc["principals"]:
        scope_text = p["scope"] if isinstance(p["scope"], str) else ", ".join(p["scope"])
        past = " PAST MAX AGE" if p["key_past_max_age"] else ""
        d.line(f"{p['principal_id']} owner {p['owner_ref']} role {p['role']} scope "
               f"{scope_text}: key age {p['key_age_days']} days{past}, last use "
               f"{p['last_use'] or '-'}")  # fmt: skip
    dc = report["disclosures"]
    d.title(t["disclosures"])
    d.line(f"{dc['count']} received ({dc['emergency']} emergency, {dc['objected']} objected, "
           f"{dc['barred']} barred and not listed); {dc['review_overdue']} after-review(s) "
           f"overdue; {dc['notification_reviews_due']} barred notification(s) due for review.")
    for x in dc["disclosures"]:
        overdue = " AFTER-REVIEW OVERDUE" if x["review_overdue"] else ""
        d.line(f"{x['disclosure_id']} {x['status']} {x['authority']} {x['legal_reference']}: "
               f"received {x['received_at']}, disclosed {x['disclosed_at'] or '-'}, notified "
               f"{x['notified_at'] or '-'}{overdue}")  # fmt: skip
    return bytes(d.pdf.output())

"""The evidence report as one self-contained HTML page: inline CSS and inline SVG bar charts, no
script, no external asset (nothing fetched when it is opened, so it can be archived or mailed).
Autoescaped Jinja2: every value from the report is text, never markup."""

from __future__ import annotations

from typing import Any

from jinja2 import Environment, StrictUndefined

from vault.reports.evidence import SECTIONS

BAR_WIDTH = 360

_TEMPLATE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'">
<title>callvault evidence report {{ r.period['from'] }} to {{ r.period['to'] }}</title>
<style>
body{font-family:sans-serif;margin:2em;max-width:60em;color:#222}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #bbb;padding:.2em .5em;
text-align:left;font-size:.9em}.bad{color:#a00;font-weight:bold}.ok{color:#060}
svg text{font-size:12px;font-family:sans-serif}code{font-size:.8em;word-break:break-all}
</style></head><body>
<h1>Evidence report</h1>
<p>Period {{ r.period['from'] }} to {{ r.period['to'] }};
scope: {{ "all tenants" if r.scope.all_tenants else "tenant " ~ r.scope.tenant }};
generated {{ r.generated_at }}. The signed JSON (SHA-256 <code>{{ sha256 }}</code>) is the evidence;
this page is a reading of it.</p>
{% macro chart(data) -%}
{%- set bars = chart_bars(data) -%}
{%- if bars -%}
<svg role="img" width="{{ 200 + width + 60 }}" height="{{ 22 * bars|length + 4 }}">
{%- for b in bars %}
<text x="0" y="{{ 22 * loop.index0 + 15 }}">{{ b.label }}</text>
<rect x="200" y="{{ 22 * loop.index0 + 3 }}" width="{{ b.width }}" height="16" fill="#4a7ab5"/>
<text x="{{ 205 + b.width }}" y="{{ 22 * loop.index0 + 15 }}">{{ b.value }}</text>
{%- endfor %}
</svg>
{%- else %}<p>None in this period.</p>{% endif -%}
{%- endmacro %}

<h2>{{ titles.reads }}</h2>
{{ chart(reads_chart) }}
<table><tr><th>Purpose</th><th>Reads</th><th>Principals</th><th>Bytes</th></tr>
{% for x in r.reads %}<tr><td>{{ x.purpose }}</td><td>{{ x.reads }}</td><td>{{ x.principals }}</td>
<td>{{ x.bytes }}</td></tr>{% endfor %}</table>

<h2>{{ titles.access_requests }}</h2>
<p>{{ r.access_requests.requested }} requested; time to decision: median
{{ r.access_requests.time_to_decision.median_seconds }} s, longest
{{ r.access_requests.time_to_decision.max_seconds }} s.</p>
{{ chart(r.access_requests.by_status) }}

<h2>{{ titles.break_glass }}</h2>
<p>{{ r.break_glass.count }} uses,
<span class="{{ 'bad' if r.break_glass.review_overdue else 'ok' }}">
{{ r.break_glass.review_overdue }} after-review(s) overdue</span>.</p>
<table><tr><th>Grant</th><th>Purpose</th><th>Used</th><th>Reviewed</th><th>Review</th></tr>
{% for u in r.break_glass.uses %}<tr><td>{{ u.grant_id }}</td><td>{{ u.purpose }}</td>
<td>{{ u.used_at }}</td><td>{{ u.reviewed_at or "-" }}</td>
<td class="{{ 'bad' if u.review_overdue or u.reviewed_late else 'ok' }}">
{{ "OVERDUE" if u.review_overdue else ("late" if u.reviewed_late
   else "in time" if u.reviewed_at else "open") }}
</td></tr>{% endfor %}</table>

<h2>{{ titles.erasure }}</h2>
{{ chart(r.erasure.by_deadline) }}
<table><tr><th>Request</th><th>Status</th><th>Received</th><th>Due</th><th>Completed</th>
<th>Deadline</th><th>KEK retired</th></tr>
{% for e in r.erasure.requests %}<tr><td>{{ e.request_id }}</td><td>{{ e.status }}</td>
<td>{{ e.received_at }}</td><td>{{ e.due_at }}</td><td>{{ e.completed_at or "-" }}</td>
<td class="{{ 'bad' if e.deadline in ('overdue', 'missed') else 'ok' }}">{{ e.deadline|upper }}</td>
<td>{{ e.kek_retired_at or "-" }}</td></tr>{% endfor %}</table>

<h2>{{ titles.disposals }}</h2>
{{ chart(r.disposals) }}

<h2>{{ titles.holds }}</h2>
<p>Placed {{ r.holds.placed }}, released {{ r.holds.released }}, open at the period's end
{{ r.holds.open_at_end }}.</p>

<h2>{{ titles.redactions }}</h2>
{{ chart(r.redactions.by_status) }}
<p>Derivatives stored: {{ r.redactions.derivatives_stored }}.</p>

<h2>{{ titles.integrity_alarms }}</h2>
<p class="{{ 'bad' if r.integrity_alarms.count else 'ok' }}">
{{ r.integrity_alarms.count }} alarm(s).</p>
{{ chart(r.integrity_alarms.by_source) }}

<h2>{{ titles.audit_log }}</h2>
{% set a = r.audit_log %}
<p class="{{ 'ok' if a.verified else 'bad' }}">{{ "Verified" if a.verified else "BROKEN" }}:
{{ a.events_checked }} events, tree size {{ a.tree_size }}, {{ a.heads_checked }} signed heads.
{% if not a.verified %}First bad seq {{ a.first_bad_seq }}: {{ a.reason }}{% endif %}</p>
{% if a.covering_tree_head %}<p>Signed tree head {{ a.covering_tree_head.id }} (size
{{ a.covering_tree_head.tree_size }}, root <code>{{ a.covering_tree_head.root_hash }}</code>)
covers the period's last event (seq {{ a.last_event.seq }}).</p>
{% else %}<p class="bad">No signed tree head covers the period's last event yet.</p>{% endif %}

<h2>{{ titles.recertification }}</h2>
<p>Maximum key age {{ r.recertification.max_key_age_days }} days;
<span class="{{ 'bad' if r.recertification.keys_past_max_age else 'ok' }}">
{{ r.recertification.keys_past_max_age|length }} key(s) past it</span>.</p>
<table><tr><th>Principal</th><th>Owner (pseudonym)</th><th>Role</th><th>Scope</th>
<th>Key age (days)</th><th>Last use</th></tr>
{% for p in r.recertification.principals %}<tr><td>{{ p.principal_id }}</td>
<td><code>{{ p.owner_ref }}</code></td><td>{{ p.role }}</td>
<td>{{ p.scope if p.scope is string else p.scope|join(", ") }}</td>
<td class="{{ 'bad' if p.key_past_max_age else '' }}">{{ p.key_age_days }}</td>
<td>{{ p.last_use or "-" }}</td></tr>{% endfor %}</table>

<h2>{{ titles.disclosures }}</h2>
{% set dc = r.disclosures %}
<p>{{ dc.count }} received ({{ dc.emergency }} emergency, {{ dc.objected }} objected,
{{ dc.barred }} with the customer's notification barred and not listed);
<span class="{{ 'bad' if dc.review_overdue else 'ok' }}">{{ dc.review_overdue }} after-review(s)
overdue</span>; <span class="{{ 'bad' if dc.notification_reviews_due else 'ok' }}">
{{ dc.notification_reviews_due }} barred notification(s) due for review</span>.</p>
<table><tr><th>Disclosure</th><th>Status</th><th>Authority</th><th>Reference</th>
<th>Received</th><th>Disclosed</th><th>After-review</th><th>Notified</th></tr>
{% for x in dc.disclosures %}<tr><td>{{ x.disclosure_id }}</td><td>{{ x.status }}</td>
<td>{{ x.authority }}</td><td>{{ x.legal_reference }}</td><td>{{ x.received_at }}</td>
<td>{{ x.disclosed_at or "-" }}</td>
<td class="{{ 'bad' if x.review_overdue else '' }}">{{ "OVERDUE" if x.review_overdue
   else (x.reviewed_at or ("open" if x.emergency else "-")) }}</td>
<td>{{ x.notified_at or "-" }}</td></tr>{% endfor %}</table>
</body></html>
"""


def chart_bars(data: dict[str, int]) -> list[dict[str, Any]]:
    top = max(data.values(), default=0)
    return [
        {"label": k, "value": v, "width": 0 if not top else max(1, round(BAR_WIDTH * v / top))}
        for k, v in data.items()
    ]


_ENV = Environment(autoescape=True, undefined=StrictUndefined)
_PAGE = _ENV.from_string(_TEMPLATE)


def render(report: dict[str, Any], *, sha256: str) -> str:
    return _PAGE.render(
        r=report, sha256=sha256, titles=dict(SECTIONS), width=BAR_WIDTH, chart_bars=chart_bars,
        reads_chart={x["purpose"]: x["reads"] for x in report["reads"]},
    )  # fmt: skip

"""The run timeline is readable in dark and light mode (issue #13): on every kind of row (a
call that succeeded, one that failed, one the policy refused, an approval, an annotation, a
rollback), each text meets WCAG AA contrast (4.5:1) against the background it is drawn on.
Screenshots at 1440x900 and 390x844 are kept with the role tours' artifacts."""

from __future__ import annotations

from typing import Any

import pytest

from approvals.services import decide_approval, request_approval
from operations.rollback import request_rollback
from runs.models import Run, Tool, ToolCall
from runs.services import annotate_run
from tests.integration.test_role_tours import DESKTOP, shoot
from tests.rollback.conftest import compensating, eager, tool_server  # noqa: F401

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("eager")]

RUN_ID = "run-contrast"
AA = 4.5

# For each text-bearing element of each timeline row: its text colour, composited over the
# backgrounds under it (walking up the ancestors, blending translucent ones), as a ratio.
CONTRASTS = """
() => {
  const rgba = (css) => { const m = css.match(/[\\d.]+/g) || [0, 0, 0, 0];
    return [+m[0], +m[1], +m[2], m.length > 3 ? +m[3] : 1]; };
  const over = (top, under) => { const a = top[3];
    return [0, 1, 2].map(i => top[i] * a + under[i] * (1 - a)).concat([1]); };
  const background = (el) => {
    const layers = [];
    for (let node = el; node; node = node.parentElement) {
      const bg = rgba(getComputedStyle(node).backgroundColor);
      if (bg[3] > 0) { layers.push(bg); if (bg[3] >= 1) break; }
    }
    let colour = [255, 255, 255, 1];
    for (const layer of layers.reverse()) colour = over(layer, colour);
    return colour;
  };
  const luminance = (c) => { const [r, g, b] = c.slice(0, 3).map(v => { v /= 255;
    return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); });
    return 0.2126 * r + 0.7152 * g + 0.0722 * b; };
  const found = [];
  for (const row of document.querySelectorAll("table.timeline tbody tr")) {
    for (const el of [row, ...row.querySelectorAll("*")]) {
      const own = [...el.childNodes].some(n => n.nodeType === 3 && n.textContent.trim());
      if (!own || !el.getClientRects().length) continue;
      const bg = background(el);
      const fg = over(rgba(getComputedStyle(el).color), bg);
      const [hi, lo] = [luminance(fg), luminance(bg)].sort((a, b) => b - a);
      found.push({row: row.id, cls: row.className, tag: el.tagName.toLowerCase(),
                  el: el.className, text: el.textContent.trim().slice(0, 40),
                  ratio: (hi + 0.05) / (lo + 0.05)});
    }
  }
  return found;
}
"""


@pytest.fixture
def every_row_type(acme, alice, record, compensating):  # noqa: F811
    """One run with a call that succeeded, one that failed, one the policy refused, an
    approval, an annotation and a rollback (partial: side effects remain)."""
    record(acme, {
        "run_id": RUN_ID, "agent_id": "billing-bot", "goal": "refund a duplicate charge",
        "status": "failed", "started_at": "2026-01-05T10:00:00+00:00",
        "ended_at": "2026-01-05T10:01:00+00:00",
        "model_calls": [{"call_id": "m1", "model": "gpt-4o", "provider": "openai",
                         "usage": {"input_tokens": 900, "output_tokens": 120},
                         "started_at": "2026-01-05T10:00:01+00:00",
                         "ended_at": "2026-01-05T10:00:02+00:00"}],
        "tool_calls": [
            {"call_id": "ok-1", "tool": "refund_payment", "action_class": "write",
             "input": {"charge": "ch-1"}, "output": {"ok": True}, "status": "succeeded",
             "supports_rollback": True, "idempotency_key": "k-1",
             "started_at": "2026-01-05T10:00:03+00:00", "ended_at": "2026-01-05T10:00:04+00:00"},
            {"call_id": "failed-1", "tool": "lookup_customer", "action_class": "read",
             "status": "failed", "error": {"type": "TimeoutError", "message": "no answer"},
             "started_at": "2026-01-05T10:00:05+00:00", "ended_at": "2026-01-05T10:00:06+00:00"},
            {"call_id": "refused-1", "tool": "delete_record", "action_class": "delete",
             "status": "denied", "error": {"message": "refused by policy"},
             "started_at": "2026-01-05T10:00:07+00:00"},
        ]})
    from policies.models import Mode
    from policies.services import ProposedCall, decide_tool_call, freeze_tool

    freeze_tool(acme, "delete_record", by=alice)
    decide_tool_call(acme, ProposedCall(tool="delete_record", action_class="delete",
                                        arguments={}, mode=Mode.LIVE, run_id=RUN_ID,
                                        call_id="refused-1", agent_id="billing-bot"))
    request = request_approval(acme, tool="send_email", action_class="write", arguments={},
                               run_id=RUN_ID, requested_by="billing-bot")
    decide_approval(request, by=alice, approve=True, justification="asked by the customer")
    annotate_run(Run.objects.get(tenant=acme, run_id=RUN_ID), by=alice,
                 body="checked with the payments team")
    compensating(Tool.objects.get(tenant=acme, name="refund_payment"),
                 (200, {"remaining_side_effects": ["a confirmation e-mail was sent"]}))
    request_rollback(ToolCall.objects.get(call_id="ok-1"), by=alice)


@pytest.mark.parametrize("scheme", ["dark", "light"])
def test_every_row_type_meets_aa_contrast(live_server, browser, alice, every_row_type, scheme):
    context = browser.new_context(viewport=DESKTOP, color_scheme=scheme)
    page = context.new_page()
    page.set_default_timeout(10_000)
    try:
        page.goto(f"{live_server.url}/admin/login/")
        page.fill("#id_username", "alice")
        page.fill("#id_password", "pw-for-tests-only")
        page.click("input[type=submit]")
        page.wait_for_url(f"{live_server.url}/admin/")
        page.goto(f"{live_server.url}/runs/acme/{RUN_ID}/")
        found: list[dict[str, Any]] = page.evaluate(CONTRASTS)
        shoot(page, f"timeline-{scheme}")
    finally:
        context.close()

    kinds = " ".join(f["cls"] for f in found)
    for kind in ("kind-tool_call", "error", "kind-annotation"):
        assert kind in kinds
    rows = {f["row"] for f in found}
    assert {"tool_call-ok-1", "tool_call-failed-1", "tool_call-refused-1"} <= rows
    texts = " ".join(f["text"] for f in found)
    for seen in ("approved", "checked with the payments team", "rollback"):
        assert seen in texts
    unreadable = [f"{f['row']} <{f['tag']} class={f['el']!r}> {f['text']!r}: "
                  f"{f['ratio']:.2f}" for f in found if f["ratio"] < AA]
    assert not unreadable, "below 4.5:1:\n" + "\n".join(unreadable)


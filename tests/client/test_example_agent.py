"""The example agent in examples/ runs against a portal and records what it did."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from core.models import Tenant
from policies.models import Decision
from runs.integrity import verify_tenant
from runs.models import Run, Step, ToolCall

ROOT = Path(__file__).resolve().parents[2]


def test_the_support_agent_example_records_its_run(live_server: Any, agent_key: str,
                                                    acme: Tenant) -> None:
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    # No published policy: the read goes ahead, the refund waits for a person nobody is.
    env.update(LEDGER_URL=live_server.url, LEDGER_API_KEY=agent_key, APPROVAL_TIMEOUT="0.5")
    result = subprocess.run([sys.executable, str(ROOT / "examples" / "support_agent.py"),
                             "--ticket", "T-7"], env=env, cwd=ROOT, capture_output=True,
                            text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert "a person will follow up (ApprovalTimedOut)" in result.stdout

    run = Run.objects.get(trigger_ref="T-7")
    assert run.status == "succeeded"
    assert list(Step.objects.filter(run=run).order_by("index").values_list("title", "status")
                ) == [("understand the ticket", "succeeded"),
                      ("look up the customer", "succeeded"),
                      ("refund the last payment", "escalated"),
                      ("reply to the customer", "succeeded")]
    calls = {c.tool.name: c for c in ToolCall.objects.filter(run=run)}
    assert calls["get_customer"].status == "succeeded"
    assert calls["refund_payment"].status == "cancelled"
    assert calls["send_reply"].status == "succeeded"
    assert list(Decision.objects.filter(run_id=run.run_id).order_by("id")
                .values_list("tool", "effect")) == [("get_customer", "allow"),
                                                    ("refund_payment", "require_approval")]
    assert verify_tenant(acme).intact

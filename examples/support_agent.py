"""A small support agent that records its run into ledger-portal and gates its tools.

Against the demo portal (``make demo`` prints the agent API key)::

    LEDGER_URL=http://127.0.0.1:8000 LEDGER_API_KEY=lpk_... python examples/support_agent.py

The demo tenant has no published policy, so reads are allowed and everything else waits for
a person: while the agent waits on the refund, approve or reject it at
http://127.0.0.1:8000/approvals/ (sign in as ``approver``). Then open the run in the admin, or
``GET /api/v1/runs/<run_id>/``. ``APPROVAL_TIMEOUT`` (seconds, default 120) bounds the wait.

The "model" and the tools are stand-ins (no network); only the portal is real.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from typing import Any

from ledger_client import ApprovalRejected, ApprovalTimedOut, GateError, LedgerClient

client = LedgerClient(agent_id="support-triage",
                      approval_timeout=float(os.environ.get("APPROVAL_TIMEOUT", "120")))

CUSTOMERS = {"ada@example.com": {"name": "Ada", "tier": "pro", "last_payment": "pay_1042"}}


def fake_model(prompt: str) -> tuple[str, int, int]:
    """Stands in for an LLM call: (answer, input tokens, output tokens)."""
    if "refund" in prompt.lower():
        answer = "The customer asks for a refund of their last payment."
    else:
        answer = "The customer has a question."
    return answer, len(prompt.split()), len(answer.split())


@client.gated_tool("get_customer", action_class="read")
def get_customer(email: str) -> dict[str, Any]:
    return CUSTOMERS.get(email, {})


def preview_refund(payment: str, amount_cents: int) -> dict[str, Any]:
    """The dry run: what a refund would do, without doing it."""
    return {"would_refund": payment, "amount_cents": amount_cents}


@client.gated_tool("refund_payment", action_class="write", dry_run=preview_refund)
def refund_payment(payment: str, amount_cents: int, idempotency_key: str = "") -> dict[str, Any]:
    # A real payment API takes the key so that a retried refund is not paid twice.
    return {"refunded": payment, "amount_cents": amount_cents, "idempotency_key": idempotency_key}


def handle(ticket: str, email: str, text: str) -> str:
    with client.run(goal=f"Resolve {ticket}: {text}", trigger_ref=ticket,
                    metadata={"channel": "email"}) as run:
        print(f"run {run.run_id}")
        with run.step("understand the ticket"):
            started = time.monotonic()
            answer, tokens_in, tokens_out = fake_model(text)
            run.model_call("stub-model", provider="example",
                           messages=[{"role": "user", "content": text}], response=answer,
                           input_tokens=tokens_in, output_tokens=tokens_out,
                           latency_ms=int((time.monotonic() - started) * 1000))

        with run.step("look up the customer"):
            customer = get_customer(email)

        outcome = "no refund needed"
        if "refund" in answer:
            with run.step("refund the last payment") as step:
                print("refund_payment may wait for a person: approve or reject it at "
                      f"{client.url}/approvals/")
                try:
                    refund = refund_payment(customer["last_payment"], 4_900)
                    outcome = f"refunded: {refund}"
                except (ApprovalRejected, ApprovalTimedOut) as exc:
                    step.status = "escalated"
                    outcome = f"a person will follow up ({type(exc).__name__})"
                except GateError as exc:
                    step.status = "refused"
                    outcome = f"refund refused: {exc}"

        with run.step("reply to the customer"), run.tool_call(
                "send_reply", action_class="write",
                input={"to": email, "ticket": ticket},
                classifications={"input.to": "confidential"}) as call:
            call.output = {"sent": True, "body": f"Hello {customer.get('name', '')}: {outcome}"}
        return outcome


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ticket", default="T-42")
    parser.add_argument("--email", default="ada@example.com")
    parser.add_argument("--text", default="Please refund my last payment, I was charged twice.")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    print(handle(args.ticket, args.email, args.text))
    delivered = client.flush(timeout=10)
    stats = client.stats()
    print(f"delivered {stats.delivered} records in {stats.requests} requests"
          + ("" if delivered else f"; {stats.buffered} still buffered"))
    return 0


if __name__ == "__main__":
    sys.exit(main())

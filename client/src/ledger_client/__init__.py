"""Record agent runs into ledger-portal and gate tool calls on its policies.

The ``ledger-portal-client`` distribution (``client/`` in ledger-portal's repository). Pure
standard library, no dependencies: it imports neither Django nor any portal module, so an
agent installs nothing else. ::

    from ledger_client import LedgerClient

    client = LedgerClient()  # LEDGER_URL, LEDGER_API_KEY
    with client.run(agent_id="support-bot", goal="Answer ticket T-42") as run:
        with run.step("draft a reply"):
            run.model_call("gpt-4.1", provider="openai", messages=msgs, response=text,
                           input_tokens=812, output_tokens=64)
        with run.tool_call("send_email", action_class="exfil", input={"to": to}) as call:
            call.output = send_email(to, text)
"""

from .client import LedgerClient
from .errors import (
    ApprovalRejected,
    ApprovalTimedOut,
    DecisionUnavailable,
    GateError,
    LedgerClientError,
    SandboxOnly,
    ToolCallDenied,
)
from .gating import Clearance, Decision
from .recording import ModelCall, Run, Step, ToolCall, current_run
from .sender import DeliveryStats

__all__ = [
    "ApprovalRejected",
    "ApprovalTimedOut",
    "Clearance",
    "Decision",
    "DecisionUnavailable",
    "DeliveryStats",
    "GateError",
    "LedgerClient",
    "LedgerClientError",
    "ModelCall",
    "Run",
    "SandboxOnly",
    "Step",
    "ToolCall",
    "ToolCallDenied",
    "current_run",
]

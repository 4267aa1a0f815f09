from .base import AppendOnlyViolation, LedgerRecord
from .deferred import DeferredItem, DeferredReason, DeferredSource, DeferredStatus
from .governance import (
    GOVERNED_TOOL_FIELDS,
    ActionClass,
    Agent,
    ConnectorKind,
    DryRunVia,
    RedactionRule,
    Tool,
    ToolChange,
    ToolChangeStatus,
)
from .integrity import CommitmentKey, IntegrityAlarm, TenantDigest
from .otlp import OtlpEvent, OtlpSpan, OtlpSpanState, OtlpTrace, OtlpTraceState
from .records import (
    Annotation,
    AnnotationKind,
    Classification,
    ModelCall,
    Run,
    RunStatus,
    Step,
    ToolCall,
    ToolCallStatus,
)
from .retention import LegalHold, RemovalRecord

__all__ = [
    "GOVERNED_TOOL_FIELDS",
    "ActionClass",
    "Agent",
    "Annotation",
    "AnnotationKind",
    "AppendOnlyViolation",
    "Classification",
    "CommitmentKey",
    "ConnectorKind",
    "DeferredItem",
    "DeferredReason",
    "DeferredSource",
    "DeferredStatus",
    "DryRunVia",
    "IntegrityAlarm",
    "LedgerRecord",
    "LegalHold",
    "ModelCall",
    "OtlpEvent",
    "OtlpSpan",
    "OtlpSpanState",
    "OtlpTrace",
    "OtlpTraceState",
    "RedactionRule",
    "RemovalRecord",
    "Run",
    "RunStatus",
    "Step",
    "TenantDigest",
    "Tool",
    "ToolCall",
    "ToolCallStatus",
    "ToolChange",
    "ToolChangeStatus",
]

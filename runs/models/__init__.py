from .base import AppendOnlyViolation, LedgerRecord
from .governance import ActionClass, Agent, RedactionRule, Tool
from .integrity import TenantDigest
from .otlp import OtlpSpan, OtlpSpanState, OtlpTrace, OtlpTraceState
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
    "ActionClass",
    "Agent",
    "Annotation",
    "AnnotationKind",
    "AppendOnlyViolation",
    "Classification",
    "LedgerRecord",
    "LegalHold",
    "ModelCall",
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
]

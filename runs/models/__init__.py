from .base import AppendOnlyViolation, LedgerRecord
from .governance import ActionClass, Agent, ConnectorKind, DryRunVia, RedactionRule, Tool
from .integrity import IntegrityAlarm, TenantDigest
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
from .replay import (
    FollowUp,
    Replay,
    ReplayMode,
    ReplayStatus,
    ReplayStep,
    StepMode,
    StepStatus,
)
from .retention import LegalHold, RemovalRecord
from .rollback import Rollback, RollbackStatus

__all__ = [
    "ActionClass",
    "Agent",
    "Annotation",
    "AnnotationKind",
    "AppendOnlyViolation",
    "Classification",
    "ConnectorKind",
    "DryRunVia",
    "FollowUp",
    "IntegrityAlarm",
    "LedgerRecord",
    "LegalHold",
    "ModelCall",
    "OtlpSpan",
    "OtlpSpanState",
    "OtlpTrace",
    "OtlpTraceState",
    "RedactionRule",
    "RemovalRecord",
    "Replay",
    "ReplayMode",
    "ReplayStatus",
    "ReplayStep",
    "Rollback",
    "RollbackStatus",
    "Run",
    "RunStatus",
    "Step",
    "StepMode",
    "StepStatus",
    "TenantDigest",
    "Tool",
    "ToolCall",
    "ToolCallStatus",
]

from .base import AppendOnlyViolation, LedgerRecord
from .governance import ActionClass, Agent, ConnectorKind, DryRunVia, RedactionRule, Tool
from .integrity import TenantDigest
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
    "LedgerRecord",
    "ModelCall",
    "RedactionRule",
    "Rollback",
    "RollbackStatus",
    "Run",
    "RunStatus",
    "Step",
    "TenantDigest",
    "Tool",
    "ToolCall",
    "ToolCallStatus",
]

from .replay import (
    FollowUp,
    Replay,
    ReplayMode,
    ReplayStatus,
    ReplayStep,
    StepMode,
    StepStatus,
)
from .rollback import Rollback, RollbackStatus

__all__ = [
    "FollowUp",
    "Replay",
    "ReplayMode",
    "ReplayStatus",
    "ReplayStep",
    "Rollback",
    "RollbackStatus",
    "StepMode",
    "StepStatus",
]

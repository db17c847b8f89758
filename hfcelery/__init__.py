"""hfcelery: Hangfire's job model for Celery.

Load it with ``hfcelery.init_app(app)``, then create jobs with :data:`BackgroundJob`; every job
has a persisted state and state history, read through :func:`monitoring`.
"""

from __future__ import annotations

from hfcelery.assembly import init_app
from hfcelery.calls import Call, call
from hfcelery.client import BackgroundJob, BackgroundJobClient
from hfcelery.config import HfConfig
from hfcelery.continuations import JobContinuationOptions
from hfcelery.errors import (
    ArgumentSerializationError,
    ConfigurationError,
    ForbiddenFunctionError,
    FunctionNotFoundError,
    HfceleryError,
    InvalidArgumentError,
    InvalidCallError,
    InvalidCronError,
    InvalidScheduleError,
    InvalidTimeZoneError,
    JobCreationCanceledError,
    JobCreationError,
    JobNotFoundError,
    JobPerformanceError,
    NotInitializedError,
    RecurringJobNotFoundError,
    SchemaOutOfDateError,
    SchemaTooNewError,
    StoreError,
)
from hfcelery.filters import (
    ApplyStateContext,
    AutomaticRetry,
    CandidateState,
    CreatedContext,
    CreatingContext,
    ElectStateContext,
    JobFilter,
    PerformedContext,
    PerformingContext,
    global_filters,
    job_filter,
)
from hfcelery.monitoring import Monitoring, monitoring
from hfcelery.options import (
    AttemptsExceeded,
    JobOptions,
    RetryPolicy,
    automatic_retry,
    disable_concurrent_execution,
    display_name,
    latency_timeout,
    queue,
    retention,
)
from hfcelery.progress import log, progress
from hfcelery.records import (
    JobDetails,
    JobPage,
    JobSummary,
    RecurringJobRecord,
    ServerRecord,
    StateRecord,
)
from hfcelery.recurring import Cron, MisfireHandling, RecurringJob, RecurringJobManager
from hfcelery.states import State
from hfcelery.worker.context import CancellationToken, JobContext, current_job
from hfcelery.worker.execution import cancellation_requested

__version__ = "0.1.0"

__all__ = [
    # Setting up
    "HfConfig",
    "init_app",
    # Creating and managing jobs
    "BackgroundJob",
    "BackgroundJobClient",
    "Call",
    "JobContinuationOptions",
    "call",
    # Recurring jobs
    "Cron",
    "MisfireHandling",
    "RecurringJob",
    "RecurringJobManager",
    "RecurringJobRecord",
    # Per-function options (decorators)
    "AttemptsExceeded",
    "JobOptions",
    "RetryPolicy",
    "automatic_retry",
    "disable_concurrent_execution",
    "display_name",
    "latency_timeout",
    "queue",
    "retention",
    # Filters (Hangfire's extension points)
    "ApplyStateContext",
    "AutomaticRetry",
    "CandidateState",
    "CreatedContext",
    "CreatingContext",
    "ElectStateContext",
    "JobFilter",
    "PerformedContext",
    "PerformingContext",
    "global_filters",
    "job_filter",
    # Inside a running job
    "cancellation_requested",
    "current_job",
    "JobContext",
    "CancellationToken",
    "log",
    "progress",
    # Reading jobs
    "JobDetails",
    "JobPage",
    "JobSummary",
    "Monitoring",
    "ServerRecord",
    "State",
    "StateRecord",
    "monitoring",
    # Errors
    "ArgumentSerializationError",
    "ConfigurationError",
    "ForbiddenFunctionError",
    "FunctionNotFoundError",
    "HfceleryError",
    "InvalidArgumentError",
    "InvalidCallError",
    "InvalidCronError",
    "InvalidScheduleError",
    "InvalidTimeZoneError",
    "JobCreationCanceledError",
    "JobCreationError",
    "JobNotFoundError",
    "JobPerformanceError",
    "NotInitializedError",
    "RecurringJobNotFoundError",
    "SchemaOutOfDateError",
    "SchemaTooNewError",
    "StoreError",
]

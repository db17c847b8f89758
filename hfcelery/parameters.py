"""Job parameters (Hangfire's ``Get/SetJobParameter``) of one stored job, as jobs and filters
read and write them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hfcelery.validation import check_parameter

if TYPE_CHECKING:
    from hfcelery.extension import Extension


class JobParameterStore:
    """A job's parameters: read from the store on first use, written through."""

    def __init__(self, extension: Extension, job_id: str) -> None:
        self._extension = extension
        self._job_id = job_id
        self._values: dict[str, Any] | None = None

    def all(self) -> dict[str, Any]:
        if self._values is None:
            self._values = self._extension.store.job_parameters(self._job_id)
        return self._values

    def get(self, name: str, default: Any = None) -> Any:
        return self.all().get(name, default)

    def set(self, name: str, value: Any) -> None:
        check_parameter(name, value)
        self._extension.store.set_job_parameter(self._job_id, name, value)
        self.all()[name] = value

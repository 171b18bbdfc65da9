"""Domain exceptions. The API maps each to one HTTP status in one place (`api/errors.py`).

Every message is written for the person who made the request: it says what is wrong and what
to do about it.
"""

from __future__ import annotations


class DoppelError(Exception):
    """Base of every error Doppel reports to a user."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidMedia(DoppelError):
    """An uploaded file cannot be used: unreadable, no audio, silent, too short."""


class InvalidTrainingVideo(InvalidMedia):
    """A training video cannot make a replica: no audio, too short, no face, several faces,
    a face too small or turned away. The message says what to record instead.
    """


class InvalidRequest(DoppelError):
    """A request is well-formed HTTP but its content cannot be acted on."""


class Malformed(InvalidRequest):
    """The request's content cannot be read at all (a malformed WebRTC offer): a 400, where
    content that reads but cannot be acted on is a 422.
    """


class PayloadTooLarge(InvalidRequest):
    """A file (uploaded or fetched from a URL) is over the size the operator allows; the
    message names the limit.
    """


class NotFound(DoppelError):
    """The resource does not exist for this tenant (other tenants' resources look the same)."""


class Conflict(DoppelError):
    """The resource exists but is not in a state that allows this (a replica still training)."""


class ServiceUnavailable(DoppelError):
    """A backing service (Triton, Redis, PostgreSQL) does not answer; retrying later may work."""


class AtCapacity(ServiceUnavailable):
    """The machine already serves as much as it can in real time (live calls); a seat frees
    when a call ends.
    """

    retry_after = 30


class InferenceFailed(DoppelError):
    """A model answered with an error for this input."""


class InvalidVoiceSample(InvalidTrainingVideo):
    """Training audio cannot teach a voice: no speech, too little speech, or music only.

    `reason` is one of "no_speech", "too_short", "music" for callers that branch on it.
    """

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class Stopped(Exception):  # noqa: N818 (not an error: a requested stop)
    """Work ended early because its caller asked it to (a `threading.Event` set when the job
    was cancelled or a step running beside it failed). Never reaches a user: the caller that
    set the event raises its own cause.
    """

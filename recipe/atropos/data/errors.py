"""Typed errors of the Atropos integration."""


class AtroposError(RuntimeError):
    """Base class of every error this recipe raises about the Atropos API."""


class AtroposUnavailableError(AtroposError):
    """The API could not be reached (connection errors, timeouts, 5xx) within the retry budget."""


class AtroposBatchRequestFailedError(AtroposUnavailableError):
    """A `GET /batch` failed after it reached the server (read timeout, reset, 5xx): what it popped,
    if anything, is lost; counted by the client, never retried as if nothing had happened."""


class AtroposProtocolError(AtroposError):
    """The API answered something this client cannot use (4xx, bad JSON, unexpected shape)."""


class AtroposNotRegisteredError(AtroposProtocolError):
    """The API has no trainer registration (fresh or reset server): register again."""


class AtroposRegistrationError(AtroposProtocolError):
    """`/register` answered but `/info` shows the registration did not take."""


class InvalidGroupError(ValueError):
    """One ScoredData group failed validation; names the group and the field."""

    def __init__(self, group_index: int, env_id: object, field: str, reason: str, category: str = "") -> None:
        self.group_index = group_index
        self.env_id = env_id
        self.field = field
        self.reason = reason
        self.category = category  # counted as atropos/invalid/<category> (the field when empty)
        super().__init__(f"group {group_index} (env_id={env_id}): field '{field}': {reason}")

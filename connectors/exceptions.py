"""Errors of the connectors. Each message names what went wrong and what to do."""

__all__ = [
    "BrokerStartError",
    "JavaNotFoundError",
    "KafkaDownloadError",
    "LocalKafkaError",
    "MavenNotFoundError",
    "PortInUseError",
    "RosterFileError",
    "TokenFileError",
]


class LocalKafkaError(RuntimeError):
    """The embedded Kafka broker could not be fetched, started or stopped."""


class JavaNotFoundError(LocalKafkaError):
    """No Java, or a Java older than Kafka needs."""


class MavenNotFoundError(LocalKafkaError):
    """Maven is needed to fetch Kafka's jars and is not installed."""


class KafkaDownloadError(LocalKafkaError):
    """Maven could not fetch Kafka's jars."""


class PortInUseError(LocalKafkaError):
    """A port the broker needs is taken."""


class BrokerStartError(LocalKafkaError):
    """The broker exited or did not answer in time."""


class TokenFileError(ValueError):
    """The gateway's tokens file is unreadable, or a token change cannot be made."""


class RosterFileError(ValueError):
    """A roster or courses file cannot be loaded; the message names the line and field."""

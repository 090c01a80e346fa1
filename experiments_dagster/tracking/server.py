"""A tracking server's refusals as one line a user can act on, instead of a REST stack trace.

MLflow raises ``MlflowException`` with an error code for every failed REST call (401:
UNAUTHENTICATED, 403: PERMISSION_DENIED) and wraps a connection failure, after its retries, in an
``MlflowException`` whose text names the endpoint and urllib3's reason. ``server_problem`` reads
those public fields; ``check_server`` makes one cheap call at the start of a run so that a wrong
URL or password fails the run at once, naming the URL and the user.
"""

from __future__ import annotations

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from experiments_dagster.core import paths, settings
from experiments_dagster.core.errors import ExperimentInputError, UsageError

UNREACHABLE_HINTS = (  # most specific first: the first one found names the reason
    "Connection refused",
    "Read timed out",
    "ConnectTimeout",
    "NameResolutionError",
    "RemoteDisconnected",
    "Connection aborted",
    "Failed to establish a new connection",
    "Max retries exceeded",
)


class TrackingServerError(ExperimentInputError):
    """The tracking server could not be reached, or refused the credentials or the action."""


def is_server(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


def refusal(exc: BaseException, uri: str) -> str | None:
    """One line for a server at ``uri`` that answered and refused (credentials, permission, not
    an MLflow server); else None."""
    if not is_server(uri):
        return None
    user = settings.tracking_username()
    who = f"user {user!r}" if user else "no user (MLFLOW_TRACKING_USERNAME is unset)"
    for e in _chain(exc):
        if not isinstance(e, MlflowException):
            continue
        code = e.error_code
        if code in ("UNAUTHENTICATED", "CUSTOMER_UNAUTHORIZED"):
            return (
                f"authentication failed at the MLflow tracking server {uri} for {who}: set "
                "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD to a user of its basic-auth app "
                "(the local stack writes them to .stack/env)."
            )
        if code == "PERMISSION_DENIED":
            return (
                f"permission denied at the MLflow tracking server {uri} for {who}: {_first_line(e)}. "
                "Ask an admin for EDIT (or MANAGE) on the experiment or model, or log to another one."
            )
        if code == "ENDPOINT_NOT_FOUND":
            return (
                f"{uri} answered, but not as an MLflow tracking server ({_first_line(e)}): fix "
                "MLFLOW_TRACKING_URI."
            )
    return None


def server_problem(exc: BaseException, uri: str) -> str | None:
    """One line for a refusal (``refusal``) or a connection failure of the server at ``uri``; else None."""
    found = refusal(exc, uri)
    if found is not None or not is_server(uri):
        return found
    for e in _chain(exc):
        if isinstance(e, ConnectionError | TimeoutError) or (
            isinstance(e, MlflowException) and any(hint in str(e) for hint in UNREACHABLE_HINTS)
        ):
            return _unreachable(uri, e)
    return None


def check_server(client: MlflowClient) -> None:
    """One request to ``client``'s server (a no-op for local stores); raise ``TrackingServerError``
    with ``server_problem``'s line if it fails that way."""
    uri = client.tracking_uri
    if not is_server(uri):
        return
    try:
        client.search_experiments(max_results=1)
    except Exception as exc:
        problem = server_problem(exc, uri)
        if problem is None:
            raise
        raise TrackingServerError(problem) from exc


def _unreachable(uri: str, exc: BaseException) -> str:
    retries, timeout = settings.http_waits()
    return (
        f"the MLflow tracking server {uri} is unreachable ({_reason(exc)}; {retries} retries, "
        f"{timeout} s timeout per request): start it (`make stack-up` for the local stack) or fix "
        "MLFLOW_TRACKING_URI."
    )


def _reason(exc: BaseException) -> str:
    text = str(exc)
    for hint in UNREACHABLE_HINTS:
        if hint in text:
            return hint.lower()
    return type(exc).__name__


def _first_line(exc: MlflowException) -> str:
    return (exc.message or str(exc)).strip().splitlines()[0][:300]


def _chain(exc: BaseException):
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def answering_client(tracking_uri: str | None) -> MlflowClient:
    """A client on a store that exists and answers; UsageError otherwise (never creates one)."""
    uri = tracking_uri or paths.default_tracking_uri()
    db = paths.sqlite_path(uri)
    if uri.startswith("sqlite:") and (db is None or not db.is_file()):
        raise UsageError(
            f"No MLflow store at {uri}: the SQLite file does not exist. Set MLFLOW_TRACKING_URI "
            "or --tracking-uri to an existing store (run `make run` to create the default)."
        )
    # Fail fast on a dead server instead of MLflow's minutes of retries.
    settings.set_default(settings.RETRIES_ENV, "0")
    settings.set_default(settings.TIMEOUT_ENV, "10")
    client = MlflowClient(uri)
    try:
        client.search_experiments(max_results=1)
    except Exception as exc:  # connection errors surface as many types
        problem = refusal(exc, uri)  # refused credentials or permission: the server's one line
        raise UsageError(
            problem or f"MLflow store {uri} is unreachable: {type(exc).__name__}: {exc}"
        ) from exc
    return client

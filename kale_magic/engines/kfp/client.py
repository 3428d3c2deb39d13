"""Where the KFP API is, how to authenticate, and what its errors mean to a user.

Host: ``--host``, then ``%config Kfp.host``, then ``KF_PIPELINES_ENDPOINT``.
UI links: ``Kfp.ui_host``, then ``KF_PIPELINES_UI_ENDPOINT``, then the host.
Authentication is whatever ``kfp.Client`` supports: a bearer token from
``KF_PIPELINES_TOKEN``, the cookies or header in the kfp context file
(``~/.config/kfp/context.json``), or the in-cluster service-account token
(``KF_PIPELINES_SA_TOKEN_PATH`` or its default path).  Tokens are handed to the
client and nowhere else: not in messages, reprs, logs or the run record.
"""

from __future__ import annotations

import json
import os
import socket
import warnings
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from ...errors import EngineError

CONNECTION = ("host", "ui_host", "namespace", "pipeline_root")  # the Kale settings that say where KFP is
# what the API answers when it refuses an upload without saying why (pipeline_upload_server.go hides
# the authorization error behind these), and Istio's plain-text 403 in front of a multi-user install
UPLOAD_REFUSALS = ("Failed to create a pipeline", "Failed to create a pipeline version")
ISTIO_DENIED = "RBAC: access denied"
CONNECT_TIMEOUT = 5.0  # seconds; an unreachable host must fail well within 10 s
SA_TOKEN_PATH = "/var/run/secrets/kubeflow/pipelines/token"
HOST_SETTINGS = "--host, %config Kfp.host or KF_PIPELINES_ENDPOINT"
AUTH_SETTINGS = ("KF_PIPELINES_TOKEN, the cookies/header in ~/.config/kfp/context.json, "
                 "or the service-account token (KF_PIPELINES_SA_TOKEN_PATH)")


@dataclass(frozen=True)
class KfpSettings:
    host: str
    ui_host: str
    namespace: str | None = None
    token: str | None = field(default=None, repr=False)

    def link(self, fragment: str) -> str:
        """A KFP UI link, e.g. ``link('runs/details/ID')``."""
        return f"{self.ui_host.rstrip('/')}/#/{fragment}"


def resolve_settings(host: str | None = None, ui_host: str | None = None, *,
                     config: dict | None = None, environ=None) -> KfpSettings:
    """Settings from the explicit arguments, then ``config`` (Kale traits), then the environment."""
    config = config or {}
    environ = os.environ if environ is None else environ
    host = host or config.get("host") or environ.get("KF_PIPELINES_ENDPOINT")
    if not host:
        raise EngineError(f"No Kubeflow Pipelines host is configured: set {HOST_SETTINGS}.")
    if not host.startswith(("http://", "https://")):
        host = f"https://{host}"
    ui_host = ui_host or config.get("ui_host") or environ.get("KF_PIPELINES_UI_ENDPOINT") or host
    return KfpSettings(host=host.rstrip("/"), ui_host=ui_host, namespace=config.get("namespace") or None,
                       token=environ.get("KF_PIPELINES_TOKEN") or None)


def connect(settings: KfpSettings):
    """A ``kfp.Client`` for ``settings``, or an ``EngineError`` within seconds if the host is unreachable."""
    _probe(settings.host)
    client_class = _client_class()
    credentials = None
    if not settings.token:
        from kfp.client import ServiceAccountTokenVolumeCredentials

        token_path = os.environ.get("KF_PIPELINES_SA_TOKEN_PATH", SA_TOKEN_PATH)
        if os.path.isfile(token_path):
            credentials = ServiceAccountTokenVolumeCredentials(token_path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            client = client_class(host=settings.host, namespace=settings.namespace or "kubeflow",
                                  existing_token=settings.token, credentials=credentials,
                                  ui_host=settings.ui_host)
        client.get_kfp_healthz()
        return client
    except Exception as exc:
        raise api_error(exc, settings, "checking the server's health") from None


def _probe(host: str) -> None:
    url = urlsplit(host)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname, port), timeout=CONNECT_TIMEOUT).close()
    except OSError as exc:
        raise EngineError(f"Cannot reach Kubeflow Pipelines at {host} ({exc.strerror or exc}); "
                          f"check {HOST_SETTINGS}.") from None


def _client_class():
    """``kfp.Client`` that checks health once instead of retrying 5 times, 5 s apart, on 401/5xx."""
    import kfp

    class Client(kfp.Client):
        def get_kfp_healthz(self, sleep_duration: int = 5):
            return self._healthz_api.healthz_service_get_healthz(_request_timeout=CONNECT_TIMEOUT)

    return Client


def api_error(exc: Exception, settings: KfpSettings, action: str) -> Exception:
    """The one-sentence ``EngineError`` for a failed API call; unknown exceptions pass through."""
    status = getattr(exc, "status", None)
    if status is None:
        name = type(exc).__name__
        if "MaxRetryError" in name or isinstance(exc, (OSError, TimeoutError)):
            return EngineError(f"Lost the connection to Kubeflow Pipelines at {settings.host} while "
                               f"{action}; check {HOST_SETTINGS}.")
        return exc
    message = server_message(exc)
    if status in (401, 403):
        where = f"in namespace {settings.namespace!r} " if settings.namespace else ""
        proxy = (" (Istio's authorization policy answered, before KFP: the notebook's identity may not use "
                 f"Kubeflow Pipelines {where}; ask for access to that profile)") if message == ISTIO_DENIED else ""
        return EngineError(f"Kubeflow Pipelines at {settings.host} refused the credentials while {action} "
                           f"(HTTP {status}: {message}){proxy}; check {AUTH_SETTINGS}.")
    if status == 0:
        return EngineError(f"Cannot talk to Kubeflow Pipelines at {settings.host} while {action} ({message}); "
                           f"check {HOST_SETTINGS}.")
    if status == 400 and message in UPLOAD_REFUSALS:
        return EngineError(f"Kubeflow Pipelines at {settings.host} answered HTTP 400 while {action}: {message} "
                           f"(the upload endpoint gives no reason; it answers so when the notebook's identity may "
                           f"not create pipelines in namespace {settings.namespace or 'its namespace'!r}, or the "
                           f"file is not a pipeline); check {AUTH_SETTINGS} and %config Kfp.namespace.")
    return EngineError(f"Kubeflow Pipelines at {settings.host} answered HTTP {status} while {action}: {message}")


def server_message(exc) -> str:
    """The server's words: the JSON error's message, a proxy's plain-text body, else the HTTP reason."""
    body = getattr(exc, "body", None)
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    try:
        payload = json.loads(body) if body else {}
    except (TypeError, ValueError):
        payload = body.strip() if isinstance(body, str) and len(body) < 500 else {}
    if isinstance(payload, str) and payload:
        return payload  # e.g. Istio's "RBAC: access denied"
    if isinstance(payload, dict):  # the gRPC gateway's {"message"}; the upload endpoints' {"error_message"}
        found = payload.get("message") or payload.get("error") or payload.get("error_message")
        if found:
            return str(found)
    return str(getattr(exc, "reason", "") or exc).strip()

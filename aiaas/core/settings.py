"""The one typed Settings object (environment prefix `AIAAS_`), read once per process."""

from __future__ import annotations

import functools
import ipaddress
import logging
import os
import secrets
import stat
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from aiaas.core.cpu import usable_cores
from aiaas.core.errors import ConfigurationError

log = logging.getLogger(__name__)

SECRET_FILE = "secret.key"
INSECURE_SECRETS = frozenset({"", "changeme", "change-me", "secret", "development", "dev"})
MIN_SECRET_CHARS = 32


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="AIAAS_", extra="ignore")

    env: Literal["production", "development", "test"] = "production"
    data_dir: Path = Field(default_factory=lambda: Path.home() / ".aiaas")
    database_url: str | None = None
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    secret_key: str | None = None
    # Reverse proxies whose X-Forwarded-For / X-Forwarded-Proto headers are believed: comma-separated
    # addresses or networks ("10.0.0.5,172.16.0.0/12"), "*" for any peer (only where nothing else can
    # reach the port). Then the audit log and per-address limits see the client, not the proxy. Empty:
    # the headers are ignored, and a client cannot claim another address by sending them.
    trusted_proxies: str = ""

    # Limits.
    max_request_bytes: int = Field(default=2 * 1024 * 1024, gt=0)
    max_upload_bytes: int = Field(default=512 * 1024 * 1024, gt=0)
    # Uploads (CSV, JSONL) larger than this are answered as soon as they are stored, with status
    # "uploaded", and checked in the background (status "processed" or "error"); smaller ones are
    # checked before the answer, their errors in it. The body itself always streams into the store.
    upload_inline_bytes: int = Field(default=16 * 1024 * 1024, ge=0)
    # A background check holds a lease on its file, renewed every third of this; a file left 'uploaded' by a
    # server that stopped (its lease run out) is checked by a running server within about this long.
    upload_check_lease_seconds: float = Field(default=30.0, gt=0)
    # What an upload may decode to, whatever its size on the wire (aiaas/data/limits.py): every format is
    # checked while it is read, Parquet from its metadata and page headers before any data is decoded.
    # A cell is one value (a JSON list item counts as one); decoded characters count one per cell plus
    # the text in it; the expansion ratio is decoded characters over file bytes (applies past 1 MiB).
    max_upload_rows: int = Field(default=5_000_000, gt=0)
    max_upload_columns: int = Field(default=1_000, gt=0)
    max_upload_cells: int = Field(default=10_000_000, gt=0)  # ~70 bytes each at most
    max_cell_chars: int = Field(default=100_000, gt=0)
    max_record_chars: int = Field(default=2 * 1024 * 1024, gt=0)  # one CSV record, JSONL line or JSON record
    max_decoded_chars: int = Field(default=4 * 512 * 1024 * 1024, gt=0)  # ~4x max_upload_bytes
    max_expansion_ratio: float = Field(default=100.0, gt=0)

    # Shared state for several nodes (issue #7): blobs in S3, jobs and serving on Ray.
    blob_store_url: str | None = None  # default: file://<data_dir>/blobs ; s3://bucket/prefix with the s3 extra
    s3_endpoint_url: str | None = None  # S3-compatible servers (MinIO, moto); None = AWS
    cluster_address: str | None = None  # a Ray cluster ("ray://host:10001" or "host:6379"); None = embedded
    ray_bind_host: str = "127.0.0.1"  # every listener Ray opens binds here
    ray_auth_token_path: Path | None = None  # token auth for the cluster; required in production
    ray_max_replicas: int = Field(default=2, ge=1)  # per deployment on Ray Serve (autoscaling upper bound)
    ray_gateway_url: str | None = None  # http://host:port of `aiaas ray-dispatcher --gateway-port`: serve on Ray
    rate_limit_url: str | None = None  # None/memory:// = one process; redis://… when API processes share limits

    # Rate limits per API key and quotas per organisation. An organisation's settings JSON may
    # override each of these by the same name (`aiaas orgs limits NAME --set name=value`); 0 = unlimited.
    rate_limit_requests_per_minute: int = Field(default=3000, ge=0)
    rate_limit_tokens_per_minute: int = Field(default=2_000_000, ge=0)
    quota_concurrent_jobs: int = Field(default=4, ge=0)  # fine-tuning jobs validating, queued or running
    quota_stored_bytes: int = Field(default=20 * 1024**3, ge=0)  # sum of the organisation's files
    quota_deployments: int = Field(default=50, ge=0)
    # Failed authentications are audited at most this often per client IP (a flood is not a write storm).
    auth_failure_audits_per_minute: int = Field(default=30, ge=0)

    # Metering: inference usage is aggregated in memory and written this often; the price sheet below
    # turns usage into cost in GET /v1/usage.
    usage_flush_seconds: float = Field(default=1.0, gt=0)
    price_currency: str = "usd"
    price_per_million_input_tokens: float = Field(default=0.02, ge=0)
    price_per_million_trained_tokens: float = Field(default=0.50, ge=0)
    price_per_cpu_hour: float = Field(default=0.05, ge=0)

    # Hot-path caches: how long an API key or deployment lookup may be reused (0 disables). Changes made
    # through this process apply at once; other API processes see them within this many seconds.
    lookup_cache_seconds: float = Field(default=5.0, ge=0)

    # Inference.
    max_inputs_per_request: int = Field(default=256, gt=0)
    max_input_chars: int = Field(default=20_000, gt=0)
    model_memory_budget_mb: int = Field(default=4096, gt=0)
    model_idle_unload_s: float = Field(default=900.0, gt=0)
    # How much lower than request serving the model cache's load threads run (nice; 0: the same priority): a
    # load's ~0.2 s of CPU then takes a core from requests only where one is idle (bench/README.md, "Density").
    model_load_nice: int = Field(default=10, ge=0, le=19)
    # One more inference thread than usable cores: the event loop shares the GIL with them, and while
    # one waits for it the spare keeps the cores busy. 2 cores: 1.86 vs 1.68 cores busy, +4.7% requests
    # served (median of 6 same-run windows; bench/README.md, "Serving: what changed").
    inference_threads: int = Field(default_factory=lambda: usable_cores() + 1, gt=0)
    # Move the server's start-up objects (imported modules, the app) out of the garbage collector's
    # reach once started: a full collection then walks ~16k objects instead of ~160k, pausing
    # requests 4-8 ms instead of 45-60 ms (bench/README.md, "Serving: what changed").
    gc_freeze: bool = True
    # How long a thread may hold the GIL while another waits for it (Python's default is 5 ms). The
    # inference threads drop the GIL around every tokenizer and ONNX Runtime call and need it back
    # right after, while the event loop holds it for whole bursts of requests: at 5 ms they spent
    # ~40% of their batches waiting; at 0.1 ms the server keeps 1.8 of 2 cores busy instead of 1.66
    # and serves ~7% more requests (bench/README.md, "Serving: what changed").
    gil_switch_interval_ms: float = Field(default=0.1, gt=0, le=100)
    # The C allocator of an API process (aiaas/core/native_memory.py): at most this many glibc malloc arenas
    # (0: glibc's default, 8 per core) and a malloc_trim this often on a background thread (0: never). With
    # the defaults the soak's API process kept its RSS flat after warm-up; with glibc's behaviour it grew
    # by the free memory its threads left scattered over 16 arenas (bench/README.md, "Soak").
    malloc_arena_max: int = Field(default_factory=usable_cores, ge=0)
    malloc_trim_seconds: float = Field(default=30.0, ge=0)
    # Answer the inference routes (predict, /v1/classifications, /v1/embeddings, OIP v2 infer) without
    # FastAPI's routing and dependency solving (aiaas/api/fastpath.py): the routes' own functions and
    # validation, byte-for-byte the same answers (tests/api/test_fastpath_routes.py), less CPU each.
    fast_predict_route: bool = True

    # Training workers started by `aiaas serve` (0 disables them; `aiaas worker` runs one alone).
    job_workers: int = Field(default=1, ge=0)
    lease_seconds: float = Field(default=30.0, gt=0)
    heartbeat_seconds: float = Field(default=2.0, gt=0)
    poll_seconds: float = Field(default=0.5, gt=0)
    training_threads: int | None = Field(default=None, gt=0)
    # `auto` on small data (aiaas/training/auto_cv.py): with fewer labelled rows than auto_kfold_max_rows
    # (train + validation), the families are judged by auto_kfold_k-fold cross-validation (fewer folds
    # when a class has fewer rows) instead of one validation split, and the winner is refit on all rows,
    # within the job's time budget. 0 turns it off.
    auto_kfold_max_rows: int = Field(default=1000, ge=0)
    auto_kfold_k: int = Field(default=5, ge=2, le=20)
    # A job whose worker dies this many times (lease expired, not released) ends `failed` with
    # `worker_crashed` instead of being claimed again forever.
    job_max_attempts: int = Field(default=3, ge=1)
    # `aiaas serve` on SIGTERM: in-flight requests and streams get this long before they are cut, and
    # training workers this long to stop at a step and release their leases (then they are killed).
    shutdown_grace_seconds: float = Field(default=15.0, gt=0)

    # Batches (issue 16): answered by the workers in chunks of this many input lines, each chunk's
    # output and the batch's cursor written together under the lease.
    batch_chunk_lines: int = Field(default=256, ge=1, le=100_000)
    # Sharing workers with training: a batch that has run this long on one claim hands its worker back at
    # the next chunk boundary when a fine-tuning job is waiting (the worker runs the job next; the batch
    # resumes from its cursor on the next free worker). 0: at every chunk boundary while one waits.
    batch_yield_seconds: float = Field(default=60.0, ge=0)

    # Uploads and idempotency keys (issue #13). Uploads are held in memory while they are checked, so
    # the declared bytes of the uploads being received at once are capped (None: 4 x max_upload_bytes);
    # an upload that does not fit gets 503 `upload_capacity` with Retry-After. A POST's Idempotency-Key
    # replays its first response for idempotency_ttl_seconds; a claim whose process stops refreshing
    # its lock for idempotency_lock_seconds can be taken over; larger responses are not kept.
    upload_bytes_in_flight: int | None = Field(default=None, gt=0)
    idempotency_ttl_seconds: float = Field(default=24 * 3600.0, gt=0)
    idempotency_lock_seconds: float = Field(default=30.0, gt=0)
    idempotency_max_response_bytes: int = Field(default=4 * 1024 * 1024, gt=0)

    # Monitoring, webhooks and telemetry (issue #16). Live traffic per deployment is compared with the
    # training data by PSI; a feature over the threshold in a window of at least min_samples texts is a
    # drift flag (checked every monitoring_check_seconds, and on every GET .../monitoring). Webhook URLs
    # resolving to loopback, link-local or private addresses are refused unless webhook_allow_private.
    # log_format: "text" or "json" (one JSON line per request, never texts, labels or secrets).
    monitoring_enabled: bool = True
    monitoring_psi_threshold: float = Field(default=0.2, gt=0)
    monitoring_min_samples: int = Field(default=100, ge=1)
    monitoring_check_seconds: float = Field(default=30.0, ge=0)
    webhook_allow_private: bool = False
    # A job's MLflow integration: file:// tracking URIs only under this directory (None: refused);
    # http(s) tracking servers on private addresses only with mlflow_allow_private.
    mlflow_file_root: Path | None = None
    mlflow_allow_private: bool = False
    webhook_poll_seconds: float = Field(default=1.0, gt=0)
    webhook_timeout_seconds: float = Field(default=5.0, gt=0)
    webhook_max_attempts: int = Field(default=8, ge=1)
    webhook_retry_base_seconds: float = Field(default=5.0, ge=0)
    log_format: Literal["text", "json"] = "text"
    # Prometheus (aiaas/core/telemetry.py). Several API processes share numbers through files in
    # metrics_dir (`aiaas serve` creates one afresh, <data dir>/run/metrics-<pid>, when it runs more than
    # one process or a metrics port); each process writes its file every metrics_flush_seconds. With
    # metrics_port, /metrics is served there (by `aiaas serve`, on AIAAS_HOST) and not on the API port.
    metrics_dir: Path | None = None
    metrics_port: int | None = Field(default=None, ge=1, le=65535)
    metrics_flush_seconds: float = Field(default=1.0, gt=0)
    # Sampled request logging (a deployment's request_logging): buffers written this often, one
    # encrypted blob per deployment per flush (0: only at shutdown).
    request_log_flush_seconds: float = Field(default=5.0, ge=0)

    @field_validator("trusted_proxies")
    @classmethod
    def _proxies(cls, v: str) -> str:
        entries = [e.strip() for e in v.split(",") if e.strip()]
        for entry in entries:
            if entry == "*":
                continue
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ValueError(
                    f"AIAAS_TRUSTED_PROXIES: {entry!r} is not an IP address or network; give comma-separated "
                    "addresses or CIDR networks, e.g. 10.0.0.5,172.16.0.0/12"
                ) from None
        return ",".join(entries)

    @field_validator("data_dir")
    @classmethod
    def _expand(cls, v: Path) -> Path:
        return v.expanduser().resolve()

    # ---- derived values -------------------------------------------------------------
    @property
    def sqlalchemy_url(self) -> str:
        if self.database_url:
            url = self.database_url
            # Accept the plain libpq scheme and pick the psycopg 3 driver for it.
            if url.startswith("postgres://"):
                url = "postgresql://" + url[len("postgres://") :]
            if url.startswith("postgresql://"):
                url = "postgresql+psycopg://" + url[len("postgresql://") :]
            return url
        return f"sqlite:///{self.data_dir / 'aiaas.db'}"

    @property
    def secret_file(self) -> Path:
        return self.data_dir / SECRET_FILE

    @property
    def jobs_dir(self) -> Path:
        return self.data_dir / "jobs"

    @property
    def blobs_url(self) -> str:
        return self.blob_store_url or f"file://{self.data_dir / 'blobs'}"

    @property
    def base_models_dir(self) -> Path:
        """Operator-installed base models: each sub-directory is a model id."""
        return self.data_dir / "base_models"

    def master_secret(self) -> str:
        """The master secret: env first, then `<data_dir>/secret.key`.

        Outside development a missing or well-known secret refuses to start.
        """
        secret = self.secret_key
        if secret is None and self.secret_file.exists():
            check_secret_file_mode(self.secret_file, production=self.env == "production")
            secret = self.secret_file.read_text().strip()
        if secret is None or secret.lower() in INSECURE_SECRETS or len(secret) < MIN_SECRET_CHARS:
            if self.env == "development":
                return secret or "development-only-insecure-secret-do-not-use-0000"
            raise ConfigurationError(
                "No usable master secret: run `aiaas init` to generate one in "
                f"{self.secret_file}, or set AIAAS_SECRET_KEY to at least {MIN_SECRET_CHARS} random "
                "characters (AIAAS_ENV=development allows a missing secret)."
            )
        return secret


def check_secret_file_mode(path: Path, *, production: bool) -> None:
    """A master secret that group or others can read is refused in production, warned about elsewhere."""
    mode = stat.S_IMODE(path.stat().st_mode)
    if not mode & 0o077:
        return
    message = (f"The master secret file {path} is readable by group or others (mode {mode:04o}); "
               f"run `chmod 600 {path}`.")
    if production:
        raise ConfigurationError(message + " (AIAAS_ENV=production refuses it.)", param="secret_key")
    log.warning("%s", message)


def make_private_dir(path: Path) -> Path:
    """Create `path` (and missing parents) as 0700, and tighten it to 0700 if it already exists."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    if stat.S_IMODE(path.stat().st_mode) & 0o077:
        path.chmod(0o700)
    return path


def write_secret(settings: Settings) -> bool:
    """Create `secret.key` (mode 0600) unless it exists. Returns True when created."""
    make_private_dir(settings.data_dir)
    path = settings.secret_file
    if path.exists():
        return False
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(secrets.token_urlsafe(48) + "\n")
    return True


@functools.lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return Settings()

"""Settings: every value comes from the environment, with embedded defaults.

CONTROLROOM_MODE=embedded (default) is one person on a laptop: SQLite, local disk, DuckDB, a
broker with no server, a secret key generated into the data directory. CONTROLROOM_MODE=
production refuses to start without a real SECRET_KEY, DATABASE_URL and CELERY_BROKER_URL.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import re
import secrets
import tempfile
from email.utils import parseaddr
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from controlroom.email_url import email_settings_from_url
from controlroom.env import env_bool, env_choice, env_int, env_list, env_str

BASE_DIR = Path(__file__).resolve().parent.parent
MODE = env_choice("CONTROLROOM_MODE", ("embedded", "production"), "embedded")
EMBEDDED = MODE == "embedded"
DATA_DIR = Path(env_str("CONTROLROOM_DATA_DIR", str(BASE_DIR / "var"))).resolve()


def _secret_key() -> str:
    key = env_str("SECRET_KEY")
    if key:
        if not EMBEDDED and (len(key) < 50 or len(set(key)) < 5):
            raise ImproperlyConfigured("SECRET_KEY must be at least 50 random characters")
        return key
    if not EMBEDDED:
        raise ImproperlyConfigured("SECRET_KEY (or SECRET_KEY_FILE) is required in production mode")
    key_file = DATA_DIR / "secret_key"
    if not key_file.exists():
        DATA_DIR.mkdir(parents=True, exist_ok=True)
        key_file.write_text(secrets.token_urlsafe(50))
        key_file.chmod(0o600)
    return key_file.read_text().strip()


def _required_in_production(name: str, embedded_default: str) -> str:
    value = env_str(name)
    if value:
        return value
    if not EMBEDDED:
        raise ImproperlyConfigured(f"{name} is required in production mode")
    return embedded_default


SECRET_KEY = _secret_key()
# Seals the audit chains' heads (controlroom/audit.py); kept out of the database on purpose. Unset:
# derived from SECRET_KEY. AUDIT_KEY_FALLBACKS still verify heads sealed before a rotation ("derived"
# names the key derived from SECRET_KEY, for installs that start setting AUDIT_KEY).
AUDIT_KEY = env_str("AUDIT_KEY") or ""
AUDIT_KEY_FALLBACKS = env_list("AUDIT_KEY_FALLBACKS", [])
if any(len(key) < 32 or len(set(key)) < 5 for key in [AUDIT_KEY, *AUDIT_KEY_FALLBACKS] if key not in ("", "derived")):
    raise ImproperlyConfigured("AUDIT_KEY (and each of AUDIT_KEY_FALLBACKS) must be at least 32 random characters")
DEBUG = env_bool("DEBUG", False)
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"] if EMBEDDED else [])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django_htmx",
    "template_partials",
    "allauth",
    "allauth.account",
    "allauth.socialaccount",
    "allauth.socialaccount.providers.openid_connect",
    "django_celery_results",
    "django_celery_beat",
    "controlroom",
    "connections",
    "artifacts",
    "runs",
    "sqlwarehouse",
    "lakehouse",
    "notifications",
    "lineage",
]

MIDDLEWARE = [
    "controlroom.request_id.RequestIdMiddleware",
    "controlroom.metrics.HttpMetricsMiddleware",  # request latency by view, for /metrics
    # /healthz, /readyz and /metrics, before anything reads the Host header (controlroom/health.py).
    "controlroom.health.ProbeMiddleware",
    "django.middleware.security.SecurityMiddleware",
    # Before WhiteNoise, which answers static files itself: they get the policy too (an SVG
    # opened on its own is a document).
    "controlroom.csp.ContentSecurityPolicyMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    # After authentication, so its page shows the signed-in navigation; before every view.
    "controlroom.request_guard.RejectUnstorableTextMiddleware",
    # A single sign-on session is re-checked at the IdP now and then (controlroom/sso_session.py).
    "controlroom.sso_session.SsoSessionMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "allauth.account.middleware.AccountMiddleware",
]

ROOT_URLCONF = "controlroom.urls"
WSGI_APPLICATION = "controlroom.wsgi.application"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "controlroom.context_processors.sso",
            ],
        },
    }
]

_db_url = _required_in_production("DATABASE_URL", f"sqlite:///{DATA_DIR / 'controlroom.sqlite3'}")
DATABASES = {"default": dj_database_url.parse(_db_url, conn_max_age=env_int("DB_CONN_MAX_AGE", 60),
                                             conn_health_checks=True)}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL plus IMMEDIATE transactions let the web server and worker processes share the file:
    # writers queue on the lock instead of failing with "database is locked" mid-transaction.
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 30,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTHENTICATION_BACKENDS = [  # Django's and allauth's password checks, with SSO_ONLY's rule (controlroom/sso.py)
    "controlroom.sso.SsoOnlyModelBackend",
    "controlroom.sso.SsoOnlyAllauthBackend",
]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
ACCOUNT_LOGIN_METHODS = {"username"}
ACCOUNT_SIGNUP_FIELDS = ["username*", "password1*", "password2*"]
ACCOUNT_ADAPTER = "controlroom.auth.ClosedSignupAdapter"
ACCOUNT_EMAIL_VERIFICATION = "none"
# allauth's defaults, spelled out: they live in CACHES (shared by every process) and also
# guard /admin/login/, which sends staff through this login (controlroom/urls.py).
ACCOUNT_RATE_LIMITS = {"login": "30/m/ip", "login_failed": "10/m/ip,5/5m/key", "reset_password": "20/m/ip,5/m/key"}
# Behind N reverse proxies the client's address is the Nth from the right in X-Forwarded-For;
# with 0 (direct) that header is ignored, since a client could forge it to escape the limits.
ALLAUTH_TRUSTED_PROXY_COUNT = env_int("TRUSTED_PROXY_COUNT", 0)
# A reset asked for an unknown address sends nothing (allauth would mail an invitation to sign up).
ACCOUNT_EMAIL_UNKNOWN_ACCOUNTS = False
ACCOUNT_EMAIL_SUBJECT_PREFIX = "[Control Room] "
LOGIN_URL = "account_login"
LOGIN_REDIRECT_URL = "home"
ACCOUNT_LOGOUT_REDIRECT_URL = "account_login"
# Single sign-on through an OpenID Connect provider (controlroom/sso.py): authorization code with
# PKCE; users are made at their first sign-on, keyed by the IdP's subject; their memberships
# follow their groups (the OIDC_GROUPS_CLAIM claim) through each workspace's group mappings.
OIDC_ISSUER = env_str("OIDC_ISSUER", "").rstrip("/")
OIDC_CLIENT_ID = env_str("OIDC_CLIENT_ID", "")
OIDC_CLIENT_SECRET = env_str("OIDC_CLIENT_SECRET", "")  # or OIDC_CLIENT_SECRET_FILE (controlroom/env.py)
# Or read at the moment of use from Vault/OpenBao (VAULT_ADDR and its credentials, as secret
# references): "<path>#<key>" of a KV v2 secret, so a rotated client secret needs no restart.
OIDC_CLIENT_SECRET_VAULT = env_str("OIDC_CLIENT_SECRET_VAULT", "")
if OIDC_CLIENT_SECRET_VAULT and not re.fullmatch(r"[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*#[A-Za-z0-9_.-]+",
                                                  OIDC_CLIENT_SECRET_VAULT):
    raise ImproperlyConfigured("OIDC_CLIENT_SECRET_VAULT must be <path>#<key>, e.g. controlroom/oidc#client_secret")
OIDC_NAME = env_str("OIDC_NAME", "Single sign-on")
# The scopes asked for; Keycloak refuses a scope the client lacks (drop "groups" there and map
# groups on the client instead).
OIDC_SCOPES = env_str("OIDC_SCOPES", "openid profile email groups").replace(",", " ").split()
# How often a signed-in SSO session is re-checked at the IdP with its refresh token (a disabled
# account, or a session ended at the IdP, signs the person out here too); 0: never.
OIDC_SESSION_RECHECK_S = env_int("OIDC_SESSION_RECHECK_S", 300)
OIDC_GROUPS_CLAIM = env_str("OIDC_GROUPS_CLAIM", "groups")
# SSO-only: no local password works, except the break-glass account's (a local admin for when
# the IdP is down); the login page shows only the IdP's button.
SSO_ONLY = env_bool("SSO_ONLY", False)
SSO_BREAK_GLASS_USER = env_str("SSO_BREAK_GLASS_USER", "")
if SSO_ONLY and not OIDC_ISSUER:
    raise ImproperlyConfigured("SSO_ONLY needs OIDC_ISSUER (and its client): nobody could sign in")
SOCIALACCOUNT_ADAPTER = "controlroom.sso.SsoAdapter"
SOCIALACCOUNT_AUTO_SIGNUP = True
SOCIALACCOUNT_EMAIL_AUTHENTICATION = False  # an e-mail never links an IdP login to a local account
SOCIALACCOUNT_LOGIN_ON_GET = False
SOCIALACCOUNT_STORE_TOKENS = False
SOCIALACCOUNT_PROVIDERS = {"openid_connect": {
    "OAUTH_PKCE_ENABLED": True,
    "SCOPE": OIDC_SCOPES,
    "APPS": [{"provider_id": "idp", "name": OIDC_NAME, "client_id": OIDC_CLIENT_ID, "secret": OIDC_CLIENT_SECRET,
              "settings": {"server_url": OIDC_ISSUER}}]
    if OIDC_ISSUER else [],
}}

# /metrics (Prometheus, controlroom/metrics.py) is never public: a scraper sends METRICS_TOKEN
# (or the file METRICS_TOKEN_FILE holds) as a bearer token, or comes from one of
# METRICS_ALLOWED_NETWORKS (comma-separated CIDRs); with neither set, /metrics answers 404.
METRICS_TOKEN = env_str("METRICS_TOKEN", "")  # or METRICS_TOKEN_FILE (controlroom/env.py)
if METRICS_TOKEN and len(METRICS_TOKEN) < 16:
    raise ImproperlyConfigured("METRICS_TOKEN must be at least 16 characters")
try:
    METRICS_ALLOWED_NETWORKS = [ipaddress.ip_network(n, strict=False) for n in env_list("METRICS_ALLOWED_NETWORKS")]
except ValueError as exc:
    raise ImproperlyConfigured(f"METRICS_ALLOWED_NETWORKS: {exc}") from None
# The web processes (gunicorn's workers) share their request-latency figures through this folder
# (prometheus-client's multiprocess mode, which reads the variable when it is first imported).
# Local to the machine (a container's own /tmp): processes of other containers may have the same
# process ids, so the folder must not be on a shared volume; one per data folder.
os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", str(Path(tempfile.gettempdir()) / (
    "controlroom-metrics-" + hashlib.sha256(str(DATA_DIR).encode()).hexdigest()[:12])))
Path(os.environ["PROMETHEUS_MULTIPROC_DIR"]).mkdir(parents=True, exist_ok=True)
# How often each Celery worker writes its sign of life (WorkerBeat; /metrics's worker liveness).
WORKER_BEAT_S = max(1, env_int("WORKER_BEAT_S", 15))

# OpenLineage (lineage/): every run and phase start and end, with the tables and artifacts
# they read and wrote, to an HTTP endpoint (e.g. Marquez's /api/v1/lineage) and/or a file of
# JSON lines; delivered in order by a worker, retried while the endpoint is down.
OPENLINEAGE_URL = env_str("OPENLINEAGE_URL", "")
OPENLINEAGE_API_KEY = env_str("OPENLINEAGE_API_KEY", "")  # or OPENLINEAGE_API_KEY_FILE (controlroom/env.py)
OPENLINEAGE_FILE = env_str("OPENLINEAGE_FILE", "")
OPENLINEAGE_NAMESPACE = env_str("OPENLINEAGE_NAMESPACE", "controlroom")
OPENLINEAGE_LAG_S = env_int("OPENLINEAGE_LAG_S", 5)

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
WHITENOISE_USE_FINDERS = EMBEDDED
STATIC_ROOT = Path(env_str("STATIC_ROOT", str(DATA_DIR / "staticfiles")))
if EMBEDDED:
    STATIC_ROOT.mkdir(parents=True, exist_ok=True)  # whitenoise serves from finders; it wants the folder

# Artifact store (artifacts, query results, exports): file:///absolute/path or s3://bucket/prefix.
# For S3: the endpoint (empty: AWS) and region; the key pair from ARTIFACT_STORE_S3_ACCESS_KEY and
# ARTIFACT_STORE_S3_SECRET_KEY or their *_FILE (a mounted secret), else boto3's own chain
# (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, an instance role). Never written in a settings file.
ARTIFACT_STORE_URL = env_str("ARTIFACT_STORE_URL", (DATA_DIR / "artifacts").as_uri())
if not re.fullmatch(r"file:///.*|s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/.*)?", ARTIFACT_STORE_URL):
    raise ImproperlyConfigured(f"ARTIFACT_STORE_URL={ARTIFACT_STORE_URL!r} must be file:///absolute/path or "
                               "s3://bucket/prefix")
ARTIFACT_STORE_S3_ENDPOINT = env_str("ARTIFACT_STORE_S3_ENDPOINT", "")
ARTIFACT_STORE_S3_REGION = env_str("ARTIFACT_STORE_S3_REGION", "us-east-1")
ARTIFACT_STORE_S3_ACCESS_KEY = env_str("ARTIFACT_STORE_S3_ACCESS_KEY", "")
ARTIFACT_STORE_S3_SECRET_KEY = env_str("ARTIFACT_STORE_S3_SECRET_KEY", "")
if bool(ARTIFACT_STORE_S3_ACCESS_KEY) != bool(ARTIFACT_STORE_S3_SECRET_KEY):
    raise ImproperlyConfigured("ARTIFACT_STORE_S3_ACCESS_KEY and ARTIFACT_STORE_S3_SECRET_KEY go together: set "
                               "both (or their *_FILE) or neither")
# The largest artifact upload accepted (checked from Content-Length before the body is read).
ARTIFACT_UPLOAD_MAX_BYTES = env_int("ARTIFACT_UPLOAD_MAX_BYTES", 5 * 2**30)
# Where embedded DuckDB warehouses and job input files live; SQL may read only inside these.
WAREHOUSE_DIR = Path(env_str("CONTROLROOM_WAREHOUSE_DIR", str(DATA_DIR / "warehouse"))).resolve()
# Each workspace's input files live in DATASETS_DIR/<workspace>/; SQL reads them read-only.
DATASETS_DIR = Path(env_str("CONTROLROOM_DATASETS_DIR", str(DATA_DIR / "datasets"))).resolve()
if DATASETS_DIR == WAREHOUSE_DIR or DATASETS_DIR in WAREHOUSE_DIR.parents or WAREHOUSE_DIR in DATASETS_DIR.parents:
    # A warehouse database inside a datasets area would be a file SQL writes where inputs live.
    raise ImproperlyConfigured("CONTROLROOM_DATASETS_DIR and CONTROLROOM_WAREHOUSE_DIR must not contain each other")
# The embedded lakehouse (no catalog connection): <dir>/<workspace>/<environment>/ holds a SQLite
# Iceberg catalog, its warehouse and a Delta root. Outside the datasets area, which SQL reads.
LAKEHOUSE_DIR = Path(env_str("CONTROLROOM_LAKEHOUSE_DIR", str(DATA_DIR / "lakehouse"))).resolve()
if LAKEHOUSE_DIR == DATASETS_DIR or DATASETS_DIR in LAKEHOUSE_DIR.parents or LAKEHOUSE_DIR in DATASETS_DIR.parents:
    raise ImproperlyConfigured("CONTROLROOM_LAKEHOUSE_DIR and CONTROLROOM_DATASETS_DIR must not contain each other")
# Tests only: a folder where an iceberg/delta phase's first attempt drops a marker right after its
# table commit and then sleeps, so a test can kill -9 the worker between commit and complete.
LAKEHOUSE_FAULT_DIR = env_str("CONTROLROOM_TEST_LAKEHOUSE_FAULT_DIR", "")
# Importable modules a `spark` phase may run with ``module:`` (a script in a job's git repository
# needs no registration). The demo's Spark jobs are registered by default.
# Where a spark phase's driver (in the spark worker) listens for its executors: loopback unless the
# cluster's workers run on other machines; then the address they reach this worker at.
SPARK_DRIVER_HOST = env_str("SPARK_DRIVER_HOST", "127.0.0.1")
SPARK_MODULES = env_list("CONTROLROOM_SPARK_MODULES", ["demo.spark.bronze_to_silver", "demo.spark.silver_to_gold"])
# The most memory one DuckDB database (editor query or phase) may use before it spills or fails.
DUCKDB_MEMORY_LIMIT = env_str("DUCKDB_MEMORY_LIMIT", "1GB")
if not re.fullmatch(r"\d+(\.\d+)?\s*([KMGT]i?B|B)", DUCKDB_MEMORY_LIMIT, re.IGNORECASE):
    raise ImproperlyConfigured(f"DUCKDB_MEMORY_LIMIT={DUCKDB_MEMORY_LIMIT!r} is not a size such as 512MB or 2GB")
# The parser's read-only check (sqlcheck) in front of the engine's; switched off only by the
# tests that prove the engine refuses writes on its own.
SQL_PARSER_CHECK = env_bool("SQL_PARSER_CHECK", True)
# The editor's Run executes in the web process, answering with the first rows in the same request
# (sqlwarehouse.inline), for at most this many queries at once per process; more, or 0, go to
# the Celery sql queue.
SQL_INLINE_RUNS = env_int("SQL_INLINE_RUNS", 2)
# Executions one API token may have queued or running at once through the IDE API (compute/sql).
IDE_SQL_ACTIVE_PER_CALLER = env_int("IDE_SQL_ACTIVE_PER_CALLER", 4)
# Claims that long-poll (wait > 0) hold a web thread; at most this many wait at once per process
# (the others answer 204 at once and the executor retries after a pause).
CLAIM_LONG_POLLS_PER_PROCESS = env_int("CLAIM_LONG_POLLS_PER_PROCESS", 2)
# A claimed phase's lease lasts this long unless a heartbeat renews it (workers beat at a third).
PHASE_LEASE_TTL_S = env_int("PHASE_LEASE_TTL_S", 30)
# Claims and successes run as server-side prepared statements on PostgreSQL. Turn off behind a
# transaction-mode pooler that cannot carry them (PgBouncer before 1.21).
PG_PREPARE_CLAIMS = env_bool("PG_PREPARE_CLAIMS", True)
# An admitted run with runnable phases and no event for this long gets another wake-up.
RUN_STALL_S = env_int("RUN_STALL_S", 30)
# Modules whose @phase_callable functions may run as `python` phases.
PHASE_CALLABLE_MODULES = env_list("PHASE_CALLABLE_MODULES", ["runs.builtin_callables"])
# Secret references may name only environment variables with this prefix and files inside
# these folders (symbolic links followed), so a reference cannot read the server's own secrets.
SECRET_ENV_PREFIX = env_str("SECRET_ENV_PREFIX", "CONTROLROOM_SECRET_")
if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", SECRET_ENV_PREFIX):
    raise ImproperlyConfigured(f"SECRET_ENV_PREFIX={SECRET_ENV_PREFIX!r} must start a variable name (A-Z, 0-9, _)")
SECRET_FILE_DIRS = [Path(d) for d in env_list("SECRET_FILE_DIRS", [str(DATA_DIR / "secrets"), "/run/secrets"])]
if not all(d.is_absolute() for d in SECRET_FILE_DIRS):
    raise ImproperlyConfigured("SECRET_FILE_DIRS must list absolute paths (comma-separated)")
# Vault or OpenBao secret references (connections/vault.py): the server's address and its own
# credentials (a token, or an AppRole), the KV v2 mount, and the path each workspace's
# references must stay under ({workspace} is its slug).
VAULT_ADDR = env_str("VAULT_ADDR", "")
VAULT_TOKEN = env_str("VAULT_TOKEN", "")
VAULT_TOKEN_FILE = env_str("VAULT_TOKEN_FILE", "")
VAULT_ROLE_ID = env_str("VAULT_ROLE_ID", "")
VAULT_SECRET_ID = env_str("VAULT_SECRET_ID", "")
VAULT_SECRET_ID_FILE = env_str("VAULT_SECRET_ID_FILE", "")
VAULT_CACERT = env_str("VAULT_CACERT", "")
SECRET_VAULT_MOUNT = env_str("SECRET_VAULT_MOUNT", "secret")
SECRET_VAULT_PATH_PREFIX = env_str("SECRET_VAULT_PATH_PREFIX", "controlroom/{workspace}/")
if "{workspace}" not in SECRET_VAULT_PATH_PREFIX:
    raise ImproperlyConfigured("SECRET_VAULT_PATH_PREFIX must contain {workspace} (each workspace has its own secrets)")
# How long a secret value read from Vault/OpenBao stays in memory (0: read at every use).
SECRET_CACHE_S = env_int("SECRET_CACHE_S", 30)
# Git sources may use https and ssh; file:// (a repository on this server) only when this is on.
GIT_ALLOW_FILE_PROTOCOL = env_bool("GIT_ALLOW_FILE_PROTOCOL", False)

# Celery. The embedded broker is a folder on disk (controlroom/broker.py): no server to run.
CELERY_BROKER_URL = _required_in_production("CELERY_BROKER_URL", "controlroom-fs://")
if CELERY_BROKER_URL.startswith("controlroom-fs://"):
    # The URL's path (controlroom-fs:///some/dir) wins over this folder.
    CELERY_BROKER_TRANSPORT_OPTIONS = {"broker_dir": str(DATA_DIR / "broker"), "polling_interval": 0.1}
# Caches hold login rate limits, so every process must share them: the broker's Redis (or
# CACHE_URL) in production, a database table in embedded mode (created by a migration).
_cache_url = env_str("CACHE_URL") or (CELERY_BROKER_URL if CELERY_BROKER_URL.startswith(("redis://", "rediss://"))
                                      else "")
if _cache_url:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": _cache_url}}
elif EMBEDDED:
    # Room for many clients' counters: when full, the table culls entries by key order, which
    # could drop a counter someone is still building up.
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.db.DatabaseCache",
                          "LOCATION": "controlroom_cache", "OPTIONS": {"MAX_ENTRIES": 100_000}}}
else:
    raise ImproperlyConfigured("CACHE_URL (a redis:// URL) is required in production when the broker is not Redis")
# Mail (password resets). EMAIL_URL wins in any mode; without it embedded mode writes each mail
# as a file into <data>/mail (where a `make run` user reads the reset link), and production logs
# that it sent nothing (teams that sign in through OIDC need no mail).
_email_url = env_str("EMAIL_URL")
if _email_url:
    globals().update(email_settings_from_url(_email_url))  # EMAIL_BACKEND, EMAIL_HOST, EMAIL_PORT, …
elif EMBEDDED:
    EMAIL_BACKEND = "django.core.mail.backends.filebased.EmailBackend"
    EMAIL_FILE_PATH = DATA_DIR / "mail"
else:
    EMAIL_BACKEND = "controlroom.mail_backend.UnconfiguredEmailBackend"
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL") or ""
if not DEFAULT_FROM_EMAIL:
    if _email_url and not EMBEDDED:  # a real server rejects or spam-bins mail from localhost
        raise ImproperlyConfigured("DEFAULT_FROM_EMAIL (such as 'Control Room <cr@example.com>') is required "
                                   "with EMAIL_URL in production")
    DEFAULT_FROM_EMAIL = "Control Room <controlroom@localhost>"
elif "@" not in parseaddr(DEFAULT_FROM_EMAIL)[1]:
    raise ImproperlyConfigured(f"DEFAULT_FROM_EMAIL={DEFAULT_FROM_EMAIL!r} is not an e-mail address")
SERVER_EMAIL = env_str("SERVER_EMAIL") or DEFAULT_FROM_EMAIL
# Where users reach this server (https://controlroom.example.com): notifications link run pages with it.
NOTIFY_BASE_URL = (env_str("NOTIFY_BASE_URL") or "").rstrip("/")
if NOTIFY_BASE_URL and not re.fullmatch(r"https?://[^\s/?#]+(/[^\s?#]*)?", NOTIFY_BASE_URL):
    raise ImproperlyConfigured(f"NOTIFY_BASE_URL={NOTIFY_BASE_URL!r} must be an http(s):// URL")
CELERY_RESULT_BACKEND = "django-db"
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_TASK_ROUTES = {"sqlwarehouse.tasks.query_execute": {"queue": "sql"}}
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", False)
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_BEAT_SCHEDULE = {
    "reap-expired-leases": {"task": "runs.tasks.reap_expired_leases", "schedule": 10.0},
    "reap-lost-sql-executions": {"task": "sqlwarehouse.tasks.reap_lost_executions", "schedule": 30.0},
    "notifications-sweep": {"task": "notifications.tasks.notifications_sweep", "schedule": 60.0},
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"json": {"()": "controlroom.logging_json.JsonFormatter"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "json"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}

if not EMBEDDED:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", True)
    SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31_536_000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]  # probes and scrapers inside the network
    STORAGES = {
        "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
        "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
    }

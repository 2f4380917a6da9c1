"""authkeep: authentication and authorization for FastAPI backends.

The names below are the public API; everything else may change between versions.
"""

from authkeep.db.migrate import run_migrations
from authkeep.db.migrate import upgrade as migrate_database
from authkeep.db.tenancy import TenantDatabase, disable_tenancy, enable_tenancy
from authkeep.db.users import UserRecord
from authkeep.errors import (
    AuthkeepError,
    Conflict,
    ConsentRequired,
    DependencyUnavailable,
    InvalidCredentials,
    InvalidToken,
    NotFound,
    Overloaded,
    PermissionDenied,
    PolicyViolation,
    RateLimited,
    SecondFactorRequired,
    StepUpRequired,
    TokenReused,
    WebhookRejected,
    WebhookReplayed,
)
from authkeep.http.app import Authkeep, create_app
from authkeep.http.authz import (
    CurrentCaller,
    OrgAdmin,
    OrgEditor,
    OrgViewer,
    TenantDB,
    current_caller,
    require_role,
)
from authkeep.http.consent import require_consent
from authkeep.http.deps import (
    CurrentPrincipal,
    CurrentUser,
    RecentPrincipal,
    current_principal,
    current_user,
    require_aal2,
    require_recent_auth,
)
from authkeep.http.docs import install_docs
from authkeep.http.incoming_webhooks import IncomingWebhook, incoming_webhook
from authkeep.http.uploads import CheckedUpload, UploadCheck
from authkeep.security.permissions import Role
from authkeep.services.authn import ApiKeyIdentity, Principal
from authkeep.services.authz import OrgAccess
from authkeep.settings import Settings

__all__ = [
    "ApiKeyIdentity",
    "Authkeep",
    "AuthkeepError",
    "CheckedUpload",
    "Conflict",
    "ConsentRequired",
    "CurrentCaller",
    "CurrentPrincipal",
    "CurrentUser",
    "DependencyUnavailable",
    "IncomingWebhook",
    "InvalidCredentials",
    "InvalidToken",
    "NotFound",
    "OrgAccess",
    "OrgAdmin",
    "OrgEditor",
    "OrgViewer",
    "Overloaded",
    "PermissionDenied",
    "PolicyViolation",
    "Principal",
    "RateLimited",
    "RecentPrincipal",
    "Role",
    "SecondFactorRequired",
    "Settings",
    "StepUpRequired",
    "TenantDB",
    "TenantDatabase",
    "TokenReused",
    "UploadCheck",
    "UserRecord",
    "WebhookRejected",
    "WebhookReplayed",
    "create_app",
    "current_caller",
    "current_principal",
    "current_user",
    "disable_tenancy",
    "enable_tenancy",
    "incoming_webhook",
    "install_docs",
    "migrate_database",
    "require_aal2",
    "require_consent",
    "require_recent_auth",
    "require_role",
    "run_migrations",
]

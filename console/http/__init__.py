"""The console server's HTTP side: `app.create_http_app` builds it from `common.ConsoleServices`;
one router per area (`intake`, `registry`, `auth`, `read`, `public`, `photos`, `pages`), the
guards every route declares (`common`) and the middleware (`middleware`).
"""

from console.http.app import create_http_app
from console.http.common import ConsoleServices, access_rules
from console.http.photos import PHOTO_TYPES

__all__ = ["PHOTO_TYPES", "ConsoleServices", "access_rules", "create_http_app"]

"""The limit of the request rows: Timonier's own settings (TIMONIER_SERVICE=api, so the same
middleware, database and cache configuration) with a URL root of one view and no product code."""

from timonier.settings import *  # noqa: F403

ROOT_URLCONF = "bare_urls"

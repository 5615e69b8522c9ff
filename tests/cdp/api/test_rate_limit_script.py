"""The rate limit's script, sent by its digest: a Redis that forgot it (restarted, SCRIPT FLUSH) is
sent the script again, and the limit holds across."""

import pytest

from timonier.redis_client import get_redis

from .test_request_path import (
    TRACK,
    RedisMonitor,
    redis_url,  # noqa: F401 (the test's own redis-server)
)

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("redis_url")]


def test_a_redis_that_forgot_the_script_is_sent_it_again_and_the_limit_holds(api, settings):
    api.project.ingest_rate_limit = 1
    api.project.save()
    assert api.post("/v1/track", TRACK).status_code == 202
    get_redis().script_flush()
    monitor = RedisMonitor(settings.REDIS_URL)

    statuses = [api.post("/v1/track", TRACK).status_code for _ in range(3)]

    assert statuses == [202, 429, 429]  # a burst of 2 s at 1 request per second, the first taken before
    assert monitor.stop()[:3] == ["EVALSHA", "SCRIPT", "EVALSHA"]  # refused by digest, loaded, sent again

"""One webhook request against a real receiver on 127.0.0.1: signing, pinning, classification."""

import json
import random
import socket
import ssl
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from timonier import clock
from workflows import webhooks
from workflows.webhooks import retry_delay, sign, webhook_send

from .receiver import Receiver, Reply, allowed_receiver

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
OTHER_SECRET = "whsec_" + "c2Vjb25kLXNlY3JldC1mb3Itcm90YXRpb24tdGVzdHM="
BODY = json.dumps({"customer": {"id": "cust-1"}, "event": "purchase"}).encode()


@pytest.fixture
def webhook_receiver(settings):
    with allowed_receiver(settings) as receiver:
        yield receiver


def send(url: str, **overrides) -> webhooks.WebhookResult:
    arguments = {
        "method": "POST",
        "url": url,
        "headers": {},
        "body": BODY,
        "webhook_id": "run_1_step_3",
        "secrets": [SECRET],
    }
    return webhook_send(**(arguments | overrides))


# -- signing ---------------------------------------------------------------------------------


def test_signature_matches_the_standard_webhooks_test_vector():
    signature = sign(
        secrets=[SECRET], webhook_id="msg_p5jXN8AQM9LWM0D4loKWxJek", timestamp=1614265330, body=b'{"test": 2432232314}'
    )
    assert signature == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_two_secrets_give_two_signatures_each_the_reference_implementations():
    at = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    signature = sign(secrets=[SECRET, OTHER_SECRET], webhook_id="msg_1", timestamp=int(at.timestamp()), body=BODY)
    expected = [Webhook(secret).sign("msg_1", at, BODY.decode()) for secret in (SECRET, OTHER_SECRET)]
    assert signature.split(" ") == expected


def test_a_secret_without_the_whsec_prefix_is_a_programming_error():
    with pytest.raises(ValueError, match="whsec_"):
        sign(secrets=["MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"], webhook_id="m", timestamp=1, body=b"")
    with pytest.raises(ValueError, match="at least one"):
        sign(secrets=[], webhook_id="m", timestamp=1, body=b"")


def test_the_receiver_verifies_a_sent_webhook_with_the_standardwebhooks_package(webhook_receiver):
    result = send(webhook_receiver.url("/hook"))
    assert result.ok, result.error
    [request] = webhook_receiver.wait_for(1)
    assert Webhook(SECRET).verify(request.body, request.headers) == json.loads(BODY)
    assert request.headers["webhook-id"] == "run_1_step_3"
    assert abs(int(request.headers["webhook-timestamp"]) - time.time()) < 60


def test_a_tampered_body_does_not_verify(webhook_receiver):
    send(webhook_receiver.url())
    [request] = webhook_receiver.wait_for(1)
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(request.body.replace(b"purchase", b"refund"), request.headers)


def test_during_a_rotation_either_secret_verifies_and_no_other(webhook_receiver):
    send(webhook_receiver.url(), secrets=[OTHER_SECRET, SECRET])
    [request] = webhook_receiver.wait_for(1)
    assert len(request.headers["webhook-signature"].split(" ")) == 2
    Webhook(OTHER_SECRET).verify(request.body, request.headers)
    Webhook(SECRET).verify(request.body, request.headers)
    with pytest.raises(WebhookVerificationError):
        Webhook("whsec_" + "dW5yZWxhdGVkLXNlY3JldC1ub3QtaW4tdXNl").verify(request.body, request.headers)


def test_the_timestamp_comes_from_the_project_clock(webhook_receiver):
    with clock.travel(clock.now() - timedelta(hours=1)):
        send(webhook_receiver.url())
    [request] = webhook_receiver.wait_for(1)
    assert abs(int(request.headers["webhook-timestamp"]) - (time.time() - 3600)) < 60
    with pytest.raises(WebhookVerificationError, match="too old"):
        Webhook(SECRET).verify(request.body, request.headers)


def test_headers_the_author_set_are_sent_but_cannot_override_the_signature_or_host(webhook_receiver):
    send(
        webhook_receiver.url("/hook?source=timonier"),
        headers={
            "Authorization": "Bearer abc",
            "X-Custom": "1",
            "webhook-signature": "v1,forged",
            "Host": "metadata.google.internal",
            "User-Agent": "curl",
        },
    )
    [request] = webhook_receiver.wait_for(1)
    assert request.path == "/hook?source=timonier"
    assert request.headers["authorization"] == "Bearer abc" and request.headers["x-custom"] == "1"
    assert request.headers["host"] == webhook_receiver.netloc
    assert request.headers["user-agent"] == "Timonier-Webhooks/1"
    assert request.headers["content-type"] == "application/json"
    Webhook(SECRET).verify(request.body, request.headers)


def test_an_authors_content_type_is_kept_and_an_empty_body_gets_none(webhook_receiver):
    send(webhook_receiver.url(), headers={"Content-Type": "application/vnd.api+json"})
    send(webhook_receiver.url(), method="get", body=b"")
    first, second = webhook_receiver.wait_for(2)
    assert first.headers["content-type"] == "application/vnd.api+json"
    assert second.method == "GET" and second.body == b"" and "content-type" not in second.headers


def test_a_header_value_with_a_line_break_is_refused_before_sending(webhook_receiver):
    result = send(webhook_receiver.url(), headers={"X-Evil": "a\r\nX-Injected: 1"})
    assert (result.status, result.retryable) == (None, False)
    assert result.error.startswith("headers: ")
    assert webhook_receiver.requests == []


# -- where it goes ---------------------------------------------------------------------------


def test_the_request_goes_to_the_first_answer_and_the_name_is_resolved_once(webhook_receiver, settings):
    """DNS rebinding: a second lookup would answer an address where nothing listens."""
    settings.WEBHOOK_ALLOWED_HOSTS = ["hooks.example.test"]
    calls = []

    def rebinding(host, port, *args, **kwargs):
        calls.append(host)
        address = "127.0.0.1" if len(calls) == 1 else "127.0.0.2"
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))]

    result = send(f"http://hooks.example.test:{webhook_receiver.port}/pinned", resolver=rebinding)
    assert result.ok, result.error
    [request] = webhook_receiver.wait_for(1)
    assert request.headers["host"] == f"hooks.example.test:{webhook_receiver.port}"
    assert calls == ["hooks.example.test"]


def test_a_url_resolving_to_a_private_address_is_not_sent():
    result = send(
        "http://internal.example.test/hook",
        resolver=lambda host, port, *a, **k: [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.0.0.5", port))],
    )
    assert result.status is None and result.retryable is False
    assert result.error == "url: internal.example.test resolves to 10.0.0.5, a private address"


def test_loopback_is_refused_unless_the_operator_allows_it():
    with Receiver() as receiver:
        result = send(receiver.url())
        assert receiver.requests == []
    assert result.status is None and result.retryable is False
    assert result.error.startswith("url: ")
    assert send("http://127.0.0.1/hook").error == "url: 127.0.0.1 is a loopback address"


def test_a_redirect_is_not_followed(webhook_receiver):
    webhook_receiver.reply(Reply(302, headers={"Location": webhook_receiver.url("/moved")}))
    result = send(webhook_receiver.url("/hook"))
    assert (result.status, result.ok, result.retryable) == (302, False, False)
    assert "not followed" in result.error
    time.sleep(0.2)  # a follow-up request, if one were made, would arrive in far less
    assert webhook_receiver.paths() == ["/hook"]


# -- classification --------------------------------------------------------------------------


@pytest.mark.parametrize("status", [200, 201, 204])
def test_2xx_is_ok(webhook_receiver, status):
    webhook_receiver.reply(Reply(status, body=b"" if status == 204 else b'{"received": true}'))
    result = send(webhook_receiver.url())
    assert (result.status, result.ok, result.error, result.retryable) == (status, True, "", False)


def test_the_answer_is_kept_for_mapping_into_traits(webhook_receiver):
    webhook_receiver.reply(Reply(200, body=json.dumps({"score": 42, "name": "Zoë"}).encode()))
    assert json.loads(send(webhook_receiver.url()).body) == {"score": 42, "name": "Zoë"}


@pytest.mark.parametrize("status", [400, 401, 404, 410, 422])
def test_4xx_is_a_failure_not_worth_retrying(webhook_receiver, status):
    webhook_receiver.reply(Reply(status, body=b"no such hook"))
    result = send(webhook_receiver.url())
    assert (result.status, result.ok, result.retryable) == (status, False, False)
    assert result.error.startswith(f"HTTP {status}")
    assert result.body == "no such hook"


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_5xx_is_retryable(webhook_receiver, status):
    webhook_receiver.reply(Reply(status))
    result = send(webhook_receiver.url())
    assert (result.status, result.ok, result.retryable, result.retry_after) == (status, False, True, None)


def test_429_with_retry_after_in_seconds_is_retryable_after_that_long(webhook_receiver):
    webhook_receiver.reply(Reply(429, headers={"Retry-After": "120"}))
    result = send(webhook_receiver.url())
    assert (result.status, result.retryable, result.retry_after) == (429, True, 120.0)


def test_429_with_retry_after_as_an_http_date(webhook_receiver):
    now = clock.now()
    in_90_seconds = format_datetime(now + timedelta(seconds=90), usegmt=True)
    webhook_receiver.reply(Reply(429, headers={"Retry-After": in_90_seconds}))
    result = send(webhook_receiver.url(), now=now)
    assert result.retryable and 89 <= result.retry_after <= 90


@pytest.mark.parametrize("value", ["soon", "²", "-5", "1.5", ""])
def test_a_retry_after_that_is_not_seconds_or_a_date_is_ignored(value):
    assert webhooks.parse_retry_after(value, now=clock.now()) is None


def test_a_retry_after_date_in_the_past_means_now():
    now = clock.now()
    assert webhooks.parse_retry_after(format_datetime(now - timedelta(minutes=5), usegmt=True), now=now) == 0


def test_503_retry_after_is_capped_at_an_hour(webhook_receiver):
    webhook_receiver.reply(Reply(503, headers={"Retry-After": "86400"}))
    assert send(webhook_receiver.url()).retry_after == 3600


def test_a_slow_receiver_hits_the_timeout(webhook_receiver, settings):
    settings.WEBHOOK_TIMEOUT_SECONDS = 0.5
    webhook_receiver.reply(Reply(200, delay=10))
    started = time.monotonic()
    result = send(webhook_receiver.url())
    elapsed = time.monotonic() - started
    assert (result.status, result.retryable) == (None, True)
    assert result.error == "timed out after 0.5 s"
    assert 0.4 < elapsed < 3 and 400 <= result.latency_ms < 3000


def test_a_receiver_trickling_its_answer_hits_the_total_timeout(webhook_receiver):
    # Each piece arrives well within the timeout; the whole answer would take 12 s.
    webhook_receiver.reply(Reply(200, body=b"x" * 1000, drip=0.2))
    started = time.monotonic()
    result = send(webhook_receiver.url(), timeout=1)
    assert (result.status, result.retryable, result.error) == (None, True, "timed out after 1 s")
    assert time.monotonic() - started < 3


def test_a_refused_connection_is_retryable(settings):
    with socket.socket() as sock:  # a port that was free a moment ago: nothing listens on it
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    settings.WEBHOOK_ALLOWED_HOSTS = [f"127.0.0.1:{port}"]
    result = send(f"http://127.0.0.1:{port}/hook")
    assert (result.status, result.retryable) == (None, True)
    assert "connection refused" in result.error


def test_latency_is_recorded(webhook_receiver):
    webhook_receiver.reply(Reply(200, delay=0.3))
    result = send(webhook_receiver.url())
    assert result.ok and 300 <= result.latency_ms < 5000


def test_only_the_first_64_kb_of_a_large_answer_is_kept(webhook_receiver):
    webhook_receiver.reply(Reply(200, body=b"a" * 200_000))
    result = send(webhook_receiver.url())
    assert result.ok and result.body == "a" * 65536


def test_an_answer_over_1_mb_is_not_read_to_its_end(webhook_receiver):
    webhook_receiver.reply(Reply(200, body=b"b" * 3_000_000))
    result = send(webhook_receiver.url())
    assert result.ok and len(result.body) == 65536


def test_an_unknown_method_is_refused():
    result = send("https://hooks.example.test/", method="TRACE")
    assert (result.status, result.retryable) == (None, False) and result.error.startswith("method: ")


# -- retry policy ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("attempt", "ceiling"), [(1, 10), (2, 20), (3, 40), (6, 320), (9, 2560), (10, 3600), (50, 3600)]
)
def test_retry_delay_grows_exponentially_within_its_ceiling(attempt, ceiling):
    delays = [retry_delay(attempt, None).total_seconds() for _ in range(200)]
    assert all(0 <= d <= ceiling for d in delays)
    assert max(delays) > ceiling / 2  # the jitter spreads over the whole range, not a corner of it
    assert len(set(delays)) > 100


def test_retry_delay_is_never_shorter_than_retry_after():
    assert all(retry_delay(1, 300).total_seconds() == 300 for _ in range(100))  # 300 s is past 10 s
    later = [retry_delay(7, 300).total_seconds() for _ in range(200)]  # ceiling 640 s
    assert all(300 <= d <= 640 for d in later) and max(later) > 300
    assert retry_delay(1, 10 * 3600) == timedelta(hours=1)


def test_retry_delay_with_a_seeded_generator_is_reproducible():
    assert retry_delay(4, None, rng=random.Random(7)) == retry_delay(4, None, rng=random.Random(7))


def test_max_attempts_follows_the_setting(settings):
    settings.WEBHOOK_MAX_ATTEMPTS = 3
    assert webhooks.MAX_ATTEMPTS == 3


# -- https: the connection goes to the checked address, TLS verifies the name ------------------


def _certificate_authority(tmp_path, name: str) -> tuple[Path, ssl.SSLContext]:
    """A throwaway CA (its certificate written to a file) and a server context for `name` signed by it."""
    now = datetime.now(UTC)

    def certificate(subject: str, key, issuer: str, issuer_key, *, ca: bool):
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(hours=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if ca:
            builder = builder.add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
            ).add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        else:
            builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(subject)]), critical=False)
            builder = builder.add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False
            )
        return builder.sign(issuer_key, hashes.SHA256())

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = certificate("Timonier test CA", ca_key, "Timonier test CA", ca_key, ca=True)
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    leaf = certificate(name, leaf_key, "Timonier test CA", ca_key, ca=False)
    ca_file = tmp_path / "ca.pem"
    ca_file.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    chain = tmp_path / "server.pem"
    chain.write_bytes(
        leaf.public_bytes(serialization.Encoding.PEM)
        + leaf_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(chain)
    return ca_file, context


def _answering_127(host, port, *args, **kwargs):
    return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]


def test_https_connects_to_the_checked_address_and_verifies_the_hosts_certificate(tmp_path, settings, monkeypatch):
    ca_file, server_context = _certificate_authority(tmp_path, "hooks.example.test")
    monkeypatch.setenv("SSL_CERT_FILE", str(ca_file))  # the client trusts the throwaway CA alone
    settings.WEBHOOK_ALLOWED_HOSTS = ["hooks.example.test"]
    with Receiver(tls=server_context) as receiver:
        result = send(f"https://hooks.example.test:{receiver.port}/tls", resolver=_answering_127)
        assert result.ok, result.error
        [request] = receiver.wait_for(1)
        assert receiver.server_names == ["hooks.example.test"]
    assert request.headers["host"] == f"hooks.example.test:{receiver.port}"
    Webhook(SECRET).verify(request.body, request.headers)


def test_https_to_a_host_the_certificate_does_not_name_fails_without_sending(tmp_path, settings, monkeypatch):
    ca_file, server_context = _certificate_authority(tmp_path, "hooks.example.test")
    monkeypatch.setenv("SSL_CERT_FILE", str(ca_file))
    settings.WEBHOOK_ALLOWED_HOSTS = ["other.example.test"]
    with Receiver(tls=server_context) as receiver:
        result = send(f"https://other.example.test:{receiver.port}/tls", resolver=_answering_127)
        assert receiver.requests == []
    assert (result.status, result.retryable) == (None, False)
    assert result.error.startswith("TLS: ") and "other.example.test" in result.error

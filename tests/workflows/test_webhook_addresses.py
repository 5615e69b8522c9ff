"""The SSRF check of webhook URLs: which addresses a webhook may reach, and how URLs are read.

DNS is outside the system: names are answered by a fake resolver, never looked up for real.
"""

import ipaddress
import socket

import pytest

from workflows.addresses import UnresolvableHost, UnsafeUrl, is_global_address, resolve_target

ADDRESSES = [
    # Public unicast: allowed.
    ("8.8.8.8", True),
    ("1.1.1.1", True),
    ("93.184.216.34", True),
    ("100.63.255.255", True),  # just below CGNAT
    ("100.128.0.0", True),  # just above CGNAT
    ("172.15.255.255", True),  # just below 172.16/12
    ("172.32.0.0", True),  # just above it
    ("192.167.255.255", True),
    ("198.17.255.255", True),  # just below benchmarking
    ("198.20.0.0", True),  # just above it
    ("223.255.255.255", True),  # the last unicast before multicast
    ("2606:4700:4700::1111", True),
    ("2001:4860:4860::8888", True),
    ("2a00:1450:4001:80b::200e", True),
    ("::ffff:8.8.8.8", True),  # IPv4-mapped, judged as the IPv4 it reaches
    ("64:ff9b::808:808", True),  # NAT64 of 8.8.8.8
    ("2002:808:808::1", True),  # 6to4 of 8.8.8.8
    # Loopback.
    ("127.0.0.1", False),
    ("127.255.255.254", False),
    ("::1", False),
    ("::ffff:127.0.0.1", False),
    ("::ffff:7f00:1", False),
    # Unspecified and "this network".
    ("0.0.0.0", False),
    ("0.1.2.3", False),
    ("::", False),
    # Private.
    ("10.0.0.1", False),
    ("10.255.255.255", False),
    ("172.16.0.1", False),
    ("172.31.255.255", False),
    ("192.168.0.1", False),
    ("192.168.255.255", False),
    ("::ffff:10.0.0.5", False),
    ("::ffff:192.168.1.1", False),
    # Link-local, and the cloud metadata service in every form.
    ("169.254.0.1", False),
    ("169.254.169.254", False),
    ("::ffff:169.254.169.254", False),
    ("64:ff9b::a9fe:a9fe", False),  # NAT64 of 169.254.169.254
    ("fe80::1", False),
    ("fe80::1%1", False),
    ("febf:ffff::1", False),
    ("fd00:ec2::254", False),  # AWS's IPv6 metadata address (unique local)
    # Carrier-grade NAT.
    ("100.64.0.1", False),
    ("100.127.255.255", False),
    # Multicast and broadcast.
    ("224.0.0.1", False),
    ("239.255.255.250", False),
    ("255.255.255.255", False),
    ("ff02::1", False),
    ("ff05::2", False),
    # Reserved, documentation, benchmarking, IETF.
    ("240.0.0.1", False),
    ("192.0.0.8", False),
    ("192.0.2.1", False),
    ("198.51.100.7", False),
    ("203.0.113.9", False),
    ("198.18.0.1", False),
    ("198.19.255.255", False),
    ("192.88.99.1", False),
    ("2001:db8::1", False),
    ("3fff::1", False),
    ("2001:2::1", False),
    # IPv6 forms that embed or stand for a private IPv4 or a private network.
    ("fc00::1", False),  # unique local
    ("fdff:ffff::1", False),
    ("fec0::1", False),  # site-local
    ("::10.0.0.1", False),  # IPv4-compatible
    ("::8.8.8.8", False),  # IPv4-compatible is deprecated, whatever it embeds
    ("64:ff9b::a00:5", False),  # NAT64 of 10.0.0.5
    ("64:ff9b::7f00:1", False),  # NAT64 of 127.0.0.1
    ("64:ff9b:1::a00:5", False),  # local-use NAT64
    ("2002:a00:5::1", False),  # 6to4 of 10.0.0.5
    ("2002:7f00:1::1", False),  # 6to4 of 127.0.0.1
    ("2002:a9fe:a9fe::1", False),  # 6to4 of 169.254.169.254
    ("2001:0:4136:e378:8000:63bf:3fff:fdd2", False),  # Teredo
    ("100::1", False),  # discard-only
    ("::ffff:0:a00:5", False),  # IPv4-translated (SIIT)
    ("4000::1", False),  # outside global unicast
]


@pytest.mark.parametrize(("address", "allowed"), ADDRESSES)
def test_only_global_addresses_may_receive_webhooks(address, allowed):
    assert is_global_address(ipaddress.ip_address(address)) is allowed


def resolver_answering(*addresses: str, calls: list | None = None):
    """A getaddrinfo stand-in: every name resolves to `addresses`, and each call is recorded."""

    def resolve(host, port, *args, **kwargs):
        if calls is not None:
            calls.append((host, port))
        answers = []
        for address in addresses:
            if ":" in address:
                answers.append((socket.AF_INET6, socket.SOCK_STREAM, 6, "", (address, port, 0, 0)))
            else:
                answers.append((socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port)))
        return answers

    return resolve


def refuses(url: str, resolver=None) -> str:
    with pytest.raises(UnsafeUrl) as caught:
        resolve_target(url, resolver=resolver or resolver_answering("93.184.216.34"))
    message = str(caught.value)
    assert message.startswith("url: ")
    return message


def test_a_public_url_resolves_to_a_target_with_its_path_and_query():
    calls = []
    target = resolve_target(
        "https://Hooks.Example.com/in/orders?tag=a b&x=1#frag".replace(" ", "%20"),
        resolver=resolver_answering("93.184.216.34", calls=calls),
    )
    assert (target.scheme, target.host, target.port) == ("https", "hooks.example.com", 443)
    assert target.address == "93.184.216.34"
    assert target.path == "/in/orders?tag=a%20b&x=1"
    assert target.host_header == "hooks.example.com"
    assert calls == [("hooks.example.com", 443)]


def test_an_empty_path_becomes_slash_and_non_ascii_is_escaped():
    assert resolve_target("http://hooks.example.com", resolver=resolver_answering("8.8.8.8")).path == "/"
    target = resolve_target("http://hooks.example.com/café?q=é", resolver=resolver_answering("8.8.8.8"))
    assert target.path == "/caf%C3%A9?q=%C3%A9"


def test_a_name_resolving_to_a_private_address_is_refused_naming_it():
    message = refuses("https://internal.example.com/hook", resolver_answering("10.0.0.5"))
    assert message == "url: internal.example.com resolves to 10.0.0.5, a private address"


def test_one_private_answer_among_public_ones_refuses_the_url():
    message = refuses("https://mixed.example.com/", resolver_answering("93.184.216.34", "169.254.169.254"))
    assert "169.254.169.254" in message and "link-local" in message


def test_a_name_resolving_to_an_ipv4_mapped_loopback_is_refused():
    message = refuses("https://sneaky.example.com/", resolver_answering("::ffff:127.0.0.1"))
    assert "loopback" in message


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/",
        "http://10.0.0.5/",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]/",
        "http://[::ffff:169.254.169.254]/",
        "http://[fd00:ec2::254]/",
        "http://0.0.0.0/",
    ],
)
def test_ip_literals_are_checked_without_resolving(url):
    calls = []
    refuses(url, resolver_answering("8.8.8.8", calls=calls))
    assert calls == []


def test_a_public_ip_literal_is_allowed():
    target = resolve_target("http://[2606:4700:4700::1111]/x", resolver=resolver_answering())
    assert target.address == "2606:4700:4700::1111"
    assert target.host_header == "[2606:4700:4700::1111]"


def test_other_spellings_of_loopback_are_caught_by_what_they_resolve_to():
    # "2130706433" and "0x7f.1" are 127.0.0.1 to getaddrinfo; whatever spelling, the answer is checked.
    refuses("http://2130706433/", resolver_answering("127.0.0.1"))
    refuses("http://0x7f.1/", resolver_answering("127.0.0.1"))


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("ftp://hooks.example.com/", "http:// or https://"),
        ("file:///etc/passwd", "http:// or https://"),
        ("gopher://hooks.example.com:70/", "http:// or https://"),
        ("hooks.example.com/hook", "http:// or https://"),
        ("", "required"),
        ("https://user:pass@hooks.example.com/", "user name or password"),
        ("https://user@hooks.example.com/", "user name or password"),
        ("https:///nohost", "no host"),
        ("https://hooks.example.com:8443/", "port 8443 is not allowed"),
        ("http://hooks.example.com:22/", "port 22 is not allowed"),
        ("http://hooks.example.com:6379/", "port 6379 is not allowed"),
        ("http://hooks.example.com:99999/", "port"),
        ("http://hooks.example.com/a b", "spaces or control characters"),
        ("http://hooks.example.com/a\r\nHost: evil", "spaces or control characters"),
        ("https://" + "a" * 2000 + ".com/", "longer than"),
    ],
)
def test_malformed_or_forbidden_urls_are_refused(url, problem):
    assert problem in refuses(url)


def test_ports_80_and_443_are_allowed_on_either_scheme():
    resolver = resolver_answering("8.8.8.8")
    assert resolve_target("http://hooks.example.com:80/", resolver=resolver).port == 80
    assert resolve_target("https://hooks.example.com:443/", resolver=resolver).port == 443
    assert resolve_target("http://hooks.example.com:443/", resolver=resolver).host_header == "hooks.example.com:443"


def test_a_name_that_does_not_resolve_is_refused_as_worth_retrying():
    def failing(*args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    with pytest.raises(UnresolvableHost, match="url: nowhere.example.com cannot be resolved"):
        resolve_target("https://nowhere.example.com/", resolver=failing)
    with pytest.raises(UnresolvableHost):
        resolve_target("https://empty.example.com/", resolver=resolver_answering())


def test_an_allowed_host_may_be_private_and_on_any_port(settings):
    settings.WEBHOOK_ALLOWED_HOSTS = ["hooks.internal"]
    target = resolve_target("http://hooks.internal:8080/in", resolver=resolver_answering("10.0.0.7"))
    assert (target.address, target.port, target.host_header) == ("10.0.0.7", 8080, "hooks.internal:8080")


def test_an_allowed_host_and_port_allows_that_port_only(settings):
    settings.WEBHOOK_ALLOWED_HOSTS = ["127.0.0.1:8080"]
    assert resolve_target("http://127.0.0.1:8080/", resolver=resolver_answering()).address == "127.0.0.1"
    assert "loopback" in refuses("http://127.0.0.1:80/")
    assert "port 9090" in refuses("http://127.0.0.1:9090/")


def test_an_allowed_ipv6_literal_may_be_written_with_brackets(settings):
    settings.WEBHOOK_ALLOWED_HOSTS = ["[::1]:8080"]
    assert resolve_target("http://[::1]:8080/", resolver=resolver_answering()).address == "::1"


def test_allowing_one_host_does_not_allow_others(settings):
    settings.WEBHOOK_ALLOWED_HOSTS = ["hooks.internal"]
    assert "private" in refuses("http://other.internal/", resolver_answering("10.0.0.8"))
    assert "private" in refuses("http://hooks.internal.evil.example/", resolver_answering("10.0.0.8"))


def test_the_first_answer_is_the_target_and_resolution_happens_once():
    calls = []
    target = resolve_target(
        "https://hooks.example.com/", resolver=resolver_answering("93.184.216.34", "2606:4700::1", calls=calls)
    )
    assert target.address == "93.184.216.34"
    assert len(calls) == 1

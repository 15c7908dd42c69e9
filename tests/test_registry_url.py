"""Registry nodes as Dubbo Java, dubbo-go and apache-dubbo write and read them
(PROTOCOL.md §8, §11), without a registry."""

from __future__ import annotations

from urllib.parse import quote

import pytest

from dubbo.configs import ReferenceConfig
from dubbo.registry.url import RegistryURL, consumer_url, java_encode, parse_node, provider_url

# A real provider node written by Dubbo 3.3.0-beta.1 (PROTOCOL.md §8).
JAVA_NODE = (
    "tri%3A%2F%2F10.224.1.29%3A50052%2Forg.apache.dubbo.springboot.demo.DemoService%3F"
    "application%3Ddubbo-springboot-demo-provider%26deprecated%3Dfalse%26dubbo%3D2.0.2%26"
    "dynamic%3Dtrue%26generic%3Dfalse%26interface%3Dorg.apache.dubbo.springboot.demo."
    "DemoService%26methods%3DsayHello%26prefer.serialization%3Dfastjson2%2Chessian2%26"
    "release%3D3.3.0-beta.1%26service-name-mapping%3Dtrue%26side%3Dprovider%26"
    "timestamp%3D1706775452118")
JAVA_SERVICE = "org.apache.dubbo.springboot.demo.DemoService"


def test_java_encoding_is_urlencoder_form_encoding():
    assert java_encode("a b~c*d,e/f:g") == "a+b%7Ec*d%2Ce%2Ff%3Ag"


def test_a_java_node_parses():
    url = parse_node(JAVA_NODE)
    assert url is not None
    assert (url.protocol, url.host, url.port) == ("tri", "10.224.1.29", 50052)
    assert url.service == JAVA_SERVICE
    assert url.params["methods"] == "sayHello"
    assert url.params["prefer.serialization"] == "fastjson2,hessian2"
    assert url.serves(JAVA_SERVICE)
    assert url.node_name() == JAVA_NODE  # written back byte for byte


def test_our_provider_node_is_what_java_and_go_consumers_read():
    url = provider_url("tri", "10.0.0.5", 50051, "org.example.Greeter",
                       methods=["sayHello", "biStream"], application="app", version="1.0.0",
                       group="g1", weight=50, release="0.1.0")
    text = url.to_string()
    assert text.startswith("tri://10.0.0.5:50051/org.example.Greeter?")
    keys = [pair.split("=")[0] for pair in text.split("?", 1)[1].split("&")]
    assert keys == sorted(keys)
    for required in ("interface", "side", "methods", "application", "version", "group",
                     "timestamp", "pid", "release", "dynamic"):
        assert required in keys
    assert "methods=biStream,sayHello" in text  # raw value, encoded once with the rest
    assert "%2C" in url.node_name() and "%252C" not in url.node_name()
    assert parse_node(url.node_name()) == url


def test_an_apache_dubbo_node_parses():
    # apache-dubbo 3.0.0b1: quote(url, safe=""), no path, service= instead of interface=.
    name = quote("tri://192.168.1.5:50051?service=org.apache.dubbo.samples.proto.Greeter",
                 safe="")
    url = parse_node(name)
    assert url is not None and (url.host, url.port) == ("192.168.1.5", 50051)
    assert url.service == "org.apache.dubbo.samples.proto.Greeter"
    assert url.serves("org.apache.dubbo.samples.proto.Greeter")


def test_a_plus_is_a_space_when_reading():
    url = parse_node("tri%3A%2F%2Fh%3A1%2FS%3Fapplication%3Dmy+app")
    assert url is not None and url.params["application"] == "my app"


@pytest.mark.parametrize("name", ["", "garbage", "%%%", "tri%3A%2F%2F", "tri://h:notaport/S"])
def test_what_is_not_a_url_is_skipped(name):
    assert parse_node(name) is None


@pytest.mark.parametrize(("offered", "wanted", "match"), [
    ({}, {}, True),
    ({"version": "1.0.0"}, {}, False),  # Java: a versioned provider is invisible to none
    ({}, {"version": "1.0.0"}, False),
    ({"version": "1.0.0"}, {"version": "1.0.0"}, True),
    ({"group": "a"}, {"group": "b"}, False),
    ({"group": "a"}, {"group": "*"}, True),
    ({"enabled": "false"}, {}, False),
    ({"category": "consumers"}, {}, False),
])
def test_consumers_match_group_and_version_exactly(offered, wanted, match):
    url = RegistryURL("tri", "h", 1, "S", {"interface": "S", **offered})
    assert url.serves("S", "tri", wanted.get("group"), wanted.get("version")) is match


def test_another_protocol_or_service_does_not_match():
    url = RegistryURL("dubbo", "h", 1, "S", {"interface": "S"})
    assert not url.serves("S")
    assert not RegistryURL("tri", "h", 1, "S", {"interface": "S"}).serves("Other")


def test_a_consumer_node_has_no_port():
    url = consumer_url("10.0.0.7", "S", application="app")
    assert url.to_string().startswith("consumer://10.0.0.7/S?")
    assert "category=consumers" in url.to_string()


def test_reference_urls_take_a_static_list_and_refuse_unknown_parameters():
    ref = ReferenceConfig.from_url("tri://h1:1,h2:2,[::1]:3/S?loadbalance=roundrobin&retries=4")
    assert ref.addresses == [("h1", 1), ("h2", 2), ("::1", 3)]
    assert (ref.service, ref.load_balance, ref.retries) == ("S", "roundrobin", 4)
    with pytest.raises(ValueError, match="unsupported parameter.*colour"):
        ReferenceConfig.from_url("tri://h1:1/S?colour=blue")


def test_registry_urls_refuse_unknown_parameters():
    from dubbo.configs import RegistryConfig

    config = RegistryConfig.from_url(
        "zookeeper://127.0.0.1:2181?group=root&loadbalance=p2c&version=2.0&session=30000")
    assert (config.group, config.load_balance, config.version) == ("root", "p2c", "2.0")
    with pytest.raises(ValueError, match="unsupported parameter.*shiny"):
        RegistryConfig.from_url("zookeeper://127.0.0.1:2181?shiny=yes")
